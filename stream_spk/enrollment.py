"""Enrolling a known speaker: speech windows -> one embed call -> quality feedback -> profile store.

Like Picovoice Eagle, enrollment says how it went: a list of :class:`Feedback` (too little
speech, quiet or clipped audio, more than one voice, a voice very like someone already enrolled)
and whether the speaker was enrolled at all. Only speech (per ``speech_fn``) is embedded.

Thresholds, measured with the real ECAPA weights (bf16, CPU) on silero-vad speech of
``data/enroll/vctk_p22{5,6,7,8}`` (3 utterances x 4 VCTK speakers, 2 female and 2 male; 106
windows of 1.5 s / 0.75 s) by ``python bench/calibrate_enrollment.py``:

- window vs window cosine: same speaker, other utterance p1/p5/p50 = 0.35/0.41/0.56 (same
  utterance 0.36/0.43/0.59); different speakers p50/p95/p99/max = 0.08/0.23/0.30/0.41.
- utterance centroid vs utterance centroid (5-11 s each): same speaker min/p50 = 0.70/0.85;
  different speakers p50/max = 0.13/0.38. A centroid of 2 utterances vs the held-out third:
  same speaker min 0.78; vs another speaker's centroid max 0.30.
- average-linkage cosine AHC over the windows, distance threshold 0.5 to 0.8 alike: one
  speaker's utterances (16 recordings) never yield a second group, and every two-speaker
  mixture in which the minor voice holds >= 25% of the speech (52 of 72) is warned about, with
  exactly the minor voice's windows set aside; the two groups' centroids have cosine 0.05-0.28.

Hence: AHC threshold 0.7 (mid-way between a same-speaker group distance, ~1 - 0.56, and a
different-speaker one, ~1 - 0.08); a group whose centroid has cosine < 0.5 to the main group's is
another voice (different pairs <= 0.38, same >= 0.70), and "more than one voice" when such groups
hold >= 25% of the speech; "very like someone enrolled" at centroid cosine >= 0.6 (above every
different pair, 0.38, below every same-speaker pair, 0.70: enrolling one person under two names is
caught); new material for an existing name with cosine < 0.5 to it is flagged as perhaps someone
else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from stream_spk.clustering import average_linkage_groups
from stream_spk.errors import AudioError, ProfileError
from stream_spk.profiles import KnownSpeaker, ProfileStore, validate_name

SAMPLE_RATE = 16000
WINDOW_SECONDS = 1.5
STEP_SECONDS = 0.75
MIN_WINDOW_SECONDS = 0.5
TAIL_SECONDS = 0.1  # a region's end left uncovered by more than this gets an end-aligned window
MIN_SPEECH_SECONDS = 3.0  # below: refused
GOOD_SPEECH_SECONDS = 8.0  # below: enrolled, with a request for more
QUIET_DBFS = -40.0  # speech RMS below this: "too quiet"
SILENT_DBFS = -90.0  # (no speech found and) the whole recording below this: "silent"
CLIP_LEVEL = 0.999
CLIP_FRACTION = 0.001  # more than 0.1% of speech samples at |x| >= CLIP_LEVEL: "clipped"
VOICE_SPLIT_DISTANCE = 0.7  # AHC (average linkage) cosine-distance threshold between window groups
SECOND_VOICE_SHARE = 0.25  # a far group holding this share of the speech is "more than one voice"
SAME_VOICE_COSINE = 0.5  # groups (or new material vs an existing profile) below this: other voice
SIMILAR_SPEAKER_COSINE = 0.6  # centroid this close to another enrolled speaker: warn

Level = Literal["refused", "warning", "info"]
SpeechFn = Callable[[np.ndarray], "list[tuple[int, int]]"]
ProgressFn = Callable[[float, str], None]


class EmbedderLike(Protocol):
    def embed(self, wavs: Sequence[np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class Feedback:
    """One remark on an enrollment: a stable ``code`` for programs, a ``message`` for people."""

    code: str
    message: str
    level: Level = "warning"


@dataclass(frozen=True)
class EnrollmentResult:
    """What happened: ``accepted`` (material written) or refused, with the reasons."""

    name: str
    accepted: bool
    speech_seconds: float  # speech embedded and stored (refused: speech found)
    feedback: tuple[Feedback, ...]
    speaker: KnownSpeaker | None = None  # the stored profile after this enrollment
    n_windows: int = 0

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.feedback]


@dataclass(frozen=True)
class _Window:
    source: str
    start: int
    end: int

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


def default_speech_fn(samples: np.ndarray) -> list[tuple[int, int]]:
    """Speech regions from the app's VAD (imported on first use)."""
    from stream_spk.vad import speech_segments

    return speech_segments(samples)


def speech_windows(
    regions: Sequence[tuple[int, int]],
    window: float = WINDOW_SECONDS,
    step: float = STEP_SECONDS,
    min_window: float = MIN_WINDOW_SECONDS,
) -> list[tuple[int, int]]:
    """Windows [start, end) inside speech regions (sample indices at 16 kHz).

    Regions of at least ``window`` seconds give windows every ``step`` seconds (plus one aligned to
    the region's end when more than 0.1 s would stay uncovered); shorter regions of at least
    ``min_window`` seconds give one window of their own length; shorter ones none.

    Example:
        >>> speech_windows([(0, 41600), (50000, 60000), (70000, 72000)])
        [(0, 24000), (12000, 36000), (17600, 41600), (50000, 60000)]
    """
    win, hop = round(window * SAMPLE_RATE), round(step * SAMPLE_RATE)
    shortest, tail = round(min_window * SAMPLE_RATE), round(TAIL_SECONDS * SAMPLE_RATE)
    out: list[tuple[int, int]] = []
    for start, end in regions:
        length = end - start
        if length < shortest:
            continue
        if length < win:
            out.append((start, end))
            continue
        s = start
        while s + win <= end:
            out.append((s, s + win))
            s += hop
        if end - out[-1][1] > tail:
            out.append((end - win, end))
    return out


def covered_seconds(windows: Sequence[_Window]) -> float:
    """Seconds of audio covered by the union of windows (overlaps counted once)."""
    total = 0
    by_source: dict[str, list[tuple[int, int]]] = {}
    for w in windows:
        by_source.setdefault(w.source, []).append((w.start, w.end))
    for spans in by_source.values():
        spans.sort()
        cur_s, cur_e = spans[0]
        for s, e in spans[1:]:
            if s > cur_e:
                total += cur_e - cur_s
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        total += cur_e - cur_s
    return total / SAMPLE_RATE


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _level_feedback(speech: np.ndarray) -> list[Feedback]:
    """"silent", "quiet" and "clipped" remarks on the speech samples (or all audio if no speech)."""
    out = []
    if speech.size == 0:
        return out
    rms = float(np.sqrt(np.mean(np.square(speech, dtype=np.float64))))
    dbfs = 20 * np.log10(max(rms, 1e-10))
    if dbfs < SILENT_DBFS:
        out.append(Feedback("silent", "the recording is silent; is the microphone muted or the wrong "
                                      "input device chosen?"))
    elif dbfs < QUIET_DBFS:
        out.append(Feedback("quiet", f"the speech is very quiet ({dbfs:.0f} dBFS); speak closer to the "
                                     "microphone or raise its gain"))
    clipped = float(np.mean(np.abs(speech) >= CLIP_LEVEL))
    if clipped > CLIP_FRACTION:
        out.append(Feedback("clipped", f"{clipped:.1%} of the speech is clipped (too loud); lower the "
                                       "microphone gain or move back"))
    return out


def _main_voice(vectors: np.ndarray, seconds: np.ndarray) -> tuple[np.ndarray, float]:
    """Mask of the windows of the main voice, and the share of speech set aside as other voices."""
    keep = np.ones(len(vectors), bool)
    if len(vectors) < 2:
        return keep, 0.0
    labels = average_linkage_groups(vectors, VOICE_SPLIT_DISTANCE)
    weights = np.bincount(labels, weights=seconds)
    main = int(np.argmax(weights))
    main_centroid = _unit(vectors[labels == main].mean(axis=0))
    for g in range(len(weights)):
        if g != main and _unit(vectors[labels == g].mean(axis=0)) @ main_centroid < SAME_VOICE_COSINE:
            keep &= labels != g
    return keep, float(seconds[~keep].sum() / seconds.sum())


def _similarity_feedback(name: str, centroid: np.ndarray, known: Sequence[KnownSpeaker]) -> list[Feedback]:
    out = []
    for sp in known:
        cos = float(_unit(sp.centroid) @ centroid)
        if sp.name.casefold() == name.casefold():
            if cos < SAME_VOICE_COSINE:
                out.append(Feedback("different_from_existing",
                                    f"this does not sound like the {sp.name!r} already enrolled (cosine "
                                    f"{cos:.2f}); if it is someone else, delete {sp.name!r} and re-enroll"))
        elif cos >= SIMILAR_SPEAKER_COSINE:
            out.append(Feedback("similar_speaker",
                                f"sounds very like the enrolled {sp.name!r} (cosine {cos:.2f}); the two may "
                                "be confused"))
    return out


def _refuse(name: str, seconds: float, reason: Feedback, others: list[Feedback]) -> EnrollmentResult:
    return EnrollmentResult(name, False, seconds, (reason, *others))


def enroll_audio(
    name: str,
    samples_list: Sequence[tuple[str, np.ndarray]],
    embedder: EmbedderLike,
    store: ProfileStore,
    speech_fn: SpeechFn | None = None,
    progress: ProgressFn | None = None,
) -> EnrollmentResult:
    """Enroll ``name`` from recordings (source label, 16 kHz mono float32), or add to it.

    Refused (nothing written) under 3 s of speech; every other problem is a warning in the
    result's feedback. Windows of a second voice are left out. Raises :class:`ProfileError` for
    a bad name or store and :class:`AudioError` for unusable samples.
    """
    name = validate_name(name)
    speech_fn = speech_fn or default_speech_fn
    report = progress or (lambda fraction, message: None)

    windows: list[_Window] = []
    audio: dict[str, np.ndarray] = {}
    speech_parts = []
    for k, (label, samples) in enumerate(samples_list):
        report(0.4 * k / max(len(samples_list), 1), f"finding speech in {label}")
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not np.isfinite(x).all():
            raise AudioError(f"{label}: contains NaN or infinite samples")
        label = label if label not in audio else f"{label}#{k}"
        audio[label] = x
        regions = [(max(0, int(s)), min(x.size, int(e))) for s, e in speech_fn(x)]
        regions = [(s, e) for s, e in regions if e > s]
        found = [_Window(label, s, e) for s, e in speech_windows(regions)]
        windows += found
        speech_parts += [x[s:e] for s, e in regions if e - s >= MIN_WINDOW_SECONDS * SAMPLE_RATE]
    speech = np.concatenate(speech_parts) if speech_parts else np.zeros(0, np.float32)
    quality = _level_feedback(speech if speech.size else np.concatenate([*audio.values(), np.zeros(0)]))

    found_seconds = covered_seconds(windows) if windows else 0.0
    if found_seconds < MIN_SPEECH_SECONDS:
        return _refuse(name, found_seconds, Feedback(
            "too_short", f"only {found_seconds:.1f} s of speech found; at least {MIN_SPEECH_SECONDS:.0f} s "
                         f"are needed ({GOOD_SPEECH_SECONDS:.0f} s or more recommended)", "refused"), quality)

    report(0.4, f"embedding {len(windows)} windows")
    vectors = np.asarray(embedder.embed([audio[w.source][w.start:w.end] for w in windows]), np.float32)
    seconds = np.array([w.seconds for w in windows])
    keep, other_share = _main_voice(vectors, seconds)
    feedback = list(quality)
    if other_share >= SECOND_VOICE_SHARE:
        feedback.append(Feedback("multiple_voices", f"more than one voice: {other_share:.0%} of the speech "
                                                    "sounds like someone else and was left out; record "
                                                    f"{name} alone"))
    elif other_share > 0:
        feedback.append(Feedback("other_voice_dropped", f"{other_share:.0%} of the speech did not match the "
                                                        "main voice and was left out", "info"))
    kept = [w for w, k in zip(windows, keep, strict=True) if k]
    speech_seconds = covered_seconds(kept)
    if speech_seconds < MIN_SPEECH_SECONDS:
        return _refuse(name, speech_seconds, Feedback(
            "too_short", f"only {speech_seconds:.1f} s of speech of the main voice; at least "
                         f"{MIN_SPEECH_SECONDS:.0f} s are needed", "refused"), feedback)

    report(0.8, "checking against enrolled speakers")
    centroid = _unit(vectors[keep].mean(axis=0))
    feedback += _similarity_feedback(name, centroid, store.known_speakers())
    if speech_seconds < GOOD_SPEECH_SECONDS:
        feedback.insert(0, Feedback("short", f"only {speech_seconds:.1f} s of speech; enrolled, but "
                                             f"{GOOD_SPEECH_SECONDS:.0f} s or more recognise better: add "
                                             "another recording"))
    report(0.9, "saving")
    speaker = store.add_embeddings(name, vectors[keep], [w.source for w in kept], [w.seconds for w in kept],
                                   speech_seconds=speech_seconds)
    report(1.0, "done")
    return EnrollmentResult(name, True, speech_seconds, tuple(feedback), speaker, len(kept))


def save_session_speaker(
    store: ProfileStore,
    name: str,
    embeddings: np.ndarray,
    durations: Sequence[float],
    *,
    source: str = "session",
    speech_seconds: float | None = None,
) -> KnownSpeaker:
    """Save an anonymous session cluster's window embeddings [N, 192] as (material for) ``name``.

    Non-finite or all-zero rows are dropped; nothing usable left is a :class:`ProfileError`.
    """
    name = validate_name(name)
    vectors = np.asarray(embeddings, dtype=np.float32)
    if vectors.ndim != 2 or len(durations) != len(vectors):
        raise ValueError(f"embeddings must be [N, dim] with N durations; got {list(vectors.shape)} and "
                         f"{len(durations)}")
    durations = np.asarray(durations, dtype=np.float64)
    norms = np.linalg.norm(np.nan_to_num(vectors), axis=1)
    good = np.isfinite(vectors).all(axis=1) & (norms > 1e-6) & np.isfinite(durations)
    if not good.any():
        raise ProfileError(f"no usable speech to save as {name!r}")
    return store.add_embeddings(name, vectors[good], [source] * int(good.sum()), durations[good].tolist(),
                                speech_seconds=speech_seconds)
