"""Qt desktop app of stream-spk (installed as ``stream_spk.ui``); never imports torch."""
