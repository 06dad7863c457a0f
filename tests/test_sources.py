"""FileSource and MicSource: chunking, resampling, pacing, bad input, and a fake sound card."""

from __future__ import annotations

import importlib.abc
import sys
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import soxr

from stream_spk import sources
from stream_spk.audio import wav_declared_frames
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
    assert stream.stopped and stream.closed
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
    assert streams[0].closed


def test_mic_stop_before_iteration_ends_at_once():
    streams: list[FakeStream] = []
    src = MicSource(stream_factory=_factory(streams))
    src.stop()
    assert list(src) == [] and streams == []


def test_mic_stop_from_another_thread_unblocks():
    import threading

    streams: list[FakeStream] = []
    src = MicSource(stream_factory=_factory(streams), stall_seconds=30.0)
    timer = threading.Timer(0.2, src.stop)
    timer.start()
    assert list(src) == []  # blocked on the queue, woken by stop()
    timer.join()
    assert streams[0].closed


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

    with pytest.raises(DeviceError, match="stopped delivering audio"):
        list(MicSource(stream_factory=make))
    assert streams[0].closed


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
