"""The built wheel maps models/ and ui/ inside stream_spk and imports from a plain install."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_inside_the_stream_spk_namespace(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("stream_spk-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "stream_spk/models/ecapa.py" in names and "stream_spk/ui/__init__.py" in names
    tops = {n.split("/")[0] for n in names}
    assert tops <= {"stream_spk"} | {n.split("/")[0] for n in names if ".dist-info" in n}
    target = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target),
                           str(wheel)], capture_output=True, text=True)
    assert inst.returncode == 0, inst.stderr[-2000:]
    probe = ("import stream_spk, stream_spk.models.ecapa, stream_spk.ui, stream_spk.cli.main;"
             "print(stream_spk.models.ecapa.__file__)")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().startswith(str(target))
