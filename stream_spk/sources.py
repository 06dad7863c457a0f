"""Audio sources: a file replayed as if live, or a microphone; both yield 16 kHz mono AudioChunks.

Resampling and downmixing happen here, at the edge, so the rest of the pipeline only ever sees
``SAMPLE_RATE`` mono float32. sounddevice (PortAudio) is imported lazily: file replay works
without it.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stream_spk.audio import audio_info, to_mono, wav_declared_frames
from stream_spk.errors import AudioError, DeviceError, StreamSpkError
from stream_spk.types import SAMPLE_RATE, AudioChunk

StreamFactory = Callable[[Any, int, int, int, Callable[..., None]], Any]
"""``(device, samplerate, channels, blocksize, callback) -> stream`` with start/stop/close."""

_MIC_BLOCK_SECONDS = 0.05  # PortAudio callback block: 50 ms
_STOP = object()  # queue sentinel that wakes a blocked iterator on stop()


def _check_chunk_seconds(chunk_seconds: float) -> int:
    if not chunk_seconds > 0:
        raise StreamSpkError(f"chunk length must be > 0 seconds (got {chunk_seconds})")
    return max(1, round(chunk_seconds * SAMPLE_RATE))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def _resampler(rate: int):
    """A streaming soxr resampler from ``rate`` to 16 kHz, or None when none is needed."""
    if rate == SAMPLE_RATE:
        return None
    import soxr

    return soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")


class _Chunker:
    """Cuts a stream of sample blocks into fixed-size chunks with consecutive stream times."""

    def __init__(self, chunk_samples: int) -> None:
        self.chunk_samples = chunk_samples
        self._parts: list[np.ndarray] = []
        self._pending = 0
        self._emitted = 0  # samples handed out so far: t0 of the next chunk

    def push(self, samples: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Add samples; return the (samples, t0) chunks that are now complete."""
        if samples.size:
            self._parts.append(samples)
            self._pending += samples.size
        out = []
        if self._pending >= self.chunk_samples:
            buf = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
            n_full = buf.size // self.chunk_samples
            for k in range(n_full):
                out.append(self._take(buf[k * self.chunk_samples:(k + 1) * self.chunk_samples]))
            rest = buf[n_full * self.chunk_samples:]
            self._parts = [rest] if rest.size else []
            self._pending = rest.size
        return out

    def flush(self) -> tuple[np.ndarray, float] | None:
        """The last, possibly short chunk (None when nothing is pending)."""
        if not self._pending:
            return None
        buf = np.concatenate(self._parts)
        self._parts, self._pending = [], 0
        return self._take(buf)

    def _take(self, samples: np.ndarray) -> tuple[np.ndarray, float]:
        t0 = self._emitted / SAMPLE_RATE
        self._emitted += samples.size
        return np.ascontiguousarray(samples, dtype=np.float32), t0


class FileSource:
    """Replays an audio file as a stream of 16 kHz mono :class:`AudioChunk`.

    The file is read in blocks (memory stays flat on long files), downmixed by averaging its
    channels and resampled with a streaming soxr resampler. ``speed=1.0`` paces chunks in real
    time, ``speed=X`` X times faster, ``speed=None`` as fast as possible. Chunk ``k`` is released
    no earlier than ``start + t1_k / speed`` on the injected ``clock``. Non-finite samples are
    replaced by 0 and counted in ``nonfinite_samples`` (values over all channels).
    """

    def __init__(self, path: str | os.PathLike, chunk_seconds: float = 0.5, speed: float | None = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.path = Path(path)
        self.chunk_samples = _check_chunk_seconds(chunk_seconds)
        if speed is not None and not (speed > 0 and math.isfinite(speed)):
            raise StreamSpkError(f"replay speed must be a positive number (got {speed})")
        self.speed = speed
        self._clock = clock
        self._sleep = sleep
        info = audio_info(self.path)
        self.sample_rate: int = int(info.samplerate)
        self.channels: int = int(info.channels)
        self.frames: int = max(0, int(info.frames))
        self.duration: float = self.frames / self.sample_rate if self.sample_rate else 0.0
        declared = wav_declared_frames(self.path)
        #: Seconds the WAV header promised when the file holds fewer (a cut recording), else None.
        self.declared_duration: float | None = (
            declared / self.sample_rate if declared and declared > self.frames and self.sample_rate else None)
        self.nonfinite_samples = 0

    def warnings(self) -> list[str]:
        """One-line notes on what was wrong with the file but still used (after or before a run)."""
        notes = []
        if self.declared_duration is not None:
            notes.append(f"{self.path}: truncated: the header promises {self.declared_duration:.2f} s, "
                         f"the file holds {self.duration:.2f} s; used what is there")
        if self.nonfinite_samples:
            notes.append(f"{self.path}: {self.nonfinite_samples} NaN or infinite sample value(s) "
                         "replaced by silence")
        return notes

    def __iter__(self) -> Iterator[AudioChunk]:
        self.nonfinite_samples = 0
        start: float | None = None
        for samples, t0 in self._chunks():
            chunk = AudioChunk(samples, t0)
            if self.speed is not None:
                if start is None:
                    start = self._clock()
                wait = start + chunk.t1 / self.speed - self._clock()
                if wait > 0:
                    self._sleep(wait)
            yield chunk

    def _chunks(self) -> Iterator[tuple[np.ndarray, float]]:
        import soundfile as sf

        if self.frames == 0:
            return
        chunker = _Chunker(self.chunk_samples)
        resampler = _resampler(self.sample_rate)
        block_frames = max(1, math.ceil(self.chunk_samples * self.sample_rate / SAMPLE_RATE))
        try:
            fh = sf.SoundFile(str(self.path))
        except Exception as exc:
            raise AudioError(f"{self.path}: not a readable audio file ({_reason(exc)})") from None
        read_frames = 0
        with fh:
            while True:
                try:
                    block = fh.read(block_frames, dtype="float32", always_2d=True)
                except Exception as exc:
                    at = read_frames / self.sample_rate
                    raise AudioError(f"{self.path}: cannot decode audio at {at:.2f} s "
                                     f"({_reason(exc)})") from None
                last = block.shape[0] < block_frames
                read_frames += block.shape[0]
                bad = ~np.isfinite(block)
                if bad.any():
                    self.nonfinite_samples += int(bad.sum())
                    block = np.where(bad, np.float32(0), block)
                mono = to_mono(block)
                if resampler is not None:
                    mono = resampler.resample_chunk(mono, last=last)
                yield from chunker.push(mono)
                if last:
                    break
        tail = chunker.flush()
        if tail is not None:
            yield tail


def _import_sounddevice():
    """The sounddevice module, or a :class:`DeviceError` saying what to install."""
    try:
        import sounddevice
    except OSError as exc:
        raise DeviceError(f"PortAudio library not found ({_reason(exc)}): install libportaudio2 "
                          "(e.g. apt install libportaudio2)") from None
    except ImportError:
        raise DeviceError("the sounddevice package is not installed: pip install 'stream-spk[mic]'") \
            from None
    return sounddevice


def list_input_devices() -> list[dict]:
    """Input-capable audio devices: index, name, channels, default_samplerate, is_default."""
    sd = _import_sounddevice()
    try:
        devices = sd.query_devices()
        default = sd.default.device
    except Exception as exc:
        raise DeviceError(f"cannot list audio devices ({_reason(exc)})") from None
    try:
        default_in = int(default[0])
    except (TypeError, ValueError, IndexError):
        default_in = -1
    out = []
    for index, dev in enumerate(devices):
        channels = int(dev["max_input_channels"])
        if channels > 0:
            out.append({"index": index, "name": str(dev["name"]), "channels": channels,
                        "default_samplerate": float(dev["default_samplerate"]),
                        "is_default": index == default_in})
    return out


def resolve_input_device(device: int | str | None, devices: list[dict]) -> dict | None:
    """The input device an index or case-insensitive name substring names (None: the default).

    An ambiguous name picks the first match. Raises :class:`DeviceError` when nothing matches.
    """
    if device is None:
        return next((d for d in devices if d["is_default"]), None)
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device.strip())
    if isinstance(device, int):
        for d in devices:
            if d["index"] == device:
                return d
        raise DeviceError(f"no input device with index {device} (see stream-spk devices)")
    needle = str(device).casefold()
    for d in devices:
        if needle in d["name"].casefold():
            return d
    raise DeviceError(f"no input device matching {device!r} (see stream-spk devices)")


NO_INPUT_DEVICE = ("no audio input device: PortAudio sees no microphone and no sound server (ALSA has no "
                   "capture device; PulseAudio/PipeWire is not running or not reachable); connect a microphone "
                   "or start the sound server (e.g. `pulseaudio --start`), then check `stream-spk devices`")


def _sounddevice_stream(device: Any, samplerate: int, channels: int, blocksize: int,
                        callback: Callable[..., None]) -> Any:
    sd = _import_sounddevice()
    return sd.InputStream(device=device, samplerate=samplerate, channels=channels, blocksize=blocksize,
                          dtype="float32", callback=callback)


def _bounded(fn: Callable[[], Any], timeout: float, name: str) -> Any:
    """``fn()`` on a daemon thread, waited for at most ``timeout`` seconds.

    A call into PortAudio can block for ever when the sound server hangs (a stopped PulseAudio):
    such a call is abandoned on its thread and :class:`TimeoutError` raised here instead.
    """
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller
            result["error"] = exc

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer from the audio system within {timeout:g} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def _is_no_device(exc: BaseException) -> bool:
    return "querying device -1" in str(exc)


class MicSource:
    """Live microphone audio as 16 kHz mono :class:`AudioChunk` (one-shot iterable).

    The PortAudio callback only copies each block into a bounded queue; a full queue or an
    input overflow counts as an overrun, reported in the next chunk's ``overruns``. ``t0``
    advances by the samples delivered (lost audio is not re-timed). ``device`` is an index, a
    name substring or None (the default input). ``stream_factory(device, samplerate, channels,
    blocksize, callback)`` replaces sounddevice's InputStream (tests).

    ``open()`` resolves the device and opens the stream (not started) so device problems show
    before a model loads; iterating opens it when that was not done. ``stop()`` (any thread) ends
    the iteration after the audio captured so far has been yielded. No audio for
    ``stall_seconds``, or a stream that stops, raises :class:`DeviceError` after the audio
    already captured (the last partial chunk included) has been yielded. The stream is stopped
    and closed on a daemon thread (``wait_released()`` waits for it, bounded): a hung sound
    server can never block the caller.
    """

    def __init__(self, device: int | str | None = None, chunk_seconds: float = 0.5,
                 stream_factory: StreamFactory | None = None, max_queue_seconds: float = 10.0,
                 stall_seconds: float = 5.0, open_timeout: float = 5.0) -> None:
        self.device = device
        self.chunk_samples = _check_chunk_seconds(chunk_seconds)
        self._factory = stream_factory or _sounddevice_stream
        self._max_queue_seconds = max_queue_seconds
        self._stall_seconds = stall_seconds
        self._open_timeout = open_timeout
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._stopped = threading.Event()
        self._overruns_total = 0  # written by the callback thread only
        self._blocks = 0  # callback blocks received (callback thread only)
        self._stream: Any = None  # opened, not yet iterated
        self._releaser: threading.Thread | None = None
        self.overruns = 0  # overruns reported so far
        self.sample_rate: int | None = None  # rate the stream was opened at
        self.device_name = "default input device"
        self.device_index: int | None = None  # the resolved device (when resolved)

    @property
    def stopping(self) -> bool:
        return self._stopped.is_set()

    @property
    def native(self) -> bool:
        """True when the stream is a real PortAudio stream (not an injected one)."""
        return self._factory is _sounddevice_stream

    def stop(self) -> None:
        """End the iteration once the audio captured so far is out (any thread)."""
        self._stopped.set()
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            pass  # the iterator polls the flag after each get

    def queued_seconds(self) -> float:
        """Captured audio not handed out yet (approximate)."""
        rate = self.sample_rate or SAMPLE_RATE
        return self._queue.qsize() * round(rate * _MIC_BLOCK_SECONDS) / rate

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status is not None and getattr(status, "input_overflow", False):
            self._overruns_total += 1
        self._blocks += 1
        try:
            self._queue.put_nowait(np.array(indata, dtype=np.float32, copy=True))
        except queue.Full:
            self._overruns_total += 1

    def _resolve(self) -> Any:
        if self.device is None and not self.native:
            return None
        devices = list_input_devices()
        if self.device is None and not devices:
            raise DeviceError(NO_INPUT_DEVICE)
        dev = resolve_input_device(self.device, devices)
        if dev is None:  # inputs exist, but PortAudio names none as the default
            raise DeviceError("no default audio input device; choose one with --device "
                              f"(stream-spk devices lists {len(devices)})")
        self.device_index = int(dev["index"])
        prefix = "default input device" if self.device is None else "input device"
        self.device_name = f"{prefix} {dev['index']} ({dev['name']})"
        return None if self.device is None else dev["index"]

    def _default_rate(self, device: Any) -> int | None:
        try:
            dev = resolve_input_device(device, list_input_devices())
        except DeviceError:
            return None
        return int(dev["default_samplerate"]) if dev else None

    def open(self) -> MicSource:
        """Resolve the device and open its stream now (idempotent); raises :class:`DeviceError`."""
        if self._stream is None:
            self._stream = self._open()
        return self

    def close(self) -> None:
        """Release a stream that was opened but never iterated (iteration releases its own)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            self._release(stream)

    def _open(self) -> Any:
        device = self._resolve()
        try:
            return self._open_at(device, SAMPLE_RATE)
        except Exception as first:
            if _is_no_device(first):
                raise DeviceError(NO_INPUT_DEVICE) from None
            if isinstance(first, TimeoutError):
                raise DeviceError(f"cannot open {self.device_name} ({_reason(first)}); is the sound "
                                  "server (PulseAudio/PipeWire) hung? restart it and try again") from None
            rate = self._default_rate(device)
            if rate is None or rate == SAMPLE_RATE:
                raise DeviceError(f"cannot open {self.device_name} ({_reason(first)})") from None
        try:
            return self._open_at(device, rate)
        except Exception as exc:
            raise DeviceError(f"cannot open {self.device_name} at 16000 or {rate} Hz "
                              f"({_reason(exc)})") from None

    def _open_at(self, device: Any, rate: int) -> Any:
        block = max(1, round(rate * _MIC_BLOCK_SECONDS))
        self._queue = queue.Queue(maxsize=max(2, math.ceil(self._max_queue_seconds / _MIC_BLOCK_SECONDS)))
        stream = _bounded(lambda: self._factory(device, rate, 1, block, self._callback), self._open_timeout,
                          "stream-spk-mic-open")
        self.sample_rate = rate
        return stream

    def _release(self, stream: Any) -> None:
        """Stop (abort) and close ``stream`` on a daemon thread; never waits for it."""
        def release() -> None:
            stopper = getattr(stream, "abort", None) or getattr(stream, "stop", None)
            for method in (stopper, getattr(stream, "close", None)):
                if method is None:
                    continue
                try:
                    method()
                except Exception:
                    pass  # a vanished device cannot be stopped cleanly; nothing more to do

        self._releaser = threading.Thread(target=release, name="stream-spk-mic-release", daemon=True)
        self._releaser.start()

    def wait_released(self, timeout: float = 1.0) -> bool:
        """Wait up to ``timeout`` s for the stream to be closed; False when the audio system hangs
        (the closing thread is then abandoned: it is a daemon and never delays the exit)."""
        releaser = self._releaser
        if releaser is None:
            return True
        releaser.join(timeout)
        return not releaser.is_alive()

    def __iter__(self) -> Iterator[AudioChunk]:
        if self._stopped.is_set():
            self.close()
            return
        stream, self._stream = self._stream or self._open(), None
        try:
            try:
                _bounded(stream.start, self._open_timeout, "stream-spk-mic-start")
            except Exception as exc:
                raise DeviceError(f"cannot start {self.device_name} ({_reason(exc)})") from None
            yield from self._read(stream)
        finally:
            self._release(stream)

    def _read(self, stream: Any) -> Iterator[AudioChunk]:
        chunker = _Chunker(self.chunk_samples)
        resampler = _resampler(int(self.sample_rate or SAMPLE_RATE))
        poll = min(0.1, self._stall_seconds)
        silent_since = time.monotonic()
        drain: int | None = None  # blocks still to take after stop()
        error: DeviceError | None = None
        while True:
            if self._stopped.is_set():
                if drain is None:
                    drain = self._queue.qsize()  # what was captured before stop(), no more
                block = self._get_nowait() if drain > 0 else None
                if block is None:
                    break
                drain -= 1
            else:
                try:
                    block = self._queue.get(timeout=poll)
                except queue.Empty:
                    try:
                        self._check_alive(stream, silent_since)
                    except DeviceError as exc:
                        error = exc  # yield what was heard first, then report
                        break
                    continue
                if block is _STOP:
                    continue  # the flag is set: drain, then end
                silent_since = time.monotonic()
            mono = to_mono(block)
            if resampler is not None:
                mono = resampler.resample_chunk(mono)
            for samples, t0 in chunker.push(mono):
                yield self._chunk(samples, t0)
        ready = []
        if resampler is not None:
            ready = chunker.push(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        tail = chunker.flush()
        for samples, t0 in ready + ([] if tail is None else [tail]):
            yield self._chunk(samples, t0)
        if error is not None:
            raise error

    def _get_nowait(self) -> np.ndarray | None:
        """The next queued block, skipping stop sentinels; None when the queue is empty."""
        while True:
            try:
                block = self._queue.get_nowait()
            except queue.Empty:
                return None
            if block is not _STOP:
                return block

    def _chunk(self, samples: np.ndarray, t0: float) -> AudioChunk:
        total = self._overruns_total
        new, self.overruns = total - self.overruns, total
        return AudioChunk(samples, t0, overruns=new)

    def _check_alive(self, stream: Any, silent_since: float) -> None:
        try:
            active = bool(getattr(stream, "active", True))
        except Exception as exc:
            raise DeviceError(f"{self.device_name} failed ({_reason(exc)}; was it disconnected?)") \
                from None
        if not active and not self._stopped.is_set():
            raise DeviceError(f"{self.device_name} stopped delivering audio (was it disconnected?)")
        if time.monotonic() - silent_since > self._stall_seconds:
            what = "the sound server stopped answering or the device was disconnected" if self._blocks \
                else "is the device muted, busy or disconnected?"
            raise DeviceError(f"no audio from {self.device_name} for {self._stall_seconds:g} s ({what})")


_NATIVE_NOISE = (b"ALSA lib ", b"Expression '", b"PaAlsaStream", b"Cannot connect to server")


def _strip_noise(lines: list[bytes]) -> bytes:
    return b"".join(line for line in lines if not line.startswith(_NATIVE_NOISE))


class quiet_native_output:
    """Hide what the C audio libraries print on stderr while a device fails (PortAudio's
    ``Expression '...' failed in 'src/hostapi/...'``, ``ALSA lib ...``), so the user sees our
    one-line message instead. Each descriptor in ``fds`` goes through a pipe whose reader forwards
    everything else, in order (Python's own output passes through it too). Restored on exit, the
    readers drained first. Check ``isatty()`` before entering: inside, the descriptors are pipes.
    """

    def __init__(self, enabled: bool = True, fds: tuple[int, ...] = (2,)) -> None:
        self.enabled = enabled
        self.fds = fds
        self._saved: dict[int, int] = {}
        self._readers: list[threading.Thread] = []

    def __enter__(self) -> quiet_native_output:
        if not self.enabled:
            return self
        self._flush()
        for fd in self.fds:
            try:
                saved = os.dup(fd)
                read_fd, write_fd = os.pipe()
                os.dup2(write_fd, fd)
                os.close(write_fd)
            except (OSError, ValueError):
                continue  # no usable descriptor: nothing to filter there
            self._saved[fd] = saved
            reader = threading.Thread(target=self._forward, args=(read_fd, saved), daemon=True,
                                      name=f"stream-spk-fd{fd}")
            reader.start()
            self._readers.append(reader)
        return self

    @staticmethod
    def _flush() -> None:
        import sys

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass

    @staticmethod
    def _forward(read_fd: int, out_fd: int) -> None:
        pending = b""
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while True:
                data = pipe.read(65536)
                if not data:
                    break
                pending += data
                *complete, pending = pending.split(b"\n")
                lines = [line + b"\n" for line in complete]
                if pending and not pending.startswith(_NATIVE_NOISE):
                    lines.append(pending)  # a line rewritten in place (a progress bar): pass it on now
                    pending = b""
                kept = _strip_noise(lines)
                if kept:
                    try:
                        os.write(out_fd, kept)
                    except OSError:
                        pass
        kept = _strip_noise([pending])
        if kept:
            try:
                os.write(out_fd, kept)
            except OSError:
                pass

    def __exit__(self, *exc: object) -> None:
        if not self._saved:
            return
        self._flush()
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)  # the pipe's last writer is gone: its reader drains it and ends
        for reader in self._readers:
            reader.join(1.0)
        for saved in self._saved.values():
            os.close(saved)
        self._saved, self._readers = {}, []
