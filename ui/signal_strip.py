"""Signal strip: input level and voice activity over stream time, plus a live level meter.

The strip shares the timeline's x axis (same left-axis width, linked ranges), so a bar on the
timeline sits above the audio it came from. The user sees at a glance that the input works.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt5.QtCore import QRectF, QSize, Qt
from PyQt5.QtGui import QColor, QPainter
from PyQt5.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from stream_spk.ui import colors
from stream_spk.ui.levels import SignalHistory
from stream_spk.ui.timeline import AXIS_WIDTH

METER_FLOOR_DB = -60.0


def meter_fraction(db: float, floor: float = METER_FLOOR_DB) -> float:
    """dBFS -> 0..1 position on a meter whose left end is ``floor``."""
    return float(np.clip((db - floor) / -floor, 0.0, 1.0))


class LevelMeter(QWidget):
    """A horizontal meter: RMS as a filled bar, peak as a tick, dBFS scale from -60 to 0."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rms_db = METER_FLOOR_DB
        self.peak_db = METER_FLOOR_DB
        self.setMinimumSize(120, 14)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt name)
        return QSize(160, 16)

    def set_level(self, rms_db: float, peak_db: float) -> None:
        if (round(rms_db, 1), round(peak_db, 1)) != (round(self.rms_db, 1), round(self.peak_db, 1)):
            self.rms_db, self.peak_db = rms_db, peak_db
            self.update()

    def paintEvent(self, event: object) -> None:  # noqa: N802 (Qt name)
        p = QPainter(self)
        r = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        p.setPen(QColor("#B0B7C3"))
        p.setBrush(QColor("#F1F3F6"))
        p.drawRoundedRect(r, 3, 3)
        frac = meter_fraction(self.rms_db)
        if frac > 0:
            color = "#4C9A5B" if self.rms_db < -12 else ("#D9A300" if self.rms_db < -3 else "#C0392B")
            p.setPen(Qt.NoPen)
            p.setBrush(QColor(color))
            p.drawRoundedRect(QRectF(r.left() + 1, r.top() + 1, (r.width() - 2) * frac, r.height() - 2), 2, 2)
        peak = meter_fraction(self.peak_db)
        if peak > 0:
            x = r.left() + 1 + (r.width() - 2) * peak
            p.setPen(QColor(colors.TEXT))
            p.drawLine(int(x), int(r.top() + 2), int(x), int(r.bottom() - 2))
        p.end()


class SpeechLamp(QLabel):
    """A small "speech" indicator lit while the VAD hears speech."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("speech", parent)
        self.setAlignment(Qt.AlignCenter)
        self.setMinimumWidth(72)
        self._on: bool | None = None
        self.set_on(False)

    def set_on(self, on: bool) -> None:
        if on == self._on:
            return
        self._on = on
        bg, fg = (colors.VAD, "white") if on else ("#E5E8EC", "#8A93A0")
        self.setStyleSheet(f"background: {bg}; color: {fg}; border-radius: 4px; padding: 1px 4px;")


class SignalStrip(QWidget):
    """Level (filled, dBFS) and VAD probability (line) over stream time, and a live meter."""

    def __init__(self, history: SignalHistory, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.history = history
        self._version = -1
        self.plot = pg.PlotWidget(background=colors.BACKGROUND)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setMouseEnabled(x=True, y=False)
        left = self.plot.getAxis("left")
        left.setWidth(AXIS_WIDTH)
        left.setTicks([[(0.0, ""), (1.0, "")], []])
        left.setTextPen(QColor(colors.TEXT))
        self.plot.getAxis("bottom").setStyle(showValues=False)
        self.plot.getAxis("bottom").setHeight(6)
        self.plot.setYRange(0, 1.05, padding=0)
        level_color = QColor(colors.LEVEL)
        fill = QColor(level_color)
        fill.setAlpha(110)
        self.level = pg.PlotDataItem(pen=pg.mkPen(level_color, width=1), fillLevel=0.0, brush=fill,
                                     clipToView=True, autoDownsample=True)
        self.vad = pg.PlotDataItem(pen=pg.mkPen(colors.VAD, width=1.5), stepMode=None, clipToView=True,
                                   autoDownsample=True)
        self.plot.addItem(self.level)
        self.plot.addItem(self.vad)
        self.meter = LevelMeter()
        self.meter.setFixedWidth(180)
        self.lamp = SpeechLamp()
        self.db_label = QLabel("-∞ dBFS")
        self.db_label.setMinimumWidth(80)
        self.db_label.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        title = QLabel("Input")
        title.setStyleSheet("font-weight: 600;")
        legend = QLabel(f"<span style='color:{colors.LEVEL}'>■</span> level &nbsp; "
                        f"<span style='color:{colors.VAD}'>━</span> speech probability")
        legend.setStyleSheet("color: #6B7280;")
        head = QHBoxLayout()
        head.setContentsMargins(6, 0, 6, 0)
        head.addWidget(title)
        head.addSpacing(12)
        head.addWidget(legend)
        head.addStretch(1)
        head.addWidget(self.meter)
        head.addWidget(self.db_label)
        head.addWidget(self.lamp)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(head)
        layout.addWidget(self.plot, 1)
        self.setMinimumHeight(90)

    def link_x(self, plot: pg.PlotWidget) -> None:
        """Share the x range with the timeline plot."""
        self.plot.setXLink(plot)

    def refresh(self) -> None:
        """Redraw if the history changed."""
        h = self.history
        if h.version == self._version:
            return
        self._version = h.version
        t, rms, _ = h.levels()
        self.level.setData(t, np.clip((rms - METER_FLOOR_DB) / -METER_FLOOR_DB, 0, 1) if rms.size else rms)
        vt, vp = h.vad()
        self.vad.setData(vt, vp * 0.95)
        self.meter.set_level(h.latest_rms, h.latest_peak)
        self.lamp.set_on(h.latest_vad >= 0.5)
        self.db_label.setText("-∞ dBFS" if h.latest_rms <= -89 else f"{h.latest_rms:.0f} dBFS")
