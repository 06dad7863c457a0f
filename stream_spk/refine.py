"""Offline second pass (``diarize --refine``): re-cluster a finished stream with hindsight.

The stream has to label speech within ``latency`` seconds, with the centroids it has at that
moment; at the end of a file all of it is known. This pass takes the final turns the stream
emitted and the window embeddings it computed (nothing is embedded twice), then

1. cuts the speech into pieces of ``piece`` seconds, each embedded as the overlap-weighted mean
   of the windows covering it (as the stream scores its pieces),
2. groups the pieces into segments of up to ``segment`` seconds inside each streamed turn and
   clusters the segments from scratch: average linkage on cosine distance, cut at ``threshold``,
3. absorbs clusters with less than ``min_speaker`` seconds of speech into their nearest one,
4. re-assigns every piece to the closest centroid, re-estimating the centroids ``iterations``
   times,
5. names each cluster after the streamed label it overlaps most (enrolled names carry over);
   a cluster the stream never had gets a new ``speaker N``.

Pure numpy + scipy, no threads; the streamed result is left as it was (written separately).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream_spk.rttm import Turn
from stream_spk.sinks import merge_turns

WindowLog = Sequence[tuple[float, float, np.ndarray]]


@dataclass(frozen=True)
class RefineConfig:
    """Settings of the second pass; defaults chosen on the dev set (``bench/dev_der.py --refine``)."""

    piece: float = 0.5  # seconds: speech is relabelled in pieces this long
    segment: float = 3.0  # seconds: the units clustered from scratch (inside one streamed turn)
    threshold: float = 0.6  # average-linkage cosine distance at which segments stop merging
    min_speaker: float = 2.0  # seconds: smaller clusters are absorbed by their nearest one
    iterations: int = 3  # re-assignment / centroid rounds

    def validate(self) -> None:
        if not (self.piece > 0 and self.segment >= self.piece):
            raise ValueError("piece must be positive and segment at least one piece")
        if not 0 < self.threshold < 2:
            raise ValueError("threshold is a cosine distance in (0, 2)")
        if self.iterations < 0 or self.min_speaker < 0:
            raise ValueError("iterations and min_speaker must not be negative")


@dataclass
class _Pieces:
    start: np.ndarray  # [n] seconds
    end: np.ndarray  # [n]
    turn: np.ndarray  # [n] index of the streamed turn the piece came from
    emb: np.ndarray  # [n, d] unit vectors

    @property
    def seconds(self) -> np.ndarray:
        return self.end - self.start


def refine_turns(turns: Sequence[Turn], windows: WindowLog, config: RefineConfig | None = None) -> list[Turn]:
    """The streamed ``turns`` relabelled by an offline re-clustering of their ``windows``."""
    config = config or RefineConfig()
    config.validate()
    turns = sorted(turns)
    if not turns or not len(windows):
        return merge_turns(list(turns))
    pieces = _cut_pieces(turns, windows, config.piece)
    if len(pieces.start) == 0:
        return merge_turns(list(turns))
    labels = _cluster_segments(pieces, config)
    labels = _absorb_small(pieces, labels, config.min_speaker)
    for _ in range(config.iterations):
        labels = _reassign(pieces, labels)
        labels = _absorb_small(pieces, labels, config.min_speaker)
    names = _name_clusters(pieces, labels, [t[2] for t in turns])
    return merge_turns([(float(a), float(b), names[c])
                        for a, b, c in zip(pieces.start, pieces.end, labels)])


# ---- steps ------------------------------------------------------------------------------------


def _cut_pieces(turns: Sequence[Turn], windows: WindowLog, piece: float) -> _Pieces:
    ws = np.array([w[0] for w in windows], np.float64)
    we = np.array([w[1] for w in windows], np.float64)
    emb = np.stack([np.asarray(w[2], np.float32) for w in windows])
    order = np.argsort(ws, kind="stable")
    ws, we, emb = ws[order], we[order], emb[order]
    longest = float((we - ws).max())
    starts, ends, owner, vectors = [], [], [], []
    for k, (a, b, _label) in enumerate(turns):
        t = a
        while t < b - 1e-6:
            cut = min(b, (math.floor(t / piece + 1e-6) + 1) * piece)
            lo = int(np.searchsorted(ws, t - longest, "left"))
            hi = int(np.searchsorted(ws, cut, "left"))
            overlap = np.minimum(cut, we[lo:hi]) - np.maximum(t, ws[lo:hi])
            use = overlap > 0
            if use.any():
                v = (overlap[use, None] * emb[lo:hi][use]).sum(0)
            else:  # a piece no window covers (a short region's edge): the nearest window
                gaps = np.maximum(ws - cut, 0) + np.maximum(t - we, 0)
                v = emb[int(np.argmin(gaps))].astype(np.float64)
            starts.append(t)
            ends.append(cut)
            owner.append(k)
            vectors.append(v / max(np.linalg.norm(v), 1e-12))
            t = cut
    d = emb.shape[1]
    return _Pieces(np.asarray(starts), np.asarray(ends), np.asarray(owner, np.int64),
                   np.asarray(vectors, np.float64).reshape(-1, d))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _centroids(pieces: _Pieces, labels: np.ndarray, k: int) -> np.ndarray:
    sums = np.zeros((k, pieces.emb.shape[1]))
    np.add.at(sums, labels, pieces.emb * pieces.seconds[:, None])
    return _unit_rows(sums)


def _cluster_segments(pieces: _Pieces, config: RefineConfig) -> np.ndarray:
    """Cluster labels 0..K-1 per piece from average-linkage AHC over segments."""
    per_segment = max(1, int(round(config.segment / config.piece)))
    segment = np.zeros(len(pieces.start), np.int64)
    seg, count = 0, 0
    for i in range(len(segment)):
        if i and (pieces.turn[i] != pieces.turn[i - 1] or count == per_segment):
            seg, count = seg + 1, 0
        segment[i] = seg
        count += 1
    n_seg = seg + 1
    vectors = _centroids(pieces, segment, n_seg)
    if n_seg == 1:
        return np.zeros(len(segment), np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(vectors, method="average", metric="cosine")
    groups = fcluster(tree, t=config.threshold, criterion="distance") - 1
    return groups[segment].astype(np.int64)


def _compact(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def _absorb_small(pieces: _Pieces, labels: np.ndarray, min_speaker: float) -> np.ndarray:
    labels = _compact(labels)
    k = int(labels.max()) + 1
    talk = np.bincount(labels, weights=pieces.seconds, minlength=k)
    big = talk >= min_speaker
    if big.all() or not big.any():
        return labels
    cents = _centroids(pieces, labels, k)
    sims = pieces.emb @ cents[big].T
    target = np.flatnonzero(big)[np.argmax(sims, axis=1)]
    small = ~big[labels]
    labels = labels.copy()
    labels[small] = target[small]
    return _compact(labels)


def _reassign(pieces: _Pieces, labels: np.ndarray) -> np.ndarray:
    k = int(labels.max()) + 1
    if k == 1:
        return labels
    sims = pieces.emb @ _centroids(pieces, labels, k).T
    return np.argmax(sims, axis=1).astype(np.int64)


def _name_clusters(pieces: _Pieces, labels: np.ndarray, streamed: list[str]) -> dict[int, str]:
    """Each cluster takes the streamed label it shares most speech with (each label once)."""
    names = sorted(set(streamed))
    index = {name: i for i, name in enumerate(names)}
    stream_of_piece = np.array([index[streamed[t]] for t in pieces.turn], np.int64)
    k = int(labels.max()) + 1
    overlap = np.zeros((k, len(names)))
    np.add.at(overlap, (labels, stream_of_piece), pieces.seconds)
    out: dict[int, str] = {}
    used: set[int] = set()
    for flat in np.argsort(-overlap, axis=None):
        c, s = divmod(int(flat), len(names))
        if overlap[c, s] <= 0:
            break
        if c not in out and s not in used:
            out[c] = names[s]
            used.add(s)
    taken = [int(m.group(1)) for n in names if (m := re.fullmatch(r"speaker (\d+)", n))]
    next_number = max(taken, default=0) + 1
    for c in range(k):
        if c not in out:
            out[c] = f"speaker {next_number}"
            next_number += 1
    return out
