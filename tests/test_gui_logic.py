"""The Qt app's pure parts (no Qt, no model): timeline model, levels, feed, worker, export, enrollment check."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from stream_spk.session import SessionOptions
from stream_spk.sources import FileSource
from stream_spk.types import SAMPLE_RATE, AudioChunk, Relabel, SpeakerTurn, Stats
from stream_spk.ui import commands, export
from stream_spk.ui.feed import Feed
from stream_spk.ui.levels import LevelFrame, SignalHistory, block_levels
from stream_spk.ui.messages import Batch, CommandDone, ModelReady, SessionEnded, SessionStarted
from stream_spk.ui.timeline_model import TimelineModel
from stream_spk.ui.worker import SessionWorker, VadTap


# ---------------------------------------------------------------------------------------------
# fakes shared with test_gui.py
class FakeVad:
    """VAD stand-in: one probability per 512-sample frame (0.9 when loud)."""

    frame = 512

    def __init__(self) -> None:
        self.last_probs = np.zeros(0, np.float32)

    def process(self, samples: np.ndarray) -> list:
        n = samples.size // self.frame
        frames = samples[: n * self.frame].reshape(n, self.frame) if n else np.zeros((0, self.frame))
        self.last_probs = np.where(np.abs(frames).max(axis=1) > 0.01, 0.9, 0.1).astype(np.float32)
        return []


class FakeEmbedder:
    device = "cpu"
    precision = "fp32"
    min_samples = 400

    def embed(self, wavs):
        rng = np.random.default_rng(len(wavs))
        v = rng.normal(size=(len(wavs), 192)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


class FakePipeline:
    """Duck-typed Pipeline: turns of 2 s alternating between two speakers; records misuse.

    ``overlaps`` counts state changes (rename/merge) that ran while ``process`` was running.
    """

    def __init__(self, delay: float = 0.0, turn: float = 2.0) -> None:
        self.vad = FakeVad()
        self.embedder = FakeEmbedder()
        self.delay = delay
        self.turn = turn
        self.overlaps = 0
        self.processed = 0
        self._busy = False
        self.reset()

    def reset(self) -> None:
        self.alias: dict[str, str] = {}
        self.now = 0.0
        self.resets = getattr(self, "resets", 0) + 1

    def _label(self, raw: str) -> str:
        seen = set()
        while raw in self.alias and raw not in seen:
            seen.add(raw)
            raw = self.alias[raw]
        return raw

    def process(self, chunk: AudioChunk) -> list:
        self._busy = True
        try:
            time.sleep(self.delay)
            self.vad.process(chunk.samples)
            self.processed += 1
            k = int(chunk.t0 // self.turn)
            label = self._label(f"speaker {k % 2 + 1}")
            self.now = chunk.t1
            events = [SpeakerTurn(k + 1, k * self.turn, chunk.t1, label, 0.9, "final", chunk.t1),
                      SpeakerTurn(-1, chunk.t1, chunk.t1 + 0.5, label, 0.5, "provisional", chunk.t1)]
            if math.floor(chunk.t1) > math.floor(chunk.t0):
                events.append(Stats(chunk.t1, 0.1, 1.0, 1.0, chunk.overruns, 2))
            return events
        finally:
            self._busy = False

    def flush(self) -> list:
        return [Stats(self.now, 0.1, 1.0, 1.0, 0, 2)]

    def speakers(self) -> list:
        return []

    def rename_speaker(self, label: str, new: str) -> Relabel:
        self.overlaps += self._busy
        self.alias[label] = new
        return Relabel(label, new, self.now, "rename")

    def merge_speakers(self, keep: str, drop: str) -> Relabel:
        self.overlaps += self._busy
        self.alias[drop] = keep
        return Relabel(drop, keep, self.now, "merge")

    def speaker_embeddings(self, label: str):
        return np.full((3, 192), 1 / np.sqrt(192), np.float32), [1.5, 1.5, 1.5]


def chunks(seconds: float, chunk: float = 0.25, value: float = 0.1) -> list[AudioChunk]:
    n = round(chunk * SAMPLE_RATE)
    return [AudioChunk(np.full(n, value, np.float32), k * chunk) for k in range(int(seconds / chunk))]


def turn(tid, start, end, label, status="final", name=None) -> SpeakerTurn:
    return SpeakerTurn(tid, start, end, label, 0.8, status, end, name)


# ---------------------------------------------------------------------------------------------
# timeline model
def test_final_turns_grow_by_turn_id_and_provisional_is_replaced():
    m = TimelineModel()
    m.apply([turn(1, 0.0, 0.5, "speaker 1"), turn(1, 0.0, 1.0, "speaker 1"),
             turn(-1, 1.0, 1.5, "speaker 1", "provisional")])
    m.apply([turn(2, 1.2, 2.0, "speaker 2"), turn(-1, 2.0, 2.4, "speaker 2", "provisional")])
    assert m.final_turns() == [(0.0, 1.0, "speaker 1"), (1.2, 2.0, "speaker 2")]
    assert m.provisional_segments("speaker 2")[0].start == 2.0
    assert m.provisional_segments("speaker 1") == []
    assert m.talk_times() == pytest.approx({"speaker 1": 1.0, "speaker 2": 0.8})
    assert m.shares()["speaker 1"] == pytest.approx(1.0 / 1.8)
    assert m.now == 2.4
    m.end_of_stream()
    assert m.provisional is None


def test_rename_keeps_lane_colour_and_place_merge_joins_lanes():
    m = TimelineModel()
    m.apply([turn(1, 0, 1, "speaker 1"), turn(2, 1, 2, "speaker 2"), turn(3, 2, 3, "speaker 3"),
             turn(-1, 3, 3.5, "speaker 2", "provisional")])
    colors = {lane.label: lane.color for lane in m.lanes()}
    m.take_changes()
    m.apply([Relabel("speaker 2", "Bob", 3.0, "rename")])
    changes = m.take_changes()
    assert changes.layout and "Bob" in changes.lanes
    assert m.labels() == ["speaker 1", "Bob", "speaker 3"]
    assert m.lane("Bob").color == colors["speaker 2"]
    assert m.provisional.label == "Bob"
    m.apply([Relabel("speaker 3", "speaker 1", 3.0, "merge")])
    assert m.labels() == ["speaker 1", "Bob"]
    assert m.talk_times() == {"speaker 1": 2.0, "Bob": 1.0}
    assert m.lane("speaker 1").color == colors["speaker 1"]
    # a later update of a merged turn lands in the kept lane
    m.apply([turn(3, 2, 3.4, "speaker 1")])
    assert m.talk_times()["speaker 1"] == pytest.approx(2.4)
    # rename back and forth, and a relabel of an unknown label, are harmless
    m.apply([Relabel("Bob", "speaker 2", 4, "rename"), Relabel("nobody", "x", 4, "merge")])
    assert m.labels() == ["speaker 1", "speaker 2"]


def test_known_speakers_are_flagged():
    m = TimelineModel()
    m.apply([turn(1, 0, 1, "Anna", name="Anna"), turn(2, 1, 2, "speaker 1")])
    assert [lane.known for lane in m.lanes()] == [True, False]
    m.mark_known("speaker 1")
    assert m.lane("speaker 1").known
    m.apply([Relabel("speaker 2", "Anna", 2, "recognised")])
    assert m.lane("Anna").known


# ---------------------------------------------------------------------------------------------
# levels
def test_block_levels_and_history():
    x = np.concatenate([np.full(800, 0.5, np.float32), np.zeros(800, np.float32), np.full(400, -1.0, np.float32)])
    rms, peak = block_levels(x, block=800)
    assert np.round(rms, 2).tolist() == [-6.02, -90.0, 0.0]
    assert np.round(peak, 2).tolist() == [-6.02, -90.0, 0.0]
    h = SignalHistory(keep_seconds=1.0)
    for k in range(30):
        frame = LevelFrame.measure(np.full(800, 0.1, np.float32), k * 0.05)
        h.add(frame.with_vad(np.array([k * 0.05]), np.array([0.7])))
    t, r, _ = h.levels()
    assert len(t) == 20 and t[-1] == pytest.approx(29 * 0.05 + 0.025)
    assert h.latest_rms == pytest.approx(-20.0) and h.latest_vad == pytest.approx(0.7)


def test_vad_tap_records_every_call_with_stream_times():
    vad = FakeVad()
    tap = VadTap(vad)
    vad.process(np.full(1024, 0.5, np.float32))
    vad.process(np.zeros(512, np.float32))
    t, p = tap.take()
    assert p.tolist() == pytest.approx([0.9, 0.9, 0.1])
    assert t.tolist() == pytest.approx([(k + 0.5) * 512 / SAMPLE_RATE for k in range(3)])
    assert tap.take()[1].size == 0


# ---------------------------------------------------------------------------------------------
# feed
class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_feed_paces_calls_hooks_and_retimes_on_speed_change(monkeypatch):
    clock = FakeClock()
    calls = []
    feed = Feed(chunks(2.0, 0.5), speed=2.0, between_chunks=lambda: calls.append(("between", clock.t)),
                on_chunk=lambda c: calls.append(("chunk", c.t0)), clock=clock)
    waits = []
    monkeypatch.setattr(feed._stop, "wait", lambda s: (waits.append(s), setattr(clock, "t", clock.t + s)))
    released = []
    for c in feed:
        released.append((c.t0, round(clock.t - 100.0, 6)))
        if c.t0 == 0.5:
            feed.set_speed(None)
    assert released == [(0.0, 0.25), (0.5, 0.5), (1.0, 0.5), (1.5, 0.5)]
    assert [k for k, _ in calls].count("between") == 5  # before each chunk, and before the end
    assert calls[0][0] == "between" and calls[1] == ("chunk", 0.0)
    assert feed.position == 2.0


def test_feed_joins_file_chunks_only_while_as_fast_as_possible():
    source = [AudioChunk(np.full(4000, k, np.float32), k * 0.25, 2 if k == 5 else 0) for k in range(20)]  # 5 s
    feed = Feed(iter(source), speed=None, fast_chunk=1.0)
    out = []
    for c in feed:
        out.append(c)
        if len(out) == 2:
            feed.set_speed(1000.0)  # paced from here: the source's own chunks
        elif len(out) == 4:
            feed.set_speed(None)  # as fast as possible again: joined again
    assert [(c.t0, c.duration) for c in out] == [(0.0, 1.0), (1.0, 1.0), (2.0, 0.25), (2.25, 0.25),
                                                 (2.5, 1.0), (3.5, 1.0), (4.5, 0.5)]  # the file's end: shorter
    assert np.array_equal(np.concatenate([c.samples for c in out]), np.concatenate([c.samples for c in source]))
    assert [c.overruns for c in out] == [0, 2, 0, 0, 0, 0, 0]
    assert feed.position == 5.0
    # no fast_chunk, or a live source: chunks as the source made them
    assert [c.duration for c in Feed(chunks(1.0), speed=None)] == [0.25] * 4
    assert [c.duration for c in Feed(chunks(1.0), live=True, fast_chunk=1.0)] == [0.25] * 4


def test_feed_pause_holds_files_and_drops_live_audio():
    gate = threading.Event()
    seen = []

    def between():
        if len(seen) == 2 and not gate.is_set():
            gate.set()
            feed.pause(True)
            threading.Timer(0.15, lambda: feed.pause(False)).start()

    feed = Feed(chunks(1.0), speed=None, between_chunks=between)
    t0 = time.monotonic()
    for c in feed:
        seen.append(c.t0)
    assert seen == [0.0, 0.25, 0.5, 0.75] and time.monotonic() - t0 >= 0.14

    live = Feed(chunks(1.0), live=True)
    out = []
    for c in live:
        out.append(c.t0)
        if c.t0 == 0.25:
            live.pause(True)
    assert out == [0.0, 0.25] and live.dropped == 2


def test_feed_stop_wakes_a_paced_wait():
    feed = Feed(chunks(100.0, 1.0), speed=0.01)
    threading.Timer(0.1, feed.stop).start()
    t0 = time.monotonic()
    assert list(feed) == []
    assert time.monotonic() - t0 < 2.0


# ---------------------------------------------------------------------------------------------
# worker
def collect(worker: SessionWorker, until, timeout: float = 10.0) -> list:
    out, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            msg = worker.outbox.get(timeout=0.05)
        except Exception:
            continue
        out.append(msg)
        if until(msg):
            return out
    raise AssertionError(f"timed out; got {[type(m).__name__ for m in out]}")


def test_worker_runs_a_session_and_commands_only_between_chunks():
    fake = FakePipeline(delay=0.01)
    worker = SessionWorker(pipeline_factory=lambda opts, emb: fake)
    worker.start()
    try:
        worker.start_session(chunks(6.0), speed=None, live=False, description="fake")
        tokens = []
        for _ in range(20):
            tokens.append(worker.call(lambda w: commands.rename_speaker(w, "speaker 1", "Alice")))
            tokens.append(worker.call(lambda w: commands.rename_speaker(w, "Alice", "speaker 1")))
            time.sleep(0.003)
        msgs = collect(worker, lambda m: isinstance(m, SessionEnded))
        ready = [m for m in msgs if isinstance(m, ModelReady)]
        assert len(ready) == 1 and ready[0].device == "CPU" and ready[0].precision == "fp32"
        assert any(isinstance(m, SessionStarted) for m in msgs)
        end = msgs[-1]
        assert end.error is None and not end.stopped and end.audio_seconds == 6.0
        done = [m for m in msgs if isinstance(m, CommandDone)]
        assert len(done) == 40 and all(d.error is None for d in done)
        assert fake.overlaps == 0
        batches = [m for m in msgs if isinstance(m, Batch)]
        assert sum(len(b.levels) for b in batches) == 24  # one level frame per chunk
        assert all(f.vad_p.size for b in batches for f in b.levels)
        relabels = [ev for b in batches for ev in b.events if isinstance(ev, Relabel)]
        assert len(relabels) == 40
        model = TimelineModel()
        for b in batches:
            model.apply(b.events)
        assert set(model.labels()) == {"speaker 1", "speaker 2"}
        assert sum(model.talk_times().values()) == pytest.approx(6.0)
    finally:
        assert worker.shutdown(2.0)


def test_worker_reports_errors_and_stays_alive():
    def broken(opts, emb):
        from stream_spk.errors import ModelError

        raise ModelError("checkpoint not found; run stream-spk models fetch")

    worker = SessionWorker(pipeline_factory=broken)
    worker.start()
    try:
        worker.start_session(chunks(1.0), speed=None, live=False, description="x")
        end = collect(worker, lambda m: isinstance(m, SessionEnded))[-1]
        assert end.error == "checkpoint not found; run stream-spk models fetch"
        token = worker.call(lambda w: commands.rename_speaker(w, "speaker 1", "A"))
        done = collect(worker, lambda m: isinstance(m, CommandDone))[-1]
        assert done.token == token and "no session yet" in done.error
        token = worker.call(lambda w: 1 / 0)
        done = collect(worker, lambda m: isinstance(m, CommandDone))[-1]
        assert done.error.startswith("unexpected error: ZeroDivisionError")
        assert worker.alive
    finally:
        assert worker.shutdown(2.0)


def _settled(read, quiet: float = 0.2, timeout: float = 10.0):
    """The value of ``read()`` once it has not changed for ``quiet`` seconds."""
    value, since, deadline = read(), time.monotonic(), time.monotonic() + timeout
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.01)
        if read() != value:
            value, since = read(), time.monotonic()
    return value


def test_worker_stop_pause_and_shutdown_mid_session():
    fake = FakePipeline()
    worker = SessionWorker(pipeline_factory=lambda opts, emb: fake)
    worker.start()
    worker.start_session(chunks(60.0), speed=4.0, live=False, description="slow")
    collect(worker, lambda m: isinstance(m, Batch))
    worker.pause(True)
    n = _settled(lambda: fake.processed)  # a chunk already under way may still finish
    time.sleep(0.3)
    assert fake.processed == n
    worker.pause(False)
    deadline = time.monotonic() + 10
    while fake.processed == n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.processed > n
    t0 = time.monotonic()
    assert worker.shutdown(2.0)
    assert time.monotonic() - t0 < 1.5
    end = [m for m in collect(worker, lambda m: isinstance(m, SessionEnded))][-1]
    assert end.stopped and 0 < end.audio_seconds < 60


def test_stop_and_pause_requests_before_the_model_is_loaded():
    fake = FakePipeline()

    def slow(opts, emb):
        time.sleep(0.3)
        return fake

    worker = SessionWorker(pipeline_factory=slow)
    worker.start()
    try:
        worker.start_session(chunks(5.0), speed=None, live=False, description="x")
        worker.stop_session()  # while the model loads
        end = collect(worker, lambda m: isinstance(m, SessionEnded))[-1]
        assert end.stopped and end.audio_seconds == 0.0 and fake.processed == 0
        worker.start_session(chunks(5.0), speed=None, live=False, description="y")
        worker.pause(True)
        collect(worker, lambda m: isinstance(m, SessionStarted))
        time.sleep(0.2)
        assert fake.processed == 0
        worker.pause(False)
        end = collect(worker, lambda m: isinstance(m, SessionEnded))[-1]
        assert not end.stopped and end.audio_seconds == 5.0
    finally:
        assert worker.shutdown(2.0)


# ---------------------------------------------------------------------------------------------
# export
def test_export_rttm_and_json_use_current_labels(tmp_path):
    m = TimelineModel()
    events = [turn(1, 0.0, 1.0, "speaker 1"), turn(1, 0.0, 1.5, "speaker 1"), turn(2, 1.5, 2.5, "speaker 2"),
              turn(-1, 2.5, 3.0, "speaker 2", "provisional"), Relabel("speaker 2", "Bob", 3.0, "rename")]
    m.apply(events)
    n = export.write_rttm(m, tmp_path / "s.rttm", "my session")
    lines = (tmp_path / "s.rttm").read_text().splitlines()
    assert n == 2 and lines == ["SPEAKER my_session 1 0.000 1.500 <NA> <NA> speaker_1 <NA> <NA>",
                                "SPEAKER my_session 1 1.500 1.000 <NA> <NA> Bob <NA> <NA>"]
    export.write_json(m, events, tmp_path / "s.json", "my session", {"source": "x.wav"})
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["source"] == "x.wav" and data["turns"][1] == {"start": 1.5, "end": 2.5, "label": "Bob"}
    assert [s["label"] for s in data["speakers"]] == ["speaker 1", "Bob"]
    assert [e["kind"] for e in data["events"]] == ["turn", "turn", "turn", "relabel"]


# ---------------------------------------------------------------------------------------------
# enrollment check: nothing is written before "Save"
def test_preview_store_holds_the_write_back(tmp_path):
    from stream_spk.enrollment import enroll_audio
    from stream_spk.profiles import ProfileStore

    store = ProfileStore(tmp_path / "p.sqlite3")
    proxy = commands.PreviewStore(store)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.normal(size=SAMPLE_RATE * 10)).astype(np.float32)

    class Same:
        def embed(self, wavs):
            v = np.ones((len(wavs), 192), np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

    result = enroll_audio("Anna", [("a", audio)], Same(), proxy, speech_fn=lambda x: [(0, x.size)])
    assert result.accepted and proxy.pending is not None and proxy.pending.name == "Anna"
    assert store.list() == []
    worker = SessionWorker(SessionOptions(profiles=str(tmp_path / "p.sqlite3")))
    speaker = commands.commit_enrollment(worker, proxy.pending)
    assert speaker.name == "Anna" and [r.name for r in store.list()] == ["Anna"]
    store.close()


# ---------------------------------------------------------------------------------------------
# hard rule: the ui package never imports torch
def test_importing_every_ui_module_leaves_torch_out():
    probe = (
        "import importlib, pkgutil, sys\n"
        "import stream_spk.ui as ui\n"
        "names = [m.name for m in pkgutil.iter_modules(ui.__path__, 'stream_spk.ui.')]\n"
        "for n in names: importlib.import_module(n)\n"
        "import stream_spk.cli.gui_cmd\n"
        "assert len(names) >= 10, names\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
        "print(len(names), bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stdout + run.stderr


def test_file_source_for_replay_is_unpaced(tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    src = FileSource(tmp_path / "a.wav", chunk_seconds=0.25, speed=None)
    assert [round(c.t1, 2) for c in Feed(src)] == [0.25, 0.5, 0.75, 1.0]


# ---------------------------------------------------------------------------------------------
# playback
class FakeOutput:
    """OutputStream stand-in: ``pull(n)`` runs the callback like PortAudio would."""

    def __init__(self, samplerate, blocksize, callback):
        self.samplerate, self.blocksize, self.callback = samplerate, blocksize, callback
        self.started = self.closed = False

    def start(self):
        self.started = True

    def stop(self):
        pass

    def close(self):
        self.closed = True

    def pull(self, frames: int) -> np.ndarray:
        out = np.full((frames, 1), 9.0, np.float32)
        self.callback(out, frames, None, None)
        return out[:, 0]


def test_audio_player_plays_what_was_pushed_then_silence():
    from stream_spk.ui.playback import AudioPlayer

    streams = []
    player = AudioPlayer(lambda rate, block, cb: streams.append(FakeOutput(rate, block, cb)) or streams[-1],
                         max_seconds=1.0)
    player.push(np.arange(5, dtype=np.float32))
    player.push(np.arange(5, 8, dtype=np.float32))
    (stream,) = streams
    assert stream.started and stream.samplerate == 16000
    assert stream.pull(6).tolist() == [0, 1, 2, 3, 4, 5]
    assert stream.pull(4).tolist() == [6, 7, 0, 0] and player.underruns == 1
    player.push(np.zeros(40000, np.float32))  # more than max_seconds: the oldest is dropped
    assert player._queued <= 16000 + 40000
    player.close()
    assert stream.closed
    player.close()


def test_feed_stopping_a_live_source_still_hands_out_what_it_captured():
    from test_sources import FakeStream, _factory

    from stream_spk.sources import MicSource

    block = np.full(800, 0.1, np.float32)
    streams: list = []
    mic = MicSource(chunk_seconds=0.25, stream_factory=_factory(streams, [(block, False)] * 20),
                    stall_seconds=30.0)  # 1 s already captured
    feed = Feed(mic, live=True)
    out = []
    for c in feed:
        out.append(round(c.t1, 2))
        if len(out) == 1:
            feed.stop()  # Stop pressed (or the window closed) after the first chunk
    assert out == [0.25, 0.5, 0.75, 1.0] and feed.position == 1.0
    assert mic.wait_released(2.0) and streams[0].closed and isinstance(streams[0], FakeStream)
    files = Feed(chunks(1.0), speed=None)
    got = []
    for c in files:
        got.append(c.t0)
        files.stop()
    assert got == [0.0]  # a file stops at once
