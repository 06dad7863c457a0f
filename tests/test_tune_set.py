"""bench/make_tune_set.py on a synthetic dev folder (tones as speakers, seeded)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from stream_spk.rttm import read_rttm, write_rttm

SR = 16000


def _module():
    path = Path(__file__).resolve().parents[1] / "bench" / "make_tune_set.py"
    spec = importlib.util.spec_from_file_location("make_tune_set", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass looks its module up there
    spec.loader.exec_module(mod)
    return mod


def _dev(folder: Path, n_files: int = 4, speakers_per_file: int = 2) -> None:
    """dev_libriNN meetings: each speaker a tone, three 2 s turns each, one pair overlapping."""
    rng = np.random.default_rng(0)
    for f in range(n_files):
        audio = np.zeros(16 * SR, np.float32)
        turns = []
        t = 0.5
        for k in range(3 * speakers_per_file):
            spk = f * speakers_per_file + k % speakers_per_file
            s = int(t * SR)
            audio[s : s + 2 * SR] += 0.3 * np.sin(2 * np.pi * (200 + 50 * spk) * np.arange(2 * SR) / SR)
            turns.append((t, t + 2.0, f"spk{spk}"))
            t += 2.5 if k != 2 else 1.5  # turn 3 overlaps turn 4 by 0.5 s
        audio += 0.001 * rng.standard_normal(audio.size).astype(np.float32)
        sf.write(folder / f"dev_libri{f:02d}.wav", audio, SR)
        write_rttm(folder / f"dev_libri{f:02d}.rttm", f"dev_libri{f:02d}", turns)
    sf.write(folder / "ami_x00.wav", np.zeros(SR, np.float32), SR)  # not a simulated meeting: ignored


def test_pieces_are_the_turns_that_overlap_no_other(tmp_path):
    mod = _module()
    _dev(tmp_path)
    pieces = mod.load_pieces(tmp_path)
    assert len(pieces) == 8  # the AMI file is not used
    # of each file's six turns, the two that overlap each other are left out
    assert sum(len(v) for v in pieces.values()) == 4 * 4
    assert all(p.audio.size == 2 * SR for v in pieces.values() for p in v)


def test_meetings_are_seeded_and_their_reference_matches_the_audio(tmp_path):
    mod = _module()
    dev, out = tmp_path / "dev", tmp_path / "out"
    dev.mkdir()
    _dev(dev)
    assert mod.main(["--dev", str(dev), "--out", str(out), "--meetings", "2", "--length", "20", "--seed", "3"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{k}{i:02d}.{ext}" for k in ("simfast", "simroom") for i in range(2) for ext in ("rttm", "wav")]
    for wav in sorted(out.glob("*.wav")):
        audio, sr = sf.read(wav, dtype="float32")
        turns = read_rttm(wav.with_suffix(".rttm"))[wav.stem]
        assert sr == SR and turns and max(e for _, e, _ in turns) <= audio.size / SR
        speech = np.zeros(audio.size, bool)
        for s, e, _ in turns:
            speech[int(s * SR) : int(e * SR)] = True
        # the reference marks where the voices are: far more energy there than elsewhere
        # (reverb tails and noise only outside)
        assert np.mean(audio[speech] ** 2) > 3 * np.mean(audio[~speech] ** 2)
        by_speaker: dict[str, list] = {}
        for s, e, spk in turns:
            by_speaker.setdefault(spk, []).append((s, e))
        for spans in by_speaker.values():  # one voice never overlaps itself
            spans.sort()
            assert all(b[0] >= a[1] for a, b in zip(spans, spans[1:]))
    again = tmp_path / "again"
    mod.main(["--dev", str(dev), "--out", str(again), "--meetings", "2", "--length", "20", "--seed", "3"])
    for wav in out.glob("*.wav"):
        assert np.array_equal(sf.read(wav)[0], sf.read(again / wav.name)[0])


def test_too_few_speakers_is_one_line_error(tmp_path, capsys):
    mod = _module()
    _dev(tmp_path, n_files=1)
    assert mod.main(["--dev", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "only 2 speakers" in err
