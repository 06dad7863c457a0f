"""Simulated meetings for tuning, in conditions the dev set does not have.

    python bench/make_tune_set.py [--dev DIR] [--out build/tune] [--meetings 8] [--length 75] [--seed 7]
                                  [--tag NAME]

The dev set's simulated meetings are clean close-talk speech with ~10% overlap. This builds
two more subsets from the *speech* of dev's LibriSpeech and VCTK meetings, re-mixed so that
thresholds tuned on them have to hold under other conditions (the hidden meetings are real and
simulated, reverberant and noisy):

* ``simroom``: 3-6 speakers drawn from different dev meetings, each through its own synthetic
  room response (RT60 0.2-0.8 s) and microphone colouring (gain +-6 dB, optional band limit),
  ~20% of turns overlapping the previous one, pink/brown noise at 10-25 dB SNR.
* ``simfast``: 2-3 speakers in quick back-and-forth turns of 0.4-2.5 s (a turn every few
  seconds is where streaming labels lose the first second of a turn), mild reverb, 15-30 dB SNR.

Pieces are the dev reference turns that overlap no other turn, so every reference line is one
speaker's speech region (the dev references mark speech regions, not pauses); a ``simfast``
turn is a cut of such a region. Each meeting is ``<subset>NN.wav`` (16 kHz mono PCM16) with
``<subset>NN.rttm``; files depend only on ``--seed``. Derived from LibriSpeech and VCTK (both
CC BY 4.0): keep the output out of the repository. Score it with
``python bench/tune_segmented.py --folder DIR`` or ``bench/dev_der.py DIR``.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

SR = 16000
DEFAULT_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dev"


@dataclass
class Piece:
    """One speaker's speech region cut from a dev meeting."""

    speaker: str
    audio: np.ndarray


def load_pieces(dev: Path, margin: float = 0.1) -> dict[str, list[Piece]]:
    """Non-overlapped reference turns of dev's simulated meetings, by speaker."""
    from stream_spk.rttm import read_rttm

    out: dict[str, list[Piece]] = {}
    for wav in sorted(dev.glob("*.wav")):
        if not re.match(r"dev_(libri|vctk)", wav.stem):
            continue
        audio = sf.read(wav, dtype="float32")[0]
        turns = read_rttm(wav.with_suffix(".rttm"))[wav.stem]
        for i, (s, e, spk) in enumerate(turns):
            clear = all(e2 + margin <= s or s2 >= e + margin for j, (s2, e2, _) in enumerate(turns) if j != i)
            if clear and e - s >= 0.4:
                out.setdefault(spk, []).append(Piece(spk, audio[int(s * SR) : int(e * SR)]))
    return out


def room_response(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """A synthetic impulse response: direct path, sparse early reflections, exponential tail."""
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    tail[: int(0.003 * SR)] = 0.0
    h = 0.35 * tail / (np.sqrt(np.sum(tail**2)) + 1e-9)
    h[0] = 1.0
    for _ in range(6):
        h[rng.integers(int(0.002 * SR), int(0.03 * SR))] += rng.uniform(-0.5, 0.5)
    return h / np.max(np.abs(h))


def coloured_noise(rng: np.random.Generator, n: int, slope: float) -> np.ndarray:
    """Noise with a 1/f**slope power spectrum (1 = pink, 2 = brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    noise = np.fft.irfft(spec / f ** (slope / 2), n)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def channel(rng: np.random.Generator, rt60: tuple[float, float], band: float) -> dict:
    """One speaker's microphone and room: response, gain, optional band limit."""
    out = {"h": room_response(rng, rng.uniform(*rt60)), "gain": 10 ** (rng.uniform(-6, 6) / 20), "sos": None}
    if rng.random() < band:
        lo, hi = rng.uniform(150, 400), rng.uniform(3400, 6500)
        out["sos"] = signal.butter(4, [lo, hi], btype="band", fs=SR, output="sos")
    return out


def through(ch: dict, x: np.ndarray) -> np.ndarray:
    y = signal.fftconvolve(x, ch["h"])[: x.size + int(0.2 * SR)]
    if ch["sos"] is not None:
        y = signal.sosfilt(ch["sos"], y)
    return ch["gain"] * y


def compose(rng: np.random.Generator, pieces: dict[str, list[Piece]], kind: str, length: float):
    """One meeting: (audio, reference turns)."""
    if kind == "simroom":
        n_spk, overlap, rt60, band, snr, turn_len = rng.integers(3, 7), 0.2, (0.2, 0.8), 0.5, (10, 25), None
    else:
        n_spk, overlap, rt60, band, snr, turn_len = rng.integers(2, 4), 0.15, (0.1, 0.4), 0.3, (15, 30), (0.4, 2.5)
    speakers = list(rng.choice(sorted(pieces), size=n_spk, replace=False))
    chans = {s: channel(rng, rt60, band) for s in speakers}
    mix = np.zeros(int((length + 30) * SR), np.float64)
    ref: list[tuple[float, float, str]] = []
    t, prev = rng.uniform(0.3, 1.5), None
    while t < length:
        spk = rng.choice([s for s in speakers if s != prev])
        piece = pieces[spk][rng.integers(len(pieces[spk]))].audio
        if turn_len is not None:
            n = int(rng.uniform(*turn_len) * SR)
            start = rng.integers(0, max(1, piece.size - n))
            piece = piece[start : start + n]
        if piece.size < int(0.3 * SR):
            continue
        if prev is not None and rng.random() < overlap:
            t = max(ref[-1][0] + 0.3, t - rng.uniform(0.3, 1.5))
        s = int(t * SR)
        wet = through(chans[spk], piece.astype(np.float64))
        mix[s : s + wet.size] += wet
        ref.append((s / SR, (s + piece.size) / SR, spk))
        t = ref[-1][1] + rng.uniform(0.1, 1.0)
        prev = spk
    end = int((max(e for _, e, _ in ref) + 0.5) * SR)
    mix = mix[:end]
    speech_rms = np.sqrt(np.mean(mix[mix != 0] ** 2))
    noise = coloured_noise(rng, mix.size, rng.choice([1.0, 2.0]))
    mix += noise * speech_rms / 10 ** (rng.uniform(*snr) / 20)
    mix *= 0.5 / np.max(np.abs(mix))
    return mix.astype(np.float32), ref


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev", default=str(DEFAULT_DEV), help="dev folder with dev_libri*/dev_vctk* WAV + RTTM")
    parser.add_argument("--out", default="build/tune", help="output folder (default build/tune)")
    parser.add_argument("--meetings", type=int, default=8, help="meetings per subset (default 8)")
    parser.add_argument("--length", type=float, default=75.0, help="seconds per meeting (default 75)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tag", default="", help="appended to the subset names (e.g. long: simroomlong00)")
    args = parser.parse_args(argv)
    from stream_spk.rttm import write_rttm

    pieces = load_pieces(Path(args.dev))
    if len(pieces) < 6:
        print(f"error: {args.dev}: found speech of only {len(pieces)} speakers in dev_libri*/dev_vctk*",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for k, kind in enumerate(("simroom", "simfast")):
        for i in range(args.meetings):
            rng = np.random.default_rng([args.seed, k, i])
            audio, ref = compose(rng, pieces, kind, args.length)
            uri = f"{kind}{args.tag}{i:02d}"
            sf.write(out / f"{uri}.wav", audio, SR, subtype="PCM_16")
            write_rttm(out / f"{uri}.rttm", uri, ref)
            total += audio.size / SR
    print(f"{2 * args.meetings} meetings, {total:.0f} s, {len(pieces)} source speakers -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
