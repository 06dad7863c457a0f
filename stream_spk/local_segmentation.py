"""The segmentation model on the fixed-length chunks the segmented pipeline feeds it.

No torch here: the model wrapper (:class:`stream_spk.models.segmentation.Segmenter`) is passed in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stream_spk.types import SAMPLE_RATE


class ChunkSegmenter:
    """Powerset probabilities [B, F, 7] of chunks [B, ``seconds`` * 16000] (see :class:`LocalSegmenter`)."""

    def __init__(self, segmenter: Any, seconds: float = 5.0) -> None:
        from stream_spk.models.segmentation import frame_center, num_frames

        self.segmenter = segmenter
        self.chunk_samples = int(round(seconds * SAMPLE_RATE))
        self.frame_centres = np.asarray(frame_center(np.arange(num_frames(self.chunk_samples))), np.float64)

    def segment(self, chunks: np.ndarray) -> np.ndarray:
        return self.segmenter(np.asarray(chunks, np.float32)).probs
