"""The offline second pass (``diarize --refine``) on seeded synthetic streams."""

from __future__ import annotations

import numpy as np
import pytest

from stream_spk.refine import RefineConfig, refine_turns

DIM = 32


def _voices(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, DIM))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _windows(truth: list[tuple[float, float, int]], voices: np.ndarray, noise: float = 0.35, seed: int = 1):
    """1.5 s windows every 0.5 s inside each true turn, embedded as that turn's voice plus noise."""
    rng = np.random.default_rng(seed)
    out = []
    for a, b, v in truth:
        end = a + 0.5
        while end <= b + 1e-9:
            e = voices[v] + noise * rng.standard_normal(DIM) / np.sqrt(DIM)
            out.append((max(a, end - 1.5), end, (e / np.linalg.norm(e)).astype(np.float32)))
            end += 0.5
    return out


def _label_at(turns, t: float) -> str | None:
    for a, b, label in turns:
        if a <= t < b:
            return label
    return None


def _agreement(turns, truth: list[tuple[float, float, str]]) -> float:
    """Share of the true speech (10 ms grid) the turns label as the truth does."""
    hits = total = 0
    for a, b, label in truth:
        for t in np.arange(a, b, 0.01):
            total += 1
            hits += _label_at(turns, t + 0.005) == label
    return hits / total


# A: voice 0, B: voice 1 alternating in 6 s turns with 0.5 s pauses
TRUTH = [(0.0, 6.0, 0), (6.5, 12.5, 1), (13.0, 19.0, 0), (19.5, 25.5, 1), (26.0, 32.0, 0), (32.5, 38.5, 1)]


def test_early_mistakes_of_the_stream_are_corrected():
    voices = _voices(2)
    windows = _windows(TRUTH, voices)
    # the stream did not yet know B when it first spoke, and labelled its first turn as A
    streamed = [(a, b, "speaker 1" if (v == 0 or k == 1) else "speaker 2") for k, (a, b, v) in enumerate(TRUTH)]
    truth = [(a, b, f"speaker {v + 1}") for a, b, v in TRUTH]
    assert _agreement(streamed, truth) < 0.85
    refined = refine_turns(streamed, windows)
    assert _agreement(refined, truth) > 0.97
    assert {label for *_, label in refined} == {"speaker 1", "speaker 2"}


def test_an_over_split_speaker_is_merged_under_its_main_label():
    voices = _voices(2, seed=3)
    windows = _windows(TRUTH, voices, seed=4)
    # the stream split A in two: its last turn became "speaker 3"
    streamed = [(a, b, "speaker 3" if k == 4 else f"speaker {v + 1}") for k, (a, b, v) in enumerate(TRUTH)]
    refined = refine_turns(streamed, windows)
    assert {label for *_, label in refined} == {"speaker 1", "speaker 2"}
    assert _agreement(refined, [(a, b, f"speaker {v + 1}") for a, b, v in TRUTH]) > 0.97


def test_enrolled_names_carry_over_and_a_voice_the_stream_missed_gets_a_new_label():
    voices = _voices(3, seed=5)
    truth3 = [(0.0, 8.0, 0), (8.5, 16.5, 1), (17.0, 25.0, 2), (25.5, 33.5, 1), (34.0, 42.0, 2)]
    windows = _windows(truth3, voices, seed=6)
    # voice 0 was recognised as the enrolled "Anna"; voices 1 and 2 were lumped into "speaker 4"
    streamed = [(a, b, "Anna" if v == 0 else "speaker 4") for a, b, v in truth3]
    refined = refine_turns(streamed, windows)
    labels = {label for *_, label in refined}
    assert labels == {"Anna", "speaker 4", "speaker 5"}
    # voices 1 and 2 end up apart, each under one label
    names_1 = {_label_at(refined, t) for a, b, v in truth3 if v == 1 for t in np.arange(a + 0.1, b, 0.5)}
    names_2 = {_label_at(refined, t) for a, b, v in truth3 if v == 2 for t in np.arange(a + 0.1, b, 0.5)}
    assert len(names_1) == 1 and len(names_2) == 1 and names_1 != names_2
    assert _label_at(refined, 4.0) == "Anna"


def test_a_brief_stray_cluster_is_absorbed():
    voices = _voices(3, seed=7)
    truth = [(0.0, 10.0, 0), (10.5, 20.5, 1), (21.0, 21.5, 2)]  # 0.5 s of a third voice: too little
    windows = _windows(truth, voices, seed=8)
    streamed = [(a, b, f"speaker {v + 1}") for a, b, v in truth]
    refined = refine_turns(streamed, windows)
    assert {label for *_, label in refined} == {"speaker 1", "speaker 2"}
    refined_keep = refine_turns(streamed, windows, RefineConfig(min_speaker=0.0))
    assert "speaker 3" in {label for *_, label in refined_keep}


def test_turns_keep_their_extent():
    voices = _voices(2, seed=9)
    windows = _windows(TRUTH, voices, seed=10)
    streamed = [(a, b, f"speaker {v + 1}") for a, b, v in TRUTH]
    refined = refine_turns(streamed, windows)
    covered = sum(b - a for a, b, _ in refined)
    assert covered == pytest.approx(sum(b - a for a, b, _ in streamed))
    assert refined == sorted(refined)


def test_pieces_no_window_covers_take_the_nearest_window():
    voices = _voices(2, seed=11)
    windows = _windows(TRUTH, voices, seed=12)
    # a 0.3 s turn after the last window, in a pause: labelled, not dropped
    streamed = [(a, b, f"speaker {v + 1}") for a, b, v in TRUTH] + [(38.6, 38.9, "speaker 2")]
    refined = refine_turns(streamed, windows)
    assert _label_at(refined, 38.7) is not None


def test_degenerate_inputs():
    voices = _voices(1)
    assert refine_turns([], []) == []
    streamed = [(0.0, 2.0, "speaker 1")]
    assert refine_turns(streamed, []) == streamed
    windows = _windows([(0.0, 2.0, 0)], voices)
    assert refine_turns(streamed, windows) == streamed
    with pytest.raises(ValueError, match="threshold"):
        refine_turns(streamed, windows, RefineConfig(threshold=0.0))
    with pytest.raises(ValueError, match="segment"):
        refine_turns(streamed, windows, RefineConfig(piece=1.0, segment=0.5))
