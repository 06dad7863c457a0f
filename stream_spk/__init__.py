"""stream-spk: real-time streaming speaker diarization and recognition."""

__version__ = "0.1.0"
