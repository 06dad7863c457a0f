"""Deterministic stand-ins for the VAD model and the embedder, for fast pipeline tests.

"Speakers" are sine tones: the fake VAD calls a frame speech when it is loud enough, and the
fake embedder maps a window's dominant frequency to a fixed random unit vector (plus a little
seeded noise), so windows of the same tone get near-identical embeddings.
"""

from __future__ import annotations

import numpy as np

SR = 16000


class EnergyScorer:
    """Speech probability 1 for frames with RMS above a threshold, else 0."""

    frame_samples = 512

    def __init__(self, threshold: float = 0.02) -> None:
        self.threshold = threshold

    def score(self, frames: np.ndarray) -> np.ndarray:
        return (np.sqrt((frames ** 2).mean(axis=1)) > self.threshold).astype(np.float32)

    def reset(self) -> None:
        pass


class ToneEmbedder:
    """Embedding = unit vector of the window's dominant frequency band (100 Hz bands)."""

    min_samples = 640

    def __init__(self, dim: int = 192, noise: float = 0.05, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        basis = rng.standard_normal((80, dim)).astype(np.float32)
        self.basis = basis / np.linalg.norm(basis, axis=1, keepdims=True)
        self.noise = noise
        self.calls: list[int] = []

    def embed(self, wavs) -> np.ndarray:
        self.calls.append(len(wavs))
        out = []
        for w in wavs:
            spec = np.abs(np.fft.rfft(w))
            freq = np.argmax(spec) * SR / len(w)
            band = int(freq // 100) % len(self.basis)
            seed = int(np.abs(w[:50]).sum() * 1e6) % (2**32)
            e = self.basis[band] + self.noise * np.random.default_rng(seed).standard_normal(self.basis.shape[1])
            out.append(e / np.linalg.norm(e))
        return np.asarray(out, np.float32).reshape(len(wavs), -1)


def tone(freq: float, seconds: float, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    return (amp * np.sin(2 * np.pi * freq * t) + 0.002 * rng.standard_normal(t.size)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), np.float32)


def meeting(parts: list[tuple[float | None, float]]) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """Concatenate (freq or None for silence, seconds); returns audio and [(start, end, freq)]."""
    chunks, truth, t = [], [], 0.0
    for i, (freq, seconds) in enumerate(parts):
        chunks.append(silence(seconds) if freq is None else tone(freq, seconds, seed=i))
        if freq is not None:
            truth.append((t, t + seconds, freq))
        t += seconds
    return np.concatenate(chunks), truth
