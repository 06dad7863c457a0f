"""Data types that flow through the streaming pipeline: audio chunks in, typed events out.

Times are seconds of *stream time* (sample count / 16000 since the stream started), never wall
clock, so a replay at any speed produces the same events as the live run it imitates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

import numpy as np

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class AudioChunk:
    """16 kHz mono float32 samples starting at stream time ``t0``.

    ``overruns`` counts input overflows the source saw since the previous chunk (audio lost).
    """

    samples: np.ndarray
    t0: float
    overruns: int = 0

    @property
    def duration(self) -> float:
        return self.samples.size / SAMPLE_RATE

    @property
    def t1(self) -> float:
        return self.t0 + self.duration


@dataclass(frozen=True)
class SpeechStart:
    """Voice activity began at ``time``."""

    time: float
    kind: Literal["speech_start"] = "speech_start"


@dataclass(frozen=True)
class SpeechEnd:
    """Voice activity ended at ``time``."""

    time: float
    kind: Literal["speech_end"] = "speech_end"


@dataclass(frozen=True)
class SpeakerTurn:
    """A stretch of speech [start, end) attributed to one speaker.

    ``status="final"``: this label will not change (a later :class:`Relabel` may rename the
    speaker for display, but the emitted decision stands). Final turns with the same
    ``turn_id`` are the same turn growing: consumers replace the earlier one.
    ``status="provisional"``: the newest, not yet final audio; each provisional event replaces
    the previous provisional one entirely.
    ``label`` is the speaker's current display label: an enrolled name, or ``speaker N``;
    ``name`` is set when the speaker is an enrolled (known) speaker.
    ``emitted_at`` is the stream time at which this version was decided: the stretch it added
    (since the previous version of the turn) was labelled at most the declared latency after it
    was heard. Provisional turns have ``turn_id == -1``.
    """

    turn_id: int
    start: float
    end: float
    label: str
    score: float
    status: Literal["provisional", "final"]
    emitted_at: float
    name: str | None = None
    kind: Literal["turn"] = "turn"


@dataclass(frozen=True)
class Relabel:
    """Speaker ``old`` is now known as ``new`` (clusters merged, or a speaker was named)."""

    old: str
    new: str
    time: float
    reason: Literal["merge", "rename", "recognised"] = "merge"
    kind: Literal["relabel"] = "relabel"


@dataclass(frozen=True)
class Stats:
    """Periodic health figures of the stream."""

    time: float
    real_time_factor: float  # processing seconds per audio second (< 1 keeps up)
    latency_median: float  # stream seconds from a sample to its final label
    latency_p95: float
    overruns: int  # input overflows so far (audio lost by the source)
    speakers: int
    kind: Literal["stats"] = "stats"
    extra: dict = field(default_factory=dict, compare=False)


Event = Union[SpeechStart, SpeechEnd, SpeakerTurn, Relabel, Stats]
