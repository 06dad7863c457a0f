"""Process-level settings applied by entry points (CLI, GUI, benches) before torch is imported."""

from __future__ import annotations

import os


def configure_threads() -> None:
    """Thread and kernel-cache settings (each applies unless the user set the variable).

    Idle OpenMP worker threads sleep instead of spinning: torch's OpenMP threads spin-wait by
    default, and when anything else runs on the same cores (the Qt thread, an audio callback, a
    browser) the spinning threads starve each other: on the 2-core dev machine one competing
    process made `diarize` run at 0.7x real time with spinning and 12x with passive waiting.
    Must run before torch loads (README's throughput figures are measured with these settings).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # oneDNN caches compiled kernels per input shape; windows of many lengths and batch sizes
    # made RSS climb by ~270 MiB over a 2-hour stream with the default (1024). 256 bounds that
    # and keeps the speed (64 cost ~10% of throughput: kernels were recompiled).
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")
