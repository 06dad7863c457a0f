"""Process-level settings applied by entry points (CLI, GUI, benches) before torch is imported."""

from __future__ import annotations

import os


def configure_threads() -> None:
    """Let idle OpenMP worker threads sleep instead of spinning (unless the user chose otherwise).

    torch's OpenMP threads spin-wait by default; when anything else runs on the same cores (the Qt
    thread, an audio callback, a browser) the spinning threads starve each other: on this 2-core
    machine one competing process made the pipeline ~17x slower (0.7x vs 12x real time), while
    passive waiting costs nothing measurable when the machine is idle. Must run before torch loads.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
