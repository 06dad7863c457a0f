"""`diarize` throughput and DER of this tree against an earlier release, in the same run.

    python bench/release_compare.py [FOLDER] [--release REV] [--precisions auto fp32] [--rounds 2]

Checks REV (default: ``decbd2d``, the main branch when the speed issue was filed) out into a
temporary git worktree and runs ``bench/dev_der.py`` of each tree on FOLDER (default: the dev
set), alternating release / this tree for every precision and round, so both see the same
machine load. Each run is a separate process with the same interpreter and the same model cache
(model loading is not timed: dev_der times ``diarize_file`` only). Each tree runs its own
defaults (the release: VAD pipeline with torch; this tree: whatever its defaults are now).
Prints each run's throughput and DER (collar 0.25, session record where the tree writes one),
then the median ratio per precision.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "dev"
THROUGHPUT = re.compile(r"throughput: .* = ([0-9.]+)x real time")
TOTAL = re.compile(r"TOTAL\s+([0-9.]+)%")


def run_tree(tree: Path, folder: str, precision: str) -> tuple[float, float]:
    """(throughput x real time, first TOTAL DER %) of ``tree``'s dev_der on ``folder``."""
    cmd = [sys.executable, str(tree / "bench" / "dev_der.py"), folder, "--precision", precision]
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tree)})
    if proc.returncode:
        raise SystemExit(f"{tree}: dev_der failed:\n{proc.stderr[-2000:]}")
    speed = THROUGHPUT.search(proc.stdout)
    der = TOTAL.search(proc.stdout)
    if speed is None or der is None:
        raise SystemExit(f"{tree}: no throughput/DER line in dev_der's output:\n{proc.stdout[-2000:]}")
    return float(speed.group(1)), float(der.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default=str(DEFAULT))
    parser.add_argument("--release", default="decbd2d", help="git revision to compare against")
    parser.add_argument("--precisions", nargs="+", default=["auto", "fp32"])
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs per tree and precision")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        release = Path(tmp) / "release"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(release), args.release],
                       check=True, capture_output=True)
        # the installed (editable) package maps stream_spk.models and .ui to this tree's models/
        # and ui/; links inside the release's stream_spk/ make its own copies win on PYTHONPATH
        for sub in ("models", "ui"):
            if not (release / "stream_spk" / sub).exists():
                (release / "stream_spk" / sub).symlink_to(release / sub)
        try:
            for precision in args.precisions:
                ratios = []
                for r in range(args.rounds):
                    old = run_tree(release, args.folder, precision)
                    new = run_tree(ROOT, args.folder, precision)
                    ratios.append(new[0] / old[0])
                    print(f"--precision {precision} round {r + 1}: release {args.release} {old[0]:.1f}x real time "
                          f"(DER {old[1]:.1f}%), this tree {new[0]:.1f}x (DER {new[1]:.1f}%): "
                          f"{ratios[-1]:.2f}x faster", flush=True)
                print(f"--precision {precision}: median {statistics.median(ratios):.2f}x the release's throughput")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(release)],
                           capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
