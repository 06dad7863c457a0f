"""FileSource and MicSource: chunking, resampling, pacing, bad input, and a fake sound card."""

from __future__ import annotations

import importlib.abc
import io
import os
import sys
import threading
import time
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import soxr

from stream_spk import sources
from stream_spk.audio import probe_audio, read_audio, wav_declared_frames
from stream_spk.cli.main import main
from stream_spk.errors import AudioError, DeviceError
from stream_spk.sources import FileSource, MicSource, resolve_input_device

SR = 16000


class FakeClock:
    """A clock that only moves when slept on (or advanced by the test)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _write(path, data, rate, **kw):
    sf.write(str(path), data, rate, **kw)
    return path


def _noise(seconds: float, rate: int = SR, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (round(seconds * rate), channels) if channels > 1 else (round(seconds * rate),)
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)


# ---------------------------------------------------------------- FileSource


def test_file_441k_stereo_to_16k_mono_chunks(tmp_path):
    rate, n = 44100, 145530  # 3.3 s
    t = np.arange(n) / rate
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.25 * np.sin(2 * np.pi * 1000 * t) + 0.05 * np.random.default_rng(1).standard_normal(n)
    stereo = np.stack([left, right], axis=1).astype(np.float32)
    path = _write(tmp_path / "s.wav", stereo, rate, subtype="FLOAT")

    src = FileSource(path, chunk_seconds=0.5, speed=None)
    assert src.sample_rate == rate and src.duration == pytest.approx(3.3)
    chunks = list(src)
    assert [c.t0 for c in chunks] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    assert all(c.samples.dtype == np.float32 and c.samples.ndim == 1 for c in chunks)
    assert [c.samples.size for c in chunks] == [8000] * 6 + [4800]
    for a, b in zip(chunks[:-1], chunks[1:], strict=True):
        assert b.t0 == pytest.approx(a.t1)
    expected = soxr.resample(stereo.mean(axis=1), rate, SR, quality="HQ")
    got = np.concatenate([c.samples for c in chunks])
    assert got.size == expected.size
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert src.nonfinite_samples == 0


def test_file_16k_passes_through_unchanged(tmp_path):
    data = _noise(1.26)
    path = _write(tmp_path / "m.wav", data, SR, subtype="FLOAT")
    chunks = list(FileSource(path, chunk_seconds=0.25, speed=None))
    assert [c.samples.size for c in chunks] == [4000] * 5 + [160]
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), data)


@pytest.mark.parametrize("speed, expected", [
    (1.0, [0.5, 0.5, 0.5, 0.5, 0.2]),
    (2.0, [0.25, 0.25, 0.25, 0.25, 0.1]),
])
def test_file_pacing_schedule(tmp_path, speed, expected):
    path = _write(tmp_path / "p.wav", _noise(2.2), SR)
    fake = FakeClock()
    start = fake.now
    released = []
    for chunk in FileSource(path, chunk_seconds=0.5, speed=speed, clock=fake.clock, sleep=fake.sleep):
        released.append((fake.now - start, chunk.t1))
    assert fake.sleeps == pytest.approx(expected)
    for at, t1 in released:  # never early
        assert at >= t1 / speed - 1e-9


def test_file_pacing_behind_does_not_sleep(tmp_path):
    path = _write(tmp_path / "p.wav", _noise(2.0), SR)
    fake = FakeClock()
    for _ in FileSource(path, chunk_seconds=0.5, speed=1.0, clock=fake.clock, sleep=fake.sleep):
        fake.now += 0.7  # the consumer takes longer than real time
    assert fake.sleeps == pytest.approx([0.5])  # only before the first chunk


def test_file_speed_none_never_touches_clock(tmp_path):
    path = _write(tmp_path / "f.wav", _noise(2.0), SR)

    def boom(*_a):
        raise AssertionError("clock/sleep used")

    chunks = list(FileSource(path, chunk_seconds=0.5, speed=None, clock=boom, sleep=boom))
    assert len(chunks) == 4


def test_file_nonfinite_samples_zeroed_and_counted(tmp_path):
    data = _noise(1.0)
    data[[5, 100, 9000]] = np.nan
    data[[7000, 15999]] = [np.inf, -np.inf]
    path = _write(tmp_path / "nan.wav", data, SR, subtype="FLOAT")
    src = FileSource(path, chunk_seconds=0.5, speed=None)
    got = np.concatenate([c.samples for c in src])
    assert src.nonfinite_samples == 5
    assert np.isfinite(got).all()
    assert got[[5, 100, 9000, 7000, 15999]].tolist() == [0.0] * 5
    keep = np.ones(got.size, bool)
    keep[[5, 100, 9000, 7000, 15999]] = False
    np.testing.assert_array_equal(got[keep], data[keep])
    assert src.warnings() == [f"{path}: 5 NaN or infinite sample value(s) replaced by silence"]


def test_file_cut_wav_is_used_and_reported_as_truncated(tmp_path):
    full = _write(tmp_path / "full.wav", _noise(4.0), SR, subtype="PCM_16")
    assert FileSource(full).warnings() == []
    assert wav_declared_frames(full) == 4 * SR
    cut = tmp_path / "cut.wav"
    raw = full.read_bytes()
    cut.write_bytes(raw[: 44 + 2 * SR * 3 // 2])  # header + 1.5 s of 16-bit samples
    src = FileSource(cut, chunk_seconds=0.5, speed=None)
    assert src.duration == pytest.approx(1.5)
    assert src.declared_duration == pytest.approx(4.0)
    assert sum(c.samples.size for c in src) == 3 * SR // 2  # nothing that is there is dropped
    (note,) = src.warnings()
    assert note == f"{cut}: truncated: the header promises 4.00 s, the file holds 1.50 s; used what is there"


def test_wav_header_sizes_that_are_not_truncation(tmp_path):
    full = _write(tmp_path / "full.wav", _noise(1.0), SR, subtype="PCM_16")
    raw = bytearray(full.read_bytes())
    assert raw[36:40] == b"data"
    raw[40:44] = b"\xff\xff\xff\xff"  # a recorder that never finalised the length
    (tmp_path / "open.wav").write_bytes(bytes(raw))
    assert wav_declared_frames(tmp_path / "open.wav") is None
    assert FileSource(tmp_path / "open.wav").warnings() == []
    flac = _write(tmp_path / "x.flac", _noise(1.0), SR)
    assert wav_declared_frames(flac) is None
    # an odd-sized chunk before "fmt " is skipped with its pad byte
    odd = bytearray(full.read_bytes())
    extra = b"LIST" + (3).to_bytes(4, "little") + b"abc\x00"
    odd[12:12] = extra
    odd[4:8] = (len(odd) - 8).to_bytes(4, "little")
    (tmp_path / "odd.wav").write_bytes(bytes(odd))
    assert sf.info(str(tmp_path / "odd.wav")).frames == SR
    assert wav_declared_frames(tmp_path / "odd.wav") == SR


def test_file_empty_yields_nothing(tmp_path):
    path = _write(tmp_path / "empty.wav", np.zeros(0, np.float32), SR)
    src = FileSource(path, speed=1.0, clock=lambda: 0.0, sleep=lambda s: None)
    assert src.duration == 0.0
    assert list(src) == []


def test_file_missing_nonaudio_truncated(tmp_path):
    with pytest.raises(AudioError, match="nope.wav: no such file"):
        FileSource(tmp_path / "nope.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="junk.wav: not a readable audio file"):
        FileSource(junk)
    good = _write(tmp_path / "good.wav", _noise(1.0), SR)
    head = tmp_path / "head.wav"
    head.write_bytes(good.read_bytes()[:30])  # cut inside the header
    with pytest.raises(AudioError, match="head.wav"):
        FileSource(head)


# ---------------------------------------------------------------- one rule for every command


def test_read_audio_cut_wav_is_used_with_a_note(tmp_path):
    full = _write(tmp_path / "full.wav", _noise(4.0), SR, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: 44 + 2 * SR * 3 // 2])
    notes: list[str] = []
    got = read_audio(cut, notes=notes)
    assert got.size == 3 * SR // 2
    assert notes == [f"{cut}: truncated: the header promises 4.00 s, the file holds 1.50 s; used what is there"]


def test_read_audio_nonfinite_become_silence_with_a_note(tmp_path, capsys):
    data = _noise(1.0)
    data[[5, 100]] = np.nan
    data[7000] = np.inf
    path = _write(tmp_path / "nan.wav", data, SR, subtype="FLOAT")
    got = read_audio(path)  # no list: the note is printed as a warning
    assert np.isfinite(got).all() and got[[5, 100, 7000]].tolist() == [0.0] * 3
    assert capsys.readouterr().err == (f"stream-spk: warning: {path}: 3 NaN or infinite sample value(s) "
                                       "replaced by silence\n")


def test_header_only_and_empty_files_are_errors(tmp_path):
    full = _write(tmp_path / "full.wav", _noise(1.0), SR, subtype="PCM_16")
    head = tmp_path / "head.wav"
    head.write_bytes(full.read_bytes()[:44])  # the whole header, not one sample
    empty = _write(tmp_path / "empty.wav", np.zeros(0, np.float32), SR)
    for bad in (head, empty):
        with pytest.raises(AudioError, match=f"{bad.name}: contains no audio samples"):
            probe_audio(bad)
        with pytest.raises(AudioError, match="no audio samples"):
            read_audio(bad)


def _cut_half(src, dst):
    raw = src.read_bytes()
    dst.write_bytes(raw[: len(raw) // 2])
    return dst


def test_truncated_mp3_is_noted_with_its_length_and_decoder_noise_is_silenced(tmp_path, capfd):
    full = _write(tmp_path / "full.mp3", _noise(10.0), SR, format="MP3", subtype="MPEG_LAYER_III")
    notes: list[str] = []
    assert read_audio(full, notes=notes).size == 10 * SR and notes == []
    cut = _cut_half(full, tmp_path / "cut.mp3")
    got = read_audio(cut, notes=notes)
    assert 3 * SR < got.size < 7 * SR
    assert notes == [f"{cut}: truncated: the header promises 10.00 s, the file holds "
                     f"{got.size / SR:.2f} s; used what is there"]
    assert capfd.readouterr().err == ""  # libmpg123's "Xing stream size off" and the like


def test_truncated_ogg_is_noted(tmp_path):
    full = _write(tmp_path / "full.ogg", _noise(10.0), SR, format="OGG", subtype="VORBIS")
    assert probe_audio(full).notes() == []
    cut = _cut_half(full, tmp_path / "cut.ogg")
    notes: list[str] = []
    got = read_audio(cut, notes=notes)
    assert got.size > SR
    assert notes == [f"{cut}: truncated: the stream stops at {got.size / SR:.2f} s without its end; "
                     "used what is there"]


def test_file_decode_error_mid_file_names_the_file(tmp_path):
    flac = _write(tmp_path / "full.flac", _noise(3.0), SR)
    cut = tmp_path / "cut.flac"
    raw = flac.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    src = FileSource(cut, speed=None)  # the header is intact
    with pytest.raises(AudioError, match=r"cut\.flac: cannot decode audio at") as info:
        list(src)
    assert "\n" not in str(info.value)


def test_file_long_stream_memory_flat(tmp_path):
    rate, seconds = 22050, 600  # 10 minutes, resampled on the way
    path = tmp_path / "long.wav"
    rng = np.random.default_rng(3)
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype="PCM_16") as fh:
        for _ in range(seconds // 10):
            fh.write((0.1 * rng.standard_normal(rate * 10)).astype(np.float32))
    decoded_bytes = rate * seconds * 4  # the whole file as float32
    src = FileSource(path, chunk_seconds=0.5, speed=None)
    tracemalloc.start()
    try:
        total = 0
        for chunk in src:
            total += chunk.samples.size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == seconds * SR
    assert peak < decoded_bytes / 50, f"peak {peak} bytes"


# ---------------------------------------------------------------- MicSource


class FakeStream:
    """Stands in for sounddevice.InputStream; ``script`` is fed through the callback on start()."""

    def __init__(self, device, samplerate, channels, blocksize, callback, script=()):
        self.device, self.samplerate, self.channels = device, samplerate, channels
        self.blocksize, self.callback = blocksize, callback
        self.script = list(script)
        self.active = False
        self.started = self.stopped = self.closed = False

    def start(self):
        self.started = self.active = True
        for block, overflow in self.script:
            self.feed(block, overflow)

    def feed(self, block, overflow=False):
        block = np.asarray(block, np.float32).reshape(len(block), -1)
        self.callback(block, block.shape[0], None, SimpleNamespace(input_overflow=overflow))

    def stop(self):
        self.stopped = True
        self.active = False

    def close(self):
        self.closed = True


def _factory(streams, script=(), refuse=()):
    def make(device, samplerate, channels, blocksize, callback):
        if samplerate in refuse:
            raise RuntimeError("Invalid sample rate [PaErrorCode -9997]")
        stream = FakeStream(device, samplerate, channels, blocksize, callback, script)
        streams.append(stream)
        return stream
    return make


DEVICES = [
    {"index": 0, "name": "HDA Intel PCH: ALC892 Analog", "channels": 2, "default_samplerate": 48000.0,
     "is_default": True},
    {"index": 3, "name": "USB Audio Device", "channels": 1, "default_samplerate": 44100.0,
     "is_default": False},
    {"index": 5, "name": "USB Audio Headset", "channels": 1, "default_samplerate": 16000.0,
     "is_default": False},
]


def test_mic_callback_blocks_become_chunks():
    ramp = np.arange(25 * 800, dtype=np.float32) / 1e5
    script = [(ramp[i:i + 800], False) for i in range(0, ramp.size, 800)]
    streams: list[FakeStream] = []
    src = MicSource(chunk_seconds=0.5, stream_factory=_factory(streams, script))
    it = iter(src)
    first, second = next(it), next(it)
    stream = streams[0]
    assert (stream.device, stream.samplerate, stream.channels) == (None, SR, 1)
    assert (first.t0, second.t0) == (0.0, 0.5)
    np.testing.assert_array_equal(np.concatenate([first.samples, second.samples]), ramp[:16000])
    src.stop()
    rest = list(it)  # what was captured before stop() comes out, then iteration ends
    assert len(rest) == 1 and rest[0].t0 == 1.0
    np.testing.assert_array_equal(rest[0].samples, ramp[16000:])
    assert src.wait_released(2.0) and stream.stopped and stream.closed
    assert first.overruns == second.overruns == 0


def test_mic_overruns_counted_and_reported_per_chunk():
    block = np.full(800, 0.1, np.float32)
    script = [(block, True)] + [(block, False)] * 4  # queue holds 2 blocks: 3 dropped
    streams: list[FakeStream] = []
    src = MicSource(chunk_seconds=0.1, stream_factory=_factory(streams, script), max_queue_seconds=0.1)
    it = iter(src)
    c0 = next(it)
    assert (c0.t0, c0.samples.size, c0.overruns) == (0.0, 1600, 4)
    streams[0].feed(block, overflow=True)
    streams[0].feed(block)
    c1 = next(it)
    assert (c1.t0, c1.overruns) == (pytest.approx(0.1), 1)  # lost audio is not re-timed
    assert src.overruns == 5
    src.stop()
    assert list(it) == []
    assert src.wait_released(2.0) and streams[0].closed


def test_mic_stop_before_iteration_ends_at_once():
    streams: list[FakeStream] = []
    src = MicSource(stream_factory=_factory(streams))
    src.stop()
    assert list(src) == [] and streams == []


def test_mic_stop_from_another_thread_unblocks():
    streams: list[FakeStream] = []
    src = MicSource(stream_factory=_factory(streams), stall_seconds=30.0)
    timer = threading.Timer(0.2, src.stop)
    timer.start()
    assert list(src) == []  # blocked on the queue, woken by stop()
    timer.join()
    assert src.wait_released(2.0) and streams[0].closed


def test_mic_resamples_when_16k_refused(monkeypatch):
    monkeypatch.setattr(sources, "list_input_devices", lambda: DEVICES)
    rate = 48000
    wave = (0.3 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate)).astype(np.float32)
    script = [(wave[i:i + 2400], False) for i in range(0, rate, 2400)]
    streams: list[FakeStream] = []
    src = MicSource(chunk_seconds=0.25, stream_factory=_factory(streams, script, refuse={SR}))
    it = iter(src)
    chunks = [next(it) for _ in range(3)]
    src.stop()
    chunks += list(it)
    assert streams[0].samplerate == rate and src.sample_rate == rate
    got = np.concatenate([c.samples for c in chunks])
    expected = soxr.resample(wave, rate, SR, quality="HQ")
    assert got.size == expected.size == SR
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [c.t0 for c in chunks] == pytest.approx([0.0, 0.25, 0.5, 0.75])


def test_mic_unusable_device_is_a_device_error(monkeypatch):
    monkeypatch.setattr(sources, "list_input_devices", lambda: DEVICES)
    src = MicSource(device="headset", stream_factory=_factory([], refuse={SR}))  # default rate 16 kHz
    with pytest.raises(DeviceError, match=r"cannot open input device 5 \(USB Audio Headset\)"):
        list(src)


def test_mic_device_name_resolution(monkeypatch):
    assert resolve_input_device("usb", DEVICES)["index"] == 3  # ambiguous: the first
    assert resolve_input_device("HEADSET", DEVICES)["index"] == 5
    assert resolve_input_device("5", DEVICES)["index"] == 5
    assert resolve_input_device(0, DEVICES)["index"] == 0
    assert resolve_input_device(None, DEVICES)["index"] == 0
    with pytest.raises(DeviceError) as info:
        resolve_input_device("xyz", DEVICES)
    assert str(info.value) == "no input device matching 'xyz' (see stream-spk devices)"
    with pytest.raises(DeviceError, match="no input device with index 7"):
        resolve_input_device(7, DEVICES)

    monkeypatch.setattr(sources, "list_input_devices", lambda: DEVICES)
    streams: list[FakeStream] = []
    src = MicSource(device="Headset", stream_factory=_factory(streams))
    src.stop()  # resolve, open, then end at once
    with pytest.raises(DeviceError, match="matching 'xyz'"):
        list(MicSource(device="xyz", stream_factory=_factory(streams)))


def test_mic_device_vanishes_mid_stream():
    streams: list[FakeStream] = []
    block = np.zeros(800, np.float32)

    class Vanishing(FakeStream):
        def start(self):
            super().start()
            self.active = False  # PortAudio stopped the stream: the device is gone

    def make(device, samplerate, channels, blocksize, callback):
        s = Vanishing(device, samplerate, channels, blocksize, callback, [(block, False)])
        streams.append(s)
        return s

    src = MicSource(stream_factory=make)
    with pytest.raises(DeviceError, match="stopped delivering audio"):
        list(src)
    assert src.wait_released(2.0) and streams[0].closed


def test_mic_stall_and_start_failure():
    with pytest.raises(DeviceError, match="no audio from default input device"):
        list(MicSource(stream_factory=_factory([]), stall_seconds=0.3))

    class Broken(FakeStream):
        def start(self):
            raise OSError("Error starting stream: Device unavailable [PaErrorCode -9985]")

    with pytest.raises(DeviceError, match="cannot start default input device .*Device unavailable"):
        list(MicSource(stream_factory=lambda *a: Broken(*a)))


class _NoPortAudio(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return None


@pytest.fixture
def no_portaudio(monkeypatch):
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])


def test_portaudio_missing_is_a_device_error(no_portaudio, capsys):
    with pytest.raises(DeviceError, match="install libportaudio2"):
        sources.list_input_devices()
    with pytest.raises(DeviceError, match="install libportaudio2"):
        list(MicSource())
    assert main(["devices"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "libportaudio2" in err


def test_devices_command_lists_inputs(monkeypatch, capsys):
    monkeypatch.setattr(sources, "list_input_devices", lambda: DEVICES)
    assert main(["devices"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4
    assert out[1].startswith("*") and "HDA Intel PCH" in out[1] and "48000" in out[1]
    assert "USB Audio Headset" in out[3] and not out[3].startswith("*")


# ---------------------------------------------------------------- live sessions: hangs, flushing, devices


def _tone_pipeline():
    from fakes import EnergyScorer, ToneEmbedder

    from stream_spk.pipeline import Pipeline, PipelineConfig
    from stream_spk.vad import VadSegmenter

    config = PipelineConfig()
    return Pipeline(ToneEmbedder(), config, vad=VadSegmenter(config.vad, EnergyScorer()))


def _blocks(audio: np.ndarray, size: int = 800) -> list:
    return [(audio[i:i + size], False) for i in range(0, audio.size, size)]


class HungStream(FakeStream):
    """A stream whose sound server froze: no more callbacks, and stop/abort/close never return."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.release_called = threading.Event()
        self._never = threading.Event()

    def abort(self):
        self.release_called.set()
        self._never.wait()

    def stop(self):
        self.release_called.set()
        self._never.wait()

    def close(self):
        self._never.wait()


def _run_in_thread(runner, limit: float):
    """runner.run() on a thread; returns (finished, seconds, summary or exception)."""
    out: dict = {}

    def target():
        try:
            out["value"] = runner.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["value"] = exc

    t0 = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    return not thread.is_alive(), time.monotonic() - t0, out.get("value")


def test_frozen_sound_server_stall_never_hangs_and_writes_everything(tmp_path):
    from fakes import tone

    from stream_spk.runner import StreamRunner
    from stream_spk.sinks import RttmWriter

    audio = tone(300, 2.3)  # speech up to the moment the server froze
    streams: list = []

    def make(device, samplerate, channels, blocksize, callback):
        streams.append(HungStream(device, samplerate, channels, blocksize, callback, _blocks(audio)))
        return streams[-1]

    src = MicSource(stream_factory=make, stall_seconds=0.3)
    rttm = tmp_path / "out.rttm"
    runner = StreamRunner(src, _tone_pipeline(), [RttmWriter(rttm, "live")], release_seconds=0.2)
    finished, took, result = _run_in_thread(runner, 5.0)
    assert finished, "the run hung in the stream's stop()"
    assert isinstance(result, DeviceError) and "no audio from default input device for 0.3 s" in str(result)
    assert took < 2.0 and streams[0].release_called.is_set()
    assert not src.wait_released(0.05)  # the stuck close was abandoned on its daemon thread
    lines = rttm.read_text().splitlines()
    assert lines and float(lines[-1].split()[3]) + float(lines[-1].split()[4]) == pytest.approx(2.3, abs=0.05)
    assert runner.summary.audio_seconds == pytest.approx(2.3)  # the 0.3 s partial chunk too


def test_stop_with_a_hung_stream_returns_at_once(tmp_path):
    from stream_spk.runner import StreamRunner
    from stream_spk.sinks import RttmWriter

    streams: list = []

    def make(device, samplerate, channels, blocksize, callback):
        streams.append(HungStream(device, samplerate, channels, blocksize, callback))
        return streams[-1]

    src = MicSource(stream_factory=make, stall_seconds=30.0)
    rttm = tmp_path / "out.rttm"
    runner = StreamRunner(src, _tone_pipeline(), [RttmWriter(rttm, "live")])
    threading.Timer(0.3, runner.stop).start()  # Ctrl-C while the server is frozen
    finished, took, result = _run_in_thread(runner, 5.0)
    assert finished and not isinstance(result, BaseException)
    assert took < 2.0 and rttm.exists() and result.stopped


def test_device_lost_mid_speech_flushes_what_was_heard(tmp_path):
    from fakes import tone

    from stream_spk.runner import StreamRunner
    from stream_spk.sinks import RttmWriter

    audio = np.concatenate([tone(300, 3.2)])

    class Vanishing(FakeStream):
        def start(self):
            super().start()
            self.active = False  # unplugged right after the last block

    def make(device, samplerate, channels, blocksize, callback):
        return Vanishing(device, samplerate, channels, blocksize, callback, _blocks(audio))

    rttm = tmp_path / "out.rttm"
    runner = StreamRunner(MicSource(stream_factory=make), _tone_pipeline(), [RttmWriter(rttm, "live")])
    with pytest.raises(DeviceError, match="stopped delivering audio"):
        runner.run()
    (line,) = rttm.read_text().splitlines()
    start, dur = float(line.split()[3]), float(line.split()[4])
    assert start + dur == pytest.approx(3.2, abs=0.05)  # the last second (pending speech) is there
    assert runner.summary.audio_seconds == pytest.approx(3.2)


def test_stop_drains_the_audio_already_captured():
    from fakes import tone

    from stream_spk.runner import StreamRunner

    audio = tone(300, 4.0)  # all of it queued before the pipeline saw the first chunk
    src = MicSource(stream_factory=_factory([], _blocks(audio)), stall_seconds=30.0)
    seen = []

    def on_chunk(chunk, summary):
        seen.append(chunk.t1)
        if len(seen) == 1:
            runner.stop()  # Ctrl-C / --seconds after the first chunk

    runner = StreamRunner(src, _tone_pipeline(), on_chunk=on_chunk)
    summary = runner.run()
    assert summary.stopped and summary.audio_seconds == pytest.approx(4.0)
    assert seen[-1] == pytest.approx(4.0)


def test_ctrl_c_in_the_pipeline_still_drains_and_flushes():
    from fakes import tone

    from stream_spk.runner import StreamRunner

    audio = tone(300, 3.0)
    src = MicSource(stream_factory=_factory([], _blocks(audio)), stall_seconds=30.0)
    pipeline = _tone_pipeline()
    real = pipeline.process
    calls = []

    def process(chunk):
        calls.append(chunk.t0)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(chunk)

    pipeline.process = process
    summary = StreamRunner(src, pipeline).run()
    assert summary.stopped and calls[-1] == pytest.approx(2.5)


def test_no_sound_server_is_named_before_anything_loads(monkeypatch):
    monkeypatch.setattr(sources, "list_input_devices", lambda: [])
    with pytest.raises(DeviceError) as info:
        MicSource().open()  # the real PortAudio stream: resolved first
    text = str(info.value)
    assert "no audio input device" in text and "PulseAudio" in text and "ALSA" in text
    assert "querying device -1" not in text and "\n" not in text

    def querying(*a):
        raise RuntimeError("Error querying device -1")

    monkeypatch.setattr(sources, "list_input_devices", lambda: DEVICES)
    monkeypatch.setattr(sources, "_sounddevice_stream", querying)
    with pytest.raises(DeviceError, match="no audio input device: PortAudio sees no microphone"):
        MicSource().open()


def test_open_first_then_iterate_uses_the_opened_stream(monkeypatch):
    monkeypatch.setattr(sources, "list_input_devices", lambda: DEVICES)
    streams: list[FakeStream] = []
    src = MicSource(device="headset", stream_factory=_factory(streams, [(np.zeros(800), False)] * 10))
    src.open()
    assert len(streams) == 1 and not streams[0].started and src.device_index == 5
    it = iter(src)
    assert next(it).samples.size == 8000 and len(streams) == 1 and streams[0].started
    src.stop()
    list(it)
    closed = MicSource(stream_factory=_factory(streams)).open()
    closed.close()
    assert closed.wait_released(2.0) and streams[-1].closed


def test_a_hung_open_is_a_device_error():
    never = threading.Event()

    def make(*a):
        never.wait()

    t0 = time.monotonic()
    with pytest.raises(DeviceError, match="sound server"):
        MicSource(stream_factory=make, open_timeout=0.3).open()
    assert time.monotonic() - t0 < 2.0


def test_live_resolves_the_device_before_the_model(monkeypatch, capsys):
    from stream_spk.cli import live_cmd

    built = []
    monkeypatch.setattr("stream_spk.session.build_pipeline", lambda *a, **k: built.append(1))
    monkeypatch.setattr(sources, "list_input_devices", lambda: DEVICES)
    monkeypatch.setattr(live_cmd, "make_mic", lambda device: MicSource(device, stream_factory=_factory([])))
    assert main(["live", "--no-profiles", "--device", "nothing-like-this"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no input device matching 'nothing-like-this'" in err[0]
    assert built == []  # the model was never loaded


def test_enroll_mic_resolves_the_device_before_store_and_model(monkeypatch, tmp_path, capsys):
    from stream_spk.cli import enroll_cmd

    loaded = []
    monkeypatch.setattr(enroll_cmd, "make_embedder", lambda args: loaded.append(1))
    monkeypatch.setattr(sources, "list_input_devices", lambda: DEVICES)
    monkeypatch.setattr(enroll_cmd, "make_mic", lambda device: MicSource(device, stream_factory=_factory([])))
    store = tmp_path / "p.sqlite3"
    assert main(["enroll", "Anna", "--mic", "--device", "9", "--profiles", str(store)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no input device with index 9" in err[0]
    assert loaded == [] and not store.exists()


def test_enroll_counts_captured_audio_from_the_first_sample(monkeypatch, capsys):
    """A device that takes 1.5 s to open: the prompt comes when audio flows, the seconds are samples."""
    from stream_spk.cli import enroll_cmd

    log: list[str] = []
    clock = [0.0]

    class SlowMic:
        def __iter__(self):
            clock[0] += 1.5  # opening the device
            log.append("audio flows")
            for k in range(10):
                clock[0] += 0.5
                yield sources.AudioChunk(np.full(8000, 0.1, np.float32), k * 0.5)

        def stop(self):
            log.append("stop")

    class Err:
        def write(self, text):
            if text.strip():
                log.append(text.strip())

        def flush(self):
            pass

        def isatty(self):
            return False

    monkeypatch.setattr(sys, "stderr", Err())
    samples, _ = enroll_cmd.record(SlowMic(), 3.0, show=False, announce="please speak now")
    assert samples.size == 3 * SR  # three seconds of audio, not three seconds of wall clock
    assert log.index("audio flows") < log.index("please speak now")


def test_live_seconds_counts_captured_audio(monkeypatch, tmp_path, capsys):
    from fakes import tone

    from stream_spk.cli import live_cmd

    monkeypatch.setattr("stream_spk.session.build_pipeline", lambda *a, **k: _tone_pipeline())
    audio = tone(300, 5.0)
    monkeypatch.setattr(live_cmd, "make_mic",
                        lambda device: MicSource(device, stream_factory=_factory([], _blocks(audio)),
                                                 stall_seconds=30.0, max_queue_seconds=10.0))
    rttm = tmp_path / "live.rttm"
    assert main(["live", "--no-profiles", "--seconds", "2", "--rttm", str(rttm), "--quiet"]) == 0
    # stopped after 2 s of audio; what was already captured (the rest of the 5 s) is analysed too
    (line,) = rttm.read_text().splitlines()
    assert float(line.split()[3]) + float(line.split()[4]) == pytest.approx(5.0, abs=0.05)


# ---------------------------------------------------------------- the live console


def _turn(tid, start, end, label="speaker 1", status="final"):
    from stream_spk.types import SpeakerTurn

    return SpeakerTurn(tid, start, end, label, 0.9, status, end)


class TtyIO(io.StringIO):
    def isatty(self):
        return True


def test_live_console_on_a_terminal_shows_the_current_speaker_in_place():
    from stream_spk.cli.live_cmd import LiveConsoleView
    from stream_spk.types import SpeechEnd, SpeechStart

    out = TtyIO()
    view = LiveConsoleView(out, color=False)
    assert view.live
    view.handle([SpeechStart(0.2), _turn(-1, 0.2, 1.0, status="provisional")])
    assert out.getvalue().endswith("\r\x1b[K   1.00  now: speaker 1 (speaking since 0.20 s, provisional)")
    assert "\n" not in out.getvalue()  # nothing final yet: only the status line
    view.handle([_turn(1, 0.2, 0.7), _turn(-1, 0.7, 1.2, status="provisional")])
    assert out.getvalue().endswith("now: speaker 1 (speaking since 0.20 s, provisional)")  # the same turn
    view.handle([_turn(1, 0.2, 1.0), _turn(-1, 1.0, 1.5, "speaker 2", "provisional")])
    assert out.getvalue().endswith("now: speaker 2 (speaking since 1.00 s, provisional)")
    # the speech region ends; once its last piece is final the turn is printed, without waiting
    view.handle([SpeechEnd(2.0), _turn(1, 0.2, 1.5), _turn(2, 1.5, 2.0, "speaker 2")])
    text = out.getvalue()
    assert "   0.20 -   1.50  speaker 1" in text and "   1.50 -   2.00  speaker 2" in text
    assert text.endswith("\r\x1b[K   2.00  now: silence")
    view.close()
    assert out.getvalue().endswith("\r\x1b[K")
    assert out.getvalue().count("speaker 2   (0.90)") == 1


def test_live_console_elsewhere_prints_plain_lines():
    from stream_spk.cli.live_cmd import LiveConsoleView
    from stream_spk.types import SpeechEnd

    out = io.StringIO()
    view = LiveConsoleView(out)
    assert not view.live
    view.handle([_turn(1, 0.0, 1.0), _turn(-1, 1.0, 1.5, status="provisional")])
    view.handle([SpeechEnd(1.5), _turn(1, 0.0, 1.5), _turn(2, 2.0, 2.5, "speaker 2")])
    view.close()
    assert "\r" not in out.getvalue() and "now:" not in out.getvalue()
    assert out.getvalue().splitlines() == ["   0.00 -   1.50  speaker 1   (0.90)",
                                           "   2.00 -   2.50  speaker 2   (0.90)"]


def test_native_noise_is_filtered_from_stderr_and_the_rest_kept(capfd):
    with sources.quiet_native_output():
        os.write(2, b"kept 1\n")
        os.write(2, b"Expression 'alsa_snd_pcm_poll_descriptors_revents( self->pcm )' failed in "
                    b"'src/hostapi/alsa/pa_linux_alsa.c', line: 3665\n")
        os.write(2, b"ALSA lib pcm.c:2666:(snd_pcm_open_noupdate) Unknown PCM cards.pcm.rear\n")
        os.write(2, b"kept 2\n")
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert err == "kept 1\nkept 2\nafter\n"
