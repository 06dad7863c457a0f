"""Status bar figures: model device, real-time factor, label latency, dropped audio."""

from __future__ import annotations

from PyQt5.QtWidgets import QLabel, QStatusBar

from stream_spk.types import Stats


class StatusPanel:
    """Permanent labels on the right of a :class:`QStatusBar`; messages go on its left."""

    def __init__(self, bar: QStatusBar) -> None:
        self.bar = bar
        self.model = QLabel("model: not loaded")
        self.rtf = QLabel("RTF –")
        self.rtf.setToolTip("real-time factor: processing seconds per audio second (below 1 keeps up)")
        self.latency = QLabel("latency –")
        self.latency.setToolTip("stream seconds from a sample to its final label (median, 95th percentile)")
        self.dropped = QLabel("dropped 0")
        self.dropped.setToolTip("input overflows: blocks of audio lost by the source")
        for label in (self.model, self.rtf, self.latency, self.dropped):
            label.setStyleSheet("padding: 0 8px;")
            bar.addPermanentWidget(label)

    def set_model(self, device: str, precision: str) -> None:
        kind = "CUDA" if device.upper().startswith("CUDA") else "CPU"
        self.model.setText(f"model: {kind} · {precision}")
        self.model.setToolTip(f"ECAPA-TDNN on {device}, {precision}")

    def set_stats(self, stats: Stats) -> None:
        self.rtf.setText(f"RTF {stats.real_time_factor:.2f}")
        self.latency.setText(f"latency {stats.latency_median:.2f} s (p95 {stats.latency_p95:.2f})")
        self.dropped.setText(f"dropped {stats.overruns}")
        self.dropped.setStyleSheet("padding: 0 8px;" + (" color: #C0392B; font-weight: 600;" if stats.overruns
                                                        else ""))

    def message(self, text: str, msec: int = 0) -> None:
        self.bar.showMessage(text, msec)
