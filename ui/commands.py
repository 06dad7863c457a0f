"""Commands the GUI sends to the worker thread: functions of the :class:`SessionWorker`.

Each runs on the worker thread (between chunks, or when idle), so it may use the pipeline and
the model; each returns a small picklable-in-spirit value for the GUI. Build them with
``functools.partial`` and pass them to :meth:`WorkerBridge.call`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream_spk.errors import StreamSpkError
from stream_spk.profiles import KnownSpeaker, validate_name
from stream_spk.types import Relabel
from stream_spk.ui.worker import SessionWorker


def _session_pipeline(worker: SessionWorker):
    if not worker.has_pipeline:
        raise StreamSpkError("no session yet: start one first")
    return worker.pipeline


def open_profiles(path: str | os.PathLike | None):
    """The profile store at ``path`` (None: the default store)."""
    from stream_spk.session import open_store

    return open_store(path)


def rename_speaker(worker: SessionWorker, label: str, new_label: str) -> Relabel:
    """Give a session speaker a new display label (the timeline follows through the Relabel)."""
    new_label = " ".join(str(new_label).split())
    if not new_label:
        raise StreamSpkError("the new name is empty")
    ev = _session_pipeline(worker).rename_speaker(label, new_label)
    worker.emit_events([ev])
    return ev


def merge_speakers(worker: SessionWorker, keep: str, drop: str) -> Relabel:
    """Merge speaker ``drop`` into ``keep``."""
    ev = _session_pipeline(worker).merge_speakers(keep, drop)
    worker.emit_events([ev])
    return ev


def save_session_speaker(worker: SessionWorker, label: str, name: str) -> str:
    """Store a session speaker's voice as the enrolled speaker ``name``; the speaker takes the name."""
    from stream_spk.enrollment import save_session_speaker as save

    name = validate_name(name)
    pipeline = _session_pipeline(worker)
    embeddings, durations = pipeline.speaker_embeddings(label)
    cluster = pipeline.clusterer.get(label)  # its speech time (the windows overlap)
    with open_profiles(worker.profiles_path()) as store:
        save(store, name, embeddings, durations, speech_seconds=cluster.speech if cluster is not None else None)
    worker.profiles_changed()
    if label != name:
        try:
            ev = pipeline.rename_speaker(label, name)
        except ValueError:  # an enrolled speaker of that name is in the session: join them
            ev = pipeline.merge_speakers(name, label)
        worker.emit_events([ev])
    return name


@dataclass(frozen=True)
class PendingEnrollment:
    """Material an enrollment check accepted, not yet written."""

    name: str
    vectors: np.ndarray
    sources: tuple[str, ...]
    durations: tuple[float, ...]
    speech_seconds: float | None


@dataclass(frozen=True)
class EnrollmentCheck:
    """The result of an enrollment check, and what "Save" would write (None when refused)."""

    result: Any  # stream_spk.enrollment.EnrollmentResult
    pending: PendingEnrollment | None


class PreviewStore:
    """Stands in for a profile store during a check: reads go to ``store``, the write is held back."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.pending: PendingEnrollment | None = None

    def known_speakers(self) -> list[KnownSpeaker]:
        return self._store.known_speakers()

    def add_embeddings(self, name: str, vectors: np.ndarray, sources, durations,
                       speech_seconds: float | None = None) -> KnownSpeaker:
        vectors = np.asarray(vectors, np.float32)
        self.pending = PendingEnrollment(name, vectors.copy(), tuple(map(str, sources)),
                                         tuple(float(d) for d in durations), speech_seconds)
        mean = vectors.mean(axis=0)
        centroid = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        seconds = float(np.sum(durations)) if speech_seconds is None else float(speech_seconds)
        return KnownSpeaker(name, centroid, len(vectors), seconds)

    def __getattr__(self, item: str) -> Any:
        return getattr(self._store, item)


def check_enrollment(worker: SessionWorker, name: str, material: list[tuple[str, Any]]) -> EnrollmentCheck:
    """Run the enrollment analysis on files (paths) and recordings (arrays) without saving."""
    from stream_spk.audio import read_audio
    from stream_spk.enrollment import enroll_audio

    name = validate_name(name)
    if not material:
        raise StreamSpkError("add a recording or an audio file first")
    samples = []
    for label, item in material:
        audio = np.asarray(item, np.float32) if isinstance(item, np.ndarray) else read_audio(Path(item))
        samples.append((label, audio))
    embedder = worker.pipeline.embedder
    with open_profiles(worker.profiles_path()) as store:
        proxy = PreviewStore(store)
        result = enroll_audio(name, samples, embedder, proxy, progress=worker.progress)
    return EnrollmentCheck(result, proxy.pending if result.accepted else None)


def commit_enrollment(worker: SessionWorker, pending: PendingEnrollment) -> KnownSpeaker:
    """Write checked material to the profile store."""
    with open_profiles(worker.profiles_path()) as store:
        speaker = store.add_embeddings(pending.name, pending.vectors, list(pending.sources),
                                       list(pending.durations), speech_seconds=pending.speech_seconds)
    worker.profiles_changed()
    return speaker


def mark_profiles_changed(worker: SessionWorker) -> None:
    """The GUI renamed or deleted an enrolled speaker."""
    worker.profiles_changed()
