"""``stream-spk embed WAV... --out OUT.npy``: one L2-normalised embedding per file."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stream_spk.errors import AudioError, StreamSpkError

from .common import add_model_args, make_embedder


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "embed", help="embed whole audio files into 192-d speaker vectors",
        description="Embed each file as one window (any format soundfile reads, any sample rate "
                    "and channel count) and write a float32 array [N, 192], L2-normalised, "
                    "in argument order.")
    parser.add_argument("files", nargs="+", metavar="AUDIO", help="audio files")
    parser.add_argument("--out", required=True, metavar="OUT.npy", help="output .npy file")
    add_model_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stream_spk.audio import read_audio

    out = Path(args.out)
    if not out.parent.is_dir():
        raise StreamSpkError(f"{out}: output folder {out.parent} does not exist")
    waves = [read_audio(f) for f in args.files]  # bad files fail before the model loads
    embedder = make_embedder(args)
    for path, wav in zip(args.files, waves):
        if wav.size < embedder.min_samples:
            raise AudioError(f"{path}: too short ({wav.size / 16000:.3f} s; "
                             f"at least {embedder.min_samples / 16000:.2f} s needed)")
    emb = embedder.embed(waves)
    np.save(out, emb.astype(np.float32))
    print(f"wrote {out}: {emb.shape[0]} x {emb.shape[1]} embeddings")
    return 0
