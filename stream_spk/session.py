"""Building a ready pipeline from user-level options (the one place that loads the model).

The CLI and the Qt app call :func:`build_pipeline`; torch is imported here lazily, so callers
(the UI in particular) never import it themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from stream_spk.clustering import ClusterConfig
from stream_spk.pipeline import Pipeline, PipelineConfig
from stream_spk.vad import VadConfig


@dataclass
class SessionOptions:
    """What a user can choose for a streaming session."""

    model_file: str | None = None
    precision: str = "auto"
    compute_device: str = "auto"
    backend: str = "auto"  # embedding and segmentation networks: auto, torch, onnx, openvino (models.backends)
    latency: float = 1.0
    vad: str = "pyannote"  # or a VAD with sliding windows: "silero", "webrtc"
    vad_threshold: float | None = None
    # the segmented pipeline's second, 10 s look (speech and overlap): off is ~1.5x faster and
    # less accurate (README "Faster, less accurate")
    second_look: bool = True
    profiles: str | os.PathLike | None = None  # None: $STREAM_SPK_PROFILES or the user store, if present
    use_profiles: bool = True
    create_profiles: bool = False  # a missing --profiles store is fine (it is created when saving)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def pipeline_config(self) -> PipelineConfig:
        backend = "silero" if self.vad == "pyannote" else self.vad  # (unused by the segmented pipeline)
        vad = VadConfig(backend=backend) if self.vad_threshold is None else \
            VadConfig(backend=backend, threshold=self.vad_threshold)  # type: ignore[arg-type]
        step = 0.5 if self.latency >= 1.0 else max(0.1, self.latency / 2)
        return PipelineConfig(latency=self.latency, step=step, vad=vad, cluster=self.cluster)

    def segmented_config(self):
        """Settings of the segmentation-driven pipeline (``vad="pyannote"``)."""
        from stream_spk.segmented import SegmentationConfig, SegmentedConfig

        step = 0.5 if self.latency >= 1.0 else max(0.1, round(self.latency / 2, 2))
        # labels are final once the latest 5 s chunk has seen them: a longer latency is met sooner
        latency = min(self.latency, 4.5)
        # one look alone: speech 0.55, chosen in six of eight folds of the CV among one-look
        # settings (0.5 is the CV's choice with the second look mixed in)
        speech = self.vad_threshold if self.vad_threshold is not None else \
            (SegmentationConfig.speech_threshold if self.second_look else 0.55)
        seg = SegmentationConfig(speech_threshold=speech)
        # thresholds chosen by leave-one-subset-out cross-validation with every file scored at
        # five step-grid phases (bench/tune_segmented.py --cv --cv-shifts 0.1,0.2,0.3,0.4): assign
        # 0.3, merge 0.55, overlap 0.3, speech 0.5 with the 10 s second look (SegmentedConfig),
        # track gap 2 s, min_fresh 0 (SegmentationConfig); a
        # window below 0.25 to everyone is new-speaker evidence (the same setting won in three
        # of four folds, CV 10.98%); a changed voice needs 0.1 more similarity to join another
        # speaker and 0.2 (new_voice_weight 2) more to count as ambiguous instead of new.
        # candidate_margin 0.5 ties 0 in CV (11.38% vs 11.32%) and makes the labels as emitted
        # better (13.6% vs 15.3% on dev), so it is kept. Enrolled speakers at cosine 0.42
        # (bench/enroll_id.py: worst identification 97.8%, false names 0.3%; 0.40 identifies as
        # well with 0.4% false names, and gave 1.1% before label_context 0). A candidate at
        # cosine 0.5 or more to a confirmed speaker is not confirmed (CV 10.87%, chosen in three
        # of four folds; the labels as emitted improve from 13.87% to 13.49% averaged over seven
        # step-grid placements). At the end of a session a
        # speaker with under 4 s of speech joins its nearest bigger speaker at cosine 0.25 or
        # more (CV over dev + the simulated tuning meetings of bench/make_tune_set.py: 10.50%
        # against 11.36% without; chosen in five of six folds; pyannote_sample 19.0% -> 8.6%).
        # Two speakers never heard at once (no step with both voices' windows) and side by side
        # for 30 s merge at cosine 0.5: one voice split in two (CV 8.92% -> 8.23%; simfastlong
        # 17.6% -> 15.1%). The CV preferred 0.45 (in-sample 8.03%), which merged two speakers
        # of a held-out simroom meeting (3.2% -> 6.3%); 0.5 improved all three held-out sets.
        if self.cluster != ClusterConfig():
            cluster = self.cluster
        else:
            cluster = ClusterConfig(new_threshold=0.25, new_voice_weight=2.0, candidate_margin=0.5,
                                    confirm_below=0.5, profile_threshold=0.42,
                                    absorb_speech=4.0, absorb_threshold=0.25,
                                    apart_merge_threshold=0.5, apart_after=30.0)
        return SegmentedConfig(latency=latency, step=step, segmentation=seg, cluster=cluster,
                               context_weight=SegmentedConfig.context_weight if self.second_look else 0.0)


def load_profiles(options: SessionOptions) -> list:
    """Enrolled speakers for the session (empty when there is no store or profiles are off)."""
    if not options.use_profiles:
        return []
    from stream_spk.profiles import default_profiles_path

    path = Path(options.profiles) if options.profiles else default_profiles_path()
    if not path.exists():
        if options.profiles and not options.create_profiles:  # the user named a store that is not there
            from stream_spk.errors import ProfileError

            raise ProfileError(f"profile store {path} does not exist (enroll someone first: stream-spk enroll)")
        return []
    store = open_store(path)
    try:
        return store.known_speakers()
    finally:
        store.close()


def open_store(path: str | os.PathLike | None = None):
    """The profile store at ``path`` (default location when None), bound to the ECAPA checkpoint."""
    from stream_spk.models.registry import ECAPA_VOXCELEB
    from stream_spk.profiles import ProfileStore

    return ProfileStore(path, model_id=ECAPA_VOXCELEB.model_id, model_hash=ECAPA_VOXCELEB.sha256)


def build_pipeline(options: SessionOptions | None = None, *, quiet: bool = True, embedder=None) -> Pipeline:
    """A :class:`Pipeline` with the real ECAPA-TDNN and any enrolled profiles."""
    options = options or SessionOptions()
    config = options.pipeline_config()
    profiles = load_profiles(options)  # store problems show before the model loads
    if embedder is None:
        from stream_spk.models.embedder import Embedder

        embedder = Embedder.from_checkpoint(options.model_file, device=options.compute_device,
                                            precision=options.precision, backend=options.backend, quiet=quiet)
    if options.vad == "pyannote":
        from stream_spk.local_segmentation import ChunkSegmenter
        from stream_spk.models.segmentation import Segmenter
        from stream_spk.segmented import SegmentedPipeline

        seg_config = options.segmented_config()
        model = Segmenter.from_checkpoint(device=options.compute_device, backend=options.backend, quiet=quiet)
        segmenter = ChunkSegmenter(model, seg_config.chunk)
        context = ChunkSegmenter(model, seg_config.context_chunk) if options.second_look else None
        _warm_up(embedder, *(s for s in (segmenter, context) if s is not None))
        return SegmentedPipeline(embedder, segmenter, seg_config, profiles=profiles, context_segmenter=context)
    _warm_up(embedder)
    return Pipeline(embedder, config, profiles=profiles)


def _warm_up(embedder, *segmenters) -> None:
    """One tiny call through each network, so that a backend's first-use work (the export once
    per machine, compiling, the check against torch) happens while the session is being set up,
    not as a stall at the first audio a live session hears."""
    import numpy as np

    noise = np.random.default_rng(0).normal(0.0, 0.01, 2 * 16000).astype(np.float32)
    embedder.embed([noise])
    for segmenter in segmenters:
        chunk = np.zeros(segmenter.chunk_samples, np.float32)
        chunk[-noise.size :] = noise
        segmenter.segment(chunk[None])
