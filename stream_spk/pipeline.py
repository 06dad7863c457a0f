"""The streaming core: audio chunks in, speaker events out. No threads, no devices, no Qt.

Every ``step`` seconds of stream time (a grid point T) the pipeline
1. has the VAD decide speech up to T (minus its declared look-ahead),
2. cuts a window of up to ``window`` seconds of the current speech region ending at T,
3. embeds all windows of a chunk in one length-masked batch and, in time order, lets the
   online clusterer assign each one,
4. finalises the labels of all decided speech up to T - (latency - step): each piece of speech
   takes the speaker whose centroid is closest to the overlap-weighted average similarity of the
   windows covering it, so a sample's final label is emitted at most ``latency`` seconds after it,
5. emits a provisional label for the newer speech.
The events depend only on the audio, never on how it was chunked or how fast it was fed.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from stream_spk.clustering import ClusterConfig, OnlineClusterer
from stream_spk.types import (
    SAMPLE_RATE,
    AudioChunk,
    Event,
    Relabel,
    SpeakerTurn,
    SpeechEnd,
    SpeechStart,
    Stats,
)
from stream_spk.vad import VadConfig, VadSegmenter
from stream_spk.windows import Window, WindowMaker


class EmbedderLike(Protocol):
    min_samples: int

    def embed(self, wavs: Sequence[np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class PipelineConfig:
    """Streaming settings; defaults chosen on the dev set (README, bench/dev_der.py)."""

    latency: float = 1.0  # a final label for every speech sample at most this long after it
    window: float = 1.5  # embedding window (s)
    step: float = 0.5  # hop between windows, and the decision period (s)
    min_window: float = 0.25  # shorter speech regions get no window of their own
    vad: VadConfig = field(default_factory=VadConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    stats_every: float = 1.0  # stream seconds between Stats events

    def validate(self) -> None:
        if not 0 < self.step <= self.latency:
            raise ValueError(f"step ({self.step} s) must be positive and at most the latency ({self.latency} s)")
        if self.vad.lookahead > self.latency - self.step + 1e-9:
            raise ValueError(f"latency {self.latency} s is too short for the VAD look-ahead "
                             f"({self.vad.lookahead:.2f} s) plus one step ({self.step} s)")
        if self.window < self.min_window:
            raise ValueError("window must be at least min_window")


@dataclass
class _Plan:
    grid: int
    spans: list[tuple[int, int, bool]]
    decided: int
    in_speech: bool
    window: Window | None


@dataclass
class SpeakerInfo:
    """A speaker of this session, for displays."""

    label: str
    name: str | None
    talk_time: float
    confirmed: bool


class SessionSpeakers:
    """Speaker queries, user merges/renames and periodic stats shared by the streaming pipelines
    (they keep ``clusterer``, ``_talk``, ``_seen``, ``latencies`` and ``_apply_relabel``)."""

    def speakers(self) -> list[SpeakerInfo]:
        """Speakers known in this session (enrolled ones included), with talk time."""
        out = []
        for c in self.clusterer.clusters:
            if c.confirmed or self._talk.get(c.label, 0) > 0:
                out.append(SpeakerInfo(c.label, c.name, self._talk.get(c.label, 0.0), c.confirmed))
        return out

    def merge_speakers(self, keep: str, drop: str) -> Relabel:
        """Merge speaker ``drop`` into ``keep`` (user request)."""
        ev = self.clusterer.merge(keep, drop, self._seen / SAMPLE_RATE)
        self._apply_relabel(ev)
        return ev

    def rename_speaker(self, label: str, new_label: str) -> Relabel:
        """Give a speaker a new display label for the rest of the session."""
        ev = self.clusterer.rename(label, new_label, self._seen / SAMPLE_RATE)
        self._apply_relabel(ev)
        return ev

    def speaker_embeddings(self, label: str) -> tuple[np.ndarray, list[float]]:
        """The window embeddings (and their durations) a session speaker was built from."""
        cluster = self.clusterer.get(label)
        if cluster is None or not cluster.members:
            raise KeyError(f"no session speaker {label!r}")
        return np.stack(cluster.members), list(cluster.durations)

    def _maybe_stats(self, force: bool = False) -> list[Event]:
        now = self._seen / SAMPLE_RATE
        if not force and now < self._next_stats:
            return []
        self._next_stats = (math.floor(now / self.config.stats_every) + 1) * self.config.stats_every
        lat = np.asarray(self.latencies, np.float64) if self.latencies else np.zeros(1)
        rtf = self._proc_seconds / now if now > 0 else 0.0
        return [Stats(now, round(rtf, 4), round(float(np.median(lat)), 3), round(float(np.percentile(lat, 95)), 3),
                      self._overruns, sum(1 for c in self.clusterer.clusters if c.confirmed))]


class Pipeline(SessionSpeakers):
    """Streaming speaker diarization: ``process(chunk) -> events``, ``flush()``, ``reset()``."""

    def __init__(self, embedder: EmbedderLike, config: PipelineConfig | None = None,
                 profiles: Sequence = (), vad: VadSegmenter | None = None, *,
                 keep_windows: bool = False) -> None:
        self.config = config or PipelineConfig()
        self.keep_windows = keep_windows  # log every window embedding (for an offline second pass)
        self.config.validate()
        self.embedder = embedder
        self.vad = vad or VadSegmenter(self.config.vad)
        self.clusterer = OnlineClusterer(self.config.cluster, profiles)
        self._step = int(round(self.config.step * SAMPLE_RATE))
        self._win = int(round(self.config.window * SAMPLE_RATE))
        self._slack = int(round((self.config.latency - self.config.step) * SAMPLE_RATE))
        self._min_win = max(int(self.config.min_window * SAMPLE_RATE), int(embedder.min_samples))
        self.windows = WindowMaker(self._win, self._step, self._min_win)
        self.reset()

    # --- public API ----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the stream (speakers of this session included); enrolled profiles stay."""
        self.vad.reset()
        self.clusterer.reset()
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0
        self._seen = 0
        self._vad_fed = 0
        self._next_grid = self._step
        self.windows.reset()
        self._speech: list[list[int]] = []  # decided speech spans not yet fully finalised
        self._in_speech_event = False
        self._windows: list[Window] = []
        self._final_until = 0
        self._turn: SpeakerTurn | None = None
        self._next_turn_id = 1
        self._talk: dict[str, float] = {}
        self.latencies: deque[float] = deque(maxlen=20000)
        self._proc_seconds = 0.0
        self._overruns = 0
        self._next_stats = self.config.stats_every
        self.nonfinite_samples = 0
        self._pending_spans: list[tuple[int, int, bool]] = []
        #: (start s, end s, unit embedding) of every window, when ``keep_windows``; 0.8 KB a window
        self.window_log: list[tuple[float, float, np.ndarray]] = []

    def process(self, chunk: AudioChunk) -> list[Event]:
        """Feed the next chunk of 16 kHz mono float32 audio; returns the events it caused."""
        t0 = time.perf_counter()
        samples = np.asarray(chunk.samples, np.float32).reshape(-1)
        if not np.isfinite(samples).all():
            bad = ~np.isfinite(samples)
            self.nonfinite_samples += int(bad.sum())
            samples = np.where(bad, 0.0, samples).astype(np.float32)
        self._overruns += int(chunk.overruns)
        self._buf = np.concatenate([self._buf, samples])
        self._seen += samples.size
        plans = []
        while self._next_grid <= self._seen:
            plans.append(self._plan(self._next_grid))
            self._next_grid += self._step
        tail = self._feed_vad(self._seen)  # decided after the last grid point: next step's
        events = self._execute(plans)
        self._pending_spans += tail
        self._trim()
        self._proc_seconds += time.perf_counter() - t0
        events += self._maybe_stats()
        return events

    def flush(self) -> list[Event]:
        """End of stream: decide and finalise everything heard so far."""
        t0 = time.perf_counter()
        self._feed_vad(self._seen)
        spans = self._take_pending() + self.vad.flush()
        self.windows.observe(spans)
        last_end = self._windows[-1].end if self._windows else -1
        window = self.windows.closing(self._seen, last_end, self._buf_start)
        plan = _Plan(self._seen, spans, self.vad.decided_until, False, window)
        events = self._execute([plan], final=True)
        events += self.clusterer.finish(self._seen / SAMPLE_RATE)
        self._proc_seconds += time.perf_counter() - t0
        events += self._maybe_stats(force=True)
        return events

    # --- stages --------------------------------------------------------------------------
    def _feed_vad(self, upto: int) -> list[tuple[int, int, bool]]:
        if upto <= self._vad_fed:
            return []
        a, b = self._vad_fed - self._buf_start, upto - self._buf_start
        spans = self.vad.process(self._buf[a:b])
        self._vad_fed = upto
        self.windows.observe(spans)
        return spans

    def _take_pending(self) -> list[tuple[int, int, bool]]:
        spans, self._pending_spans = self._pending_spans, []
        return spans

    def _plan(self, grid: int) -> _Plan:
        spans = self._take_pending() + self._feed_vad(grid)
        window = self.windows.at(grid, self.vad.in_speech, self._buf_start)
        return _Plan(grid, spans, self.vad.decided_until, self.vad.in_speech, window)

    def _execute(self, plans: list[_Plan], final: bool = False) -> list[Event]:
        wins = [p.window for p in plans if p.window is not None]
        if wins:
            audio = [self._buf[w.start - self._buf_start : w.end - self._buf_start] for w in wins]
            for w, e in zip(wins, self.embedder.embed(audio)):
                w.emb = e
                if self.keep_windows:
                    self.window_log.append((w.start / SAMPLE_RATE, w.end / SAMPLE_RATE, e))
        events: list[Event] = []
        for p in plans:
            now = p.grid / SAMPLE_RATE
            events += self._speech_events(p.spans)
            if p.window is not None:
                w = p.window
                fresh = w.end - max(w.start, self._windows[-1].end if self._windows else 0)
                assignment = self.clusterer.observe(w.emb, w.samples / SAMPLE_RATE, w.end / SAMPLE_RATE,
                                                    speech=fresh / SAMPLE_RATE)
                for ev in assignment.events:
                    self._apply_relabel(ev)
                events += assignment.events
                self._windows.append(p.window)
            limit = p.decided if final else min(p.grid - self._slack, p.decided)
            events += self._finalise(limit, now)
            if not final:
                prov = self._provisional(p, now)
                if prov is not None:
                    events.append(prov)
        return events

    def _speech_events(self, spans: list[tuple[int, int, bool]]) -> list[Event]:
        out: list[Event] = []
        for s, e, speech in spans:
            if speech:
                if self._speech and self._speech[-1][1] == s:
                    self._speech[-1][1] = e
                else:
                    self._speech.append([s, e])
                if not self._in_speech_event:
                    out.append(SpeechStart(s / SAMPLE_RATE))
                    self._in_speech_event = True
            elif self._in_speech_event:
                out.append(SpeechEnd(s / SAMPLE_RATE))
                self._in_speech_event = False
        return out

    def _window_scores(self, a: int, b: int) -> np.ndarray | None:
        """Overlap-weighted mean similarity to each cluster of the windows covering [a, b)."""
        weights, embs = [], []
        for w in self._windows:
            ov = min(b, w.end) - max(a, w.start)
            if ov > 0:
                weights.append(ov)
                embs.append(w.emb)
        if not embs:
            if not self._windows:
                return None
            nearest = min(self._windows, key=lambda w: min(abs(w.end - a), abs(w.start - b)))
            embs, weights = [nearest.emb], [1.0]
        sims = self.clusterer.similarities(np.stack(embs))
        wts = np.asarray(weights, np.float32)
        return (wts[:, None] * sims).sum(0) / wts.sum()

    def _finalise(self, limit: int, now: float) -> list[Event]:
        out: list[Event] = []
        if limit <= self._final_until:
            return out
        for span in self._speech:
            a, b = max(span[0], self._final_until), min(span[1], limit)
            while a < b:
                cut = min(b, (a // self._step + 1) * self._step)
                out += self._label_piece(a, cut, now)
                a = cut
        self._final_until = limit
        self._speech = [s for s in self._speech if s[1] > limit]
        keep_from = limit - self._win - self._step
        self._windows = [w for w in self._windows if w.end > keep_from]
        return out

    def _label_piece(self, a: int, b: int, now: float) -> list[Event]:
        scores = self._window_scores(a, b)
        if scores is None or scores.size == 0:
            return []
        idx, score = self.clusterer.pick(scores)
        if idx < 0:  # only enrolled speakers so far, none above its threshold: the closest one
            idx = int(np.argmax(scores))
            score = float(scores[idx])
        cluster = self.clusterer.clusters[idx]
        start, end = a / SAMPLE_RATE, b / SAMPLE_RATE
        self.latencies.append(now - start)
        self._talk[cluster.label] = self._talk.get(cluster.label, 0.0) + (end - start)
        t = self._turn
        if t is not None and t.label == cluster.label and abs(t.end - start) < 1e-6:
            turn = SpeakerTurn(t.turn_id, t.start, end, cluster.label, round(max(t.score, score), 4),
                               "final", now, cluster.name)
        else:
            turn = SpeakerTurn(self._next_turn_id, start, end, cluster.label, round(score, 4), "final",
                               now, cluster.name)
            self._next_turn_id += 1
        self._turn = turn
        return [turn]

    def _provisional(self, p: _Plan, now: float) -> SpeakerTurn | None:
        start = None
        for s, e in self._speech:
            if e > self._final_until:
                start = max(s, self._final_until)
                break
        if start is None and p.in_speech and self.windows.region_start is not None:
            start = max(self.windows.region_start, self._final_until)
        if start is None or not self._windows or start >= p.grid:
            return None
        latest = self._windows[-1]
        sims = self.clusterer.similarities(latest.emb[None])[0]
        idx, score = self.clusterer.pick(sims)
        if idx < 0:
            return None
        c = self.clusterer.clusters[idx]
        end = p.grid if p.in_speech else min(p.grid, max(e for _, e in self._speech) if self._speech else p.grid)
        if end <= start:
            return None
        return SpeakerTurn(-1, start / SAMPLE_RATE, end / SAMPLE_RATE, c.label, round(score, 4), "provisional",
                           now, c.name)

    def _apply_relabel(self, ev: Relabel) -> None:
        if ev.old in self._talk:
            self._talk[ev.new] = self._talk.get(ev.new, 0.0) + self._talk.pop(ev.old)
        if self._turn is not None and self._turn.label == ev.old:
            self._turn = None  # the next piece starts a new turn under the new label

    def _trim(self) -> None:
        keep = max(0, min(self._seen - self._win - self._step, self._vad_fed))
        if keep > self._buf_start:
            self._buf = self._buf[keep - self._buf_start :]
            self._buf_start = keep
