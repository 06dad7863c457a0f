"""Streaming voice activity detection: frame scorers (silero-vad, webrtcvad) and a segmenter
with hysteresis, hangover and minimum durations.

The segmenter is a plain object fed 16 kHz samples; it returns *decided* spans that tile the
stream, and never decides a frame later than ``lookahead`` seconds after it was heard.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from stream_spk.errors import StreamSpkError
from stream_spk.types import SAMPLE_RATE

Backend = Literal["silero", "webrtc"]


@dataclass(frozen=True)
class VadConfig:
    """Voice activity settings; the defaults were chosen on the dev set (see README)."""

    backend: Backend = "silero"
    threshold: float = 0.35  # speech starts when a frame scores >= threshold (silero; dev-set choice)
    neg_threshold: float | None = None  # ... and continues while >= this (default threshold - 0.15)
    webrtc_mode: int = 2  # webrtcvad aggressiveness 0..3
    webrtc_frame_ms: int = 30  # 10, 20 or 30
    min_speech: float = 0.25  # seconds of speech needed before a region is declared
    min_silence: float = 0.3  # hangover: seconds of non-speech that end a region

    @property
    def offset(self) -> float:
        return self.threshold - 0.15 if self.neg_threshold is None else self.neg_threshold

    @property
    def frame_samples(self) -> int:
        return 512 if self.backend == "silero" else SAMPLE_RATE * self.webrtc_frame_ms // 1000

    @property
    def lookahead(self) -> float:
        """Longest delay (s) between hearing a frame and deciding it."""
        return max(self.min_speech, self.min_silence) + 2 * self.frame_samples / SAMPLE_RATE


class FrameScorer(Protocol):
    """Scores consecutive fixed-size frames with a speech probability in [0, 1]."""

    frame_samples: int

    def score(self, frames: np.ndarray) -> np.ndarray:
        """frames [N, frame_samples] float32 (consecutive) -> probabilities [N]."""

    def reset(self) -> None:
        """Forget all state (a new stream)."""


class WebRtcScorer:
    """webrtcvad decisions (0 or 1) on 10/20/30 ms frames."""

    def __init__(self, mode: int = 2, frame_ms: int = 30) -> None:
        import webrtcvad

        if frame_ms not in (10, 20, 30):
            raise StreamSpkError(f"webrtcvad frame size must be 10, 20 or 30 ms, not {frame_ms}")
        if mode not in (0, 1, 2, 3):
            raise StreamSpkError(f"webrtcvad aggressiveness must be 0..3, not {mode}")
        self._vad = webrtcvad.Vad(mode)
        self.frame_samples = SAMPLE_RATE * frame_ms // 1000

    def score(self, frames: np.ndarray) -> np.ndarray:
        pcm = (np.clip(frames, -1.0, 1.0) * 32767).astype("<i2")
        return np.array([float(self._vad.is_speech(f.tobytes(), SAMPLE_RATE)) for f in pcm], np.float32)

    def reset(self) -> None:
        pass


def silero_model_path() -> Path:
    """Location of the silero-vad TorchScript model shipped in its PyPI package.

    The package is located without being imported: importing ``silero_vad`` calls
    ``torch.set_num_threads(1)``, which would slow every other model in the process.
    """
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise StreamSpkError("silero-vad is not installed (pip install silero-vad), or use --vad webrtc")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.jit"
    if not path.is_file():
        raise StreamSpkError(f"silero-vad model file missing at {path}; reinstall silero-vad")
    return path


class SileroScorer:
    """silero-vad v5 (MIT) on 512-sample frames, evaluated many frames per call.

    The network (STFT conv -> 4 convs -> LSTM cell -> 1x1 conv) is rebuilt in eager torch from
    the weights of the TorchScript file in the silero-vad package: TorchScript re-specialises on
    every new input shape, which made variable-size calls ~20x slower. The per-frame encoder runs
    batched over all new frames and the LSTM over the whole sequence in one call; the
    probabilities equal the frame-by-frame reference (max abs difference ~3e-6).
    """

    frame_samples = 512
    context = 64

    def __init__(self) -> None:
        import torch

        jit = torch.jit.load(str(silero_model_path()), map_location="cpu")
        params = {k: v.detach().clone() for k, v in jit._model.named_parameters()}
        self._torch = torch
        self._basis = jit._model.stft.forward_basis_buffer.detach().clone()  # [258, 1, 256]
        self._convs = []
        for i, stride in enumerate((1, 2, 2, 1)):
            self._convs.append((params[f"encoder.{i}.reparam_conv.weight"],
                                params[f"encoder.{i}.reparam_conv.bias"], stride))
        hidden = params["decoder.rnn.weight_hh"].shape[1]
        self._lstm = torch.nn.LSTM(params["decoder.rnn.weight_ih"].shape[1], hidden, batch_first=True)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(self._lstm, f"{name}_l0").copy_(params[f"decoder.rnn.{name}"])
        self._lstm.eval()
        self._out_w, self._out_b = params["decoder.decoder.2.weight"], params["decoder.decoder.2.bias"]
        self.reset()

    def reset(self) -> None:
        self._tail = np.zeros(self.context, np.float32)
        self._state: tuple | None = None

    def score(self, frames: np.ndarray) -> np.ndarray:
        torch = self._torch
        F = torch.nn.functional
        n = frames.shape[0]
        if n == 0:
            return np.zeros(0, np.float32)
        flat = np.concatenate([self._tail, frames.reshape(-1)])
        self._tail = flat[-self.context :].copy()
        # frame i = 64 samples of context + its own 512 samples
        idx = np.arange(n)[:, None] * self.frame_samples + np.arange(self.context + self.frame_samples)[None]
        with torch.inference_mode():
            x = F.pad(torch.from_numpy(flat[idx]), (0, self.context), mode="reflect")[:, None, :]
            spec = F.conv1d(x, self._basis, stride=128)
            half = spec.shape[1] // 2
            x = (spec[:, :half].square() + spec[:, half:].square()).sqrt()
            for weight, bias, stride in self._convs:
                x = F.relu(F.conv1d(x, weight, bias, stride=stride, padding=1))
            seq, self._state = self._lstm(x[:, :, 0][None], self._state)
            probs = torch.sigmoid(F.conv1d(F.relu(seq[0])[:, :, None], self._out_w, self._out_b))
        return probs.reshape(n).numpy().astype(np.float32)


def make_scorer(config: VadConfig) -> FrameScorer:
    """The frame scorer of ``config.backend``."""
    if config.backend == "silero":
        return SileroScorer()
    if config.backend == "webrtc":
        return WebRtcScorer(config.webrtc_mode, config.webrtc_frame_ms)
    raise StreamSpkError(f"unknown VAD backend {config.backend!r} (silero or webrtc)")


class VadSegmenter:
    """Streaming speech/non-speech decisions with hysteresis and minimum durations.

    ``process(samples)`` returns newly decided spans ``(start, end, is_speech)`` in samples,
    contiguous and in order; ``decided_until`` is the end of the last one. ``speech_prob`` holds
    the latest frame probabilities for display (level/VAD strips).

    Example:
        >>> seg = VadSegmenter(VadConfig(backend="webrtc"))
        >>> seg.process(np.zeros(16000, np.float32))[-1]
        (0, 15840, False)
    """

    def __init__(self, config: VadConfig | None = None, scorer: FrameScorer | None = None) -> None:
        self.config = config or VadConfig()
        self.scorer = scorer or make_scorer(self.config)
        self.frame = self.scorer.frame_samples
        self._min_speech = int(round(self.config.min_speech * SAMPLE_RATE / self.frame))
        self._min_silence = max(1, int(round(self.config.min_silence * SAMPLE_RATE / self.frame)))
        self.reset()

    def reset(self) -> None:
        self.scorer.reset()
        self._rest = np.zeros(0, np.float32)
        self._frames_seen = 0
        self.decided_until = 0
        self.in_speech = False
        self._run = 0  # candidate speech frames (silence state) or quiet frames (speech state)
        self.last_probs = np.zeros(0, np.float32)

    def _decide(self, until_frame: int, speech: bool, out: list) -> None:
        end = until_frame * self.frame
        if end <= self.decided_until:
            return
        if out and out[-1][2] == speech and out[-1][1] == self.decided_until:
            out[-1] = (out[-1][0], end, speech)
        else:
            out.append((self.decided_until, end, speech))
        self.decided_until = end

    def process(self, samples: np.ndarray) -> list[tuple[int, int, bool]]:
        data = np.concatenate([self._rest, samples.astype(np.float32, copy=False)])
        n = data.size // self.frame
        self._rest = data[n * self.frame :]
        probs = self.scorer.score(data[: n * self.frame].reshape(n, self.frame))
        self.last_probs = probs
        out: list[tuple[int, int, bool]] = []
        onset, offset = self.config.threshold, self.config.offset
        for p in probs:
            f = self._frames_seen  # index of this frame
            self._frames_seen += 1
            if not self.in_speech:
                if self._run == 0:
                    if p >= onset:
                        self._decide(f, False, out)  # everything before the candidate is silence
                        self._run = 1
                    else:
                        self._decide(f + 1, False, out)
                elif p >= offset:
                    self._run += 1
                else:
                    self._run = 0  # too short: the candidate was noise
                    self._decide(f + 1, False, out)
                if self._run and self._run >= max(1, self._min_speech):
                    self.in_speech, self._run = True, 0
                    self._decide(f + 1, True, out)
            elif p >= offset:
                self._run = 0
                self._decide(f + 1, True, out)  # a short pause inside speech stays speech
            else:
                self._run += 1
                if self._run >= self._min_silence:
                    self.in_speech, self._run = False, 0
                    self._decide(f + 1, False, out)
        return out

    def flush(self) -> list[tuple[int, int, bool]]:
        """Decide everything heard so far (end of stream)."""
        out: list[tuple[int, int, bool]] = []
        end_frame = self._frames_seen
        if self.in_speech:
            # trailing quiet frames of a region that never reached the hangover are silence
            self._decide(end_frame - self._run, True, out)
        elif self._run >= max(1, self._min_speech):
            self._decide(end_frame, True, out)
        self._decide(end_frame, False, out)
        tail = self._rest.size
        if tail:
            out.append((self.decided_until, self.decided_until + tail, False))
            self.decided_until += tail
            self._rest = np.zeros(0, np.float32)
        self.in_speech, self._run = False, 0
        return out


def speech_segments(samples: np.ndarray, backend: Backend = "silero",
                    config: VadConfig | None = None) -> list[tuple[int, int]]:
    """Speech regions ``[start, end)`` (sample indices) of a whole 16 kHz mono signal."""
    cfg = config or VadConfig(backend=backend)
    seg = VadSegmenter(cfg)
    spans = seg.process(samples) + seg.flush()
    return [(s, e) for s, e, speech in spans if speech]
