"""``stream-spk embed WAV... --out OUT.npy``: one L2-normalised embedding per file."""

from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

import numpy as np

from stream_spk.errors import AudioError

from .common import add_model_args, check_compute_device, check_output_file, make_embedder

PIECE_SECONDS = 30.0
"""Files longer than this are embedded in pieces of at most this length (memory stays bounded)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "embed", help="embed whole audio files into 192-d speaker vectors",
        description="Embed each file (any format soundfile reads, any sample rate and channel "
                    "count) and write a float32 array [N, 192], L2-normalised, in argument order. "
                    f"A file up to {PIECE_SECONDS:g} s is one window; a longer one is cut into "
                    f"equal pieces of at most {PIECE_SECONDS:g} s, each embedded on its own, and "
                    "its vector is the duration-weighted mean of the pieces' normalised "
                    "embeddings, normalised (memory stays bounded on long files).")
    parser.add_argument("files", nargs="+", metavar="AUDIO", help="audio files")
    parser.add_argument("--out", required=True, metavar="OUT.npy",
                        help="output .npy file (.npy is added when the name lacks it, as numpy does)")
    add_model_args(parser)
    parser.set_defaults(func=run)


def npy_name(out: str) -> Path:
    """The file numpy's ``np.save`` would write for ``out``: ``.npy`` added when missing."""
    path = Path(out)
    return path if path.name.endswith(".npy") else path.with_name(path.name + ".npy")


def embed_long(embedder, wav: np.ndarray, piece_seconds: float = PIECE_SECONDS,
               sample_rate: int = 16000) -> np.ndarray:
    """One L2-normalised embedding of ``wav``; longer than ``piece_seconds``: the duration-weighted
    mean of the normalised embeddings of equal pieces (each embedded alone), normalised."""
    piece = max(1, round(piece_seconds * sample_rate))
    n = max(1, math.ceil(wav.size / piece))
    if n == 1:
        return np.asarray(embedder.embed([wav])[0], np.float32)
    bounds = np.linspace(0, wav.size, n + 1).round().astype(int)
    total = None
    for a, b in zip(bounds[:-1], bounds[1:]):
        e = np.asarray(embedder.embed([wav[a:b]])[0], np.float64)
        e = (b - a) * e / np.linalg.norm(e)
        total = e if total is None else total + e
    return (total / np.linalg.norm(total)).astype(np.float32)


def run(args: argparse.Namespace) -> int:
    from stream_spk.audio import probe_audio, read_audio, warn
    from stream_spk.rttm import atomic_write_bytes

    out = check_output_file(npy_name(args.out), "--out")
    check_compute_device(args.compute_device)
    for f in args.files:  # missing, non-audio and empty files fail before the model loads
        probe_audio(f)
    embedder = make_embedder(args)
    rows = []
    for path in args.files:  # one file in memory at a time
        notes: list[str] = []
        wav = read_audio(path, notes=notes)
        for note in notes:
            warn(note)
        if wav.size < embedder.min_samples:
            raise AudioError(f"{path}: too short ({wav.size / 16000:.3f} s; "
                             f"at least {embedder.min_samples / 16000:.2f} s needed)")
        rows.append(embed_long(embedder, wav))
    emb = np.stack(rows).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, emb)
    atomic_write_bytes(out, buf.getvalue())
    print(f"wrote {out}: {emb.shape[0]} x {emb.shape[1]} embeddings")
    if str(out) != args.out:
        print(f"note: numpy files end in .npy: wrote {out}, not {args.out}", file=sys.stderr)
    return 0
