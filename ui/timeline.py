"""The live timeline widget (pyqtgraph): one lane per speaker, a moving "now" cursor.

Each lane is two graphics items (final bars, provisional bars) that paint all their rectangles
in one call, so a long session costs a handful of items, not one per turn; only lanes the model
reports as changed are rebuilt. The view follows the stream until the user scrolls or zooms
with the mouse, and follows again after "Follow live".
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt5.QtCore import QRectF, Qt, pyqtSignal
from PyQt5.QtGui import QBrush, QColor, QFont, QFontMetrics, QPainter, QPen
from PyQt5.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from stream_spk.ui import colors
from stream_spk.ui.timeline_model import Lane, TimelineModel

LANE_HEIGHT = 0.72  # of the 1.0 spacing between lanes
AXIS_WIDTH = 150  # px; the signal strip uses the same so both x axes line up
MIN_LANES = 4  # vertical room reserved even with fewer speakers


class LaneBars(pg.GraphicsObject):
    """Filled rectangles ``[start, end) x [y - h/2, y + h/2]`` painted in one call."""

    def __init__(self, fill: str, outline: str | None = None, dashed: bool = False) -> None:
        super().__init__()
        self._brush = QBrush(QColor(fill))
        if outline is None:
            self._pen = QPen(Qt.NoPen)
        else:
            self._pen = QPen(QColor(outline))
            self._pen.setCosmetic(True)
            self._pen.setWidthF(1.5)
            if dashed:
                self._pen.setStyle(Qt.DashLine)
        self._rects: list[QRectF] = []
        self._bounds = QRectF()

    def set_bars(self, y: float, starts: np.ndarray, ends: np.ndarray) -> None:
        """Replace the rectangles of the lane centred at ``y``."""
        self.prepareGeometryChange()
        h = LANE_HEIGHT
        self._rects = [QRectF(float(s), y - h / 2, max(float(e - s), 1e-3), h) for s, e in zip(starts, ends)]
        if self._rects:
            self._bounds = QRectF(float(np.min(starts)), y - h / 2, float(np.max(ends) - np.min(starts)), h)
        else:
            self._bounds = QRectF()
        self.update()

    def count(self) -> int:
        return len(self._rects)

    def boundingRect(self) -> QRectF:  # noqa: N802 (Qt name)
        return self._bounds

    def paint(self, painter: QPainter, *args: object) -> None:
        if not self._rects:
            return
        painter.setRenderHint(QPainter.Antialiasing, False)
        painter.setPen(self._pen)
        painter.setBrush(self._brush)
        painter.drawRects(self._rects)


class LaneAxis(pg.AxisItem):
    """Left axis whose tick labels are speaker names with a colour swatch."""

    def __init__(self) -> None:
        super().__init__("left")
        self._colors: dict[str, str] = {}
        self._known: set[str] = set()
        font = QFont()
        font.setPointSizeF(10)
        self.setStyle(tickFont=font, tickLength=0)
        self.setWidth(AXIS_WIDTH)

    def set_lanes(self, lanes: list[Lane]) -> None:
        self._colors = {lane.label: colors.color_for(lane.color) for lane in lanes}
        self._known = {lane.label for lane in lanes if lane.known}
        self.setTicks([[(float(i), lane.label) for i, lane in enumerate(lanes)], []])

    def drawPicture(self, p: QPainter, axisSpec, tickSpecs, textSpecs) -> None:  # noqa: N802, N803
        super().drawPicture(p, axisSpec, tickSpecs, [])
        p.setRenderHint(QPainter.Antialiasing, True)
        base = QFont(self.style["tickFont"]) if self.style["tickFont"] is not None else QFont()
        right = self.boundingRect().right() - 8
        for rect, _flags, text in textSpecs:
            font = QFont(base)
            font.setBold(text in self._known)
            p.setFont(font)
            metrics = QFontMetrics(font)
            shown = metrics.elidedText(text, Qt.ElideRight, int(right) - 26)
            width = metrics.horizontalAdvance(shown)
            box = QRectF(right - width, rect.center().y() - metrics.height(), width, 2 * metrics.height())
            p.setPen(QColor(colors.TEXT))
            p.drawText(box, int(Qt.AlignRight | Qt.AlignVCenter), shown)
            swatch = QRectF(right - width - 18, rect.center().y() - 6, 12, 12)
            p.setPen(Qt.NoPen)
            p.setBrush(QColor(self._colors.get(text, colors.TEXT)))
            p.drawRoundedRect(swatch, 3, 3)


class TimelineView(QWidget):
    """Lanes of speaker bars over stream time; ``refresh(now)`` applies the model's changes."""

    followChanged = pyqtSignal(bool)

    def __init__(self, model: TimelineModel, span: float = 30.0, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.span = span
        self.follow = True
        self.axis = LaneAxis()
        self.plot = pg.PlotWidget(background=colors.BACKGROUND, axisItems={"left": self.axis})
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.showGrid(x=True, y=False, alpha=0.25)
        self.plot.setLabel("bottom", "stream time", units="s")
        bottom = self.plot.getAxis("bottom")
        bottom.setTextPen(QColor(colors.TEXT))
        bottom.setZValue(-1)  # its grid lines go behind the bars
        self.axis.setTextPen(QColor(colors.TEXT))
        self.view = self.plot.getViewBox()
        self.view.setMouseEnabled(x=True, y=False)
        self.view.invertY(True)
        self.view.setLimits(xMin=-2.0)
        self.view.setXRange(0, span, padding=0)
        self.view.sigRangeChangedManually.connect(self._user_moved)
        self.cursor = pg.InfiniteLine(pos=0.0, angle=90, movable=False, pen=pg.mkPen(colors.CURSOR, width=2))
        self.cursor.setZValue(10)
        self.plot.addItem(self.cursor, ignoreBounds=True)
        self._stripes: list[pg.LinearRegionItem] = []
        self._items: dict[str, tuple[LaneBars, LaneBars]] = {}
        self._order: list[str] = []
        self._now = 0.0

        self.title = QLabel("Who is speaking")
        self.title.setStyleSheet("font-weight: 600; font-size: 11pt;")
        self.follow_button = QPushButton("Follow live")
        self.follow_button.setToolTip("Scroll or zoom with the mouse to look back; this resumes following the stream")
        self.follow_button.clicked.connect(lambda: self.set_follow(True))
        self.follow_button.setEnabled(False)
        head = QHBoxLayout()
        head.setContentsMargins(6, 2, 6, 0)
        head.addWidget(self.title)
        head.addStretch(1)
        hint = QLabel("wheel: zoom · drag: scroll")
        hint.setStyleSheet("color: #6B7280;")
        head.addWidget(hint)
        head.addWidget(self.follow_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(head)
        layout.addWidget(self.plot, 1)
        self._relayout([])

    # --- following ------------------------------------------------------------------------
    def _user_moved(self, *args: object) -> None:
        if self.follow:
            self.set_follow(False)

    def set_follow(self, follow: bool) -> None:
        """Follow the stream (True) or stay where the user scrolled (False)."""
        if follow == self.follow:
            return
        self.follow = follow
        if follow:
            (x0, x1), _ = self.view.viewRange()
            self.span = max(2.0, x1 - x0)  # keep the user's zoom
            self._place_view()
        self.follow_button.setEnabled(not follow)
        self.followChanged.emit(follow)

    def _place_view(self) -> None:
        right = max(self._now + 0.06 * self.span, self.span * 0.94)
        self.view.setXRange(right - self.span, right, padding=0)

    # --- drawing --------------------------------------------------------------------------
    def _relayout(self, lanes: list[Lane]) -> None:
        """Create/remove lane items after lanes appeared, merged or were renamed."""
        labels = [lane.label for lane in lanes]
        for label in list(self._items):
            if label not in labels:
                for item in self._items.pop(label):
                    self.plot.removeItem(item)
        for lane in lanes:
            base = colors.color_for(lane.color)
            if lane.label not in self._items:
                final = LaneBars(base)
                prov = LaneBars(colors.lighter(base, 0.6), outline=base, dashed=True)
                final.setZValue(2)
                prov.setZValue(1)
                self.plot.addItem(final)
                self.plot.addItem(prov)
                self._items[lane.label] = (final, prov)
        for stripe in self._stripes:
            self.plot.removeItem(stripe)
        self._stripes = []
        rows = max(len(lanes), MIN_LANES)
        for i in range(1, rows, 2):
            stripe = pg.LinearRegionItem((i - 0.5, i + 0.5), orientation="horizontal", movable=False,
                                         brush=pg.mkBrush(colors.GRID + "55"), pen=pg.mkPen(None))
            stripe.setZValue(-10)
            self.plot.addItem(stripe, ignoreBounds=True)
            self._stripes.append(stripe)
        self.axis.set_lanes(lanes)
        self.view.setYRange(-0.6, rows - 0.4, padding=0)
        self._order = labels

    def _draw_lane(self, index: int, lane: Lane) -> None:
        final, prov = self._items[lane.label]
        segs = self.model.segments(lane.label)
        final.set_bars(float(index), np.array([s.start for s in segs]), np.array([s.end for s in segs]))
        p = self.model.provisional_segments(lane.label)
        prov.set_bars(float(index), np.array([s.start for s in p]), np.array([s.end for s in p]))

    def refresh(self, now: float) -> None:
        """Apply the model's changes and move the cursor (and the view, when following) to ``now``."""
        changes = self.model.take_changes()
        lanes = self.model.lanes()
        labels = [lane.label for lane in lanes]
        if changes.layout or labels != self._order:
            self._relayout(lanes)
            dirty = set(labels)
        else:
            dirty = changes.lanes & set(labels)
        for i, lane in enumerate(lanes):
            if lane.label in dirty:
                self._draw_lane(i, lane)
        if now != self._now:
            self._now = now
            self.cursor.setPos(now)
            if self.follow:
                self._place_view()

    def show_all(self) -> None:
        """Stop following and show the whole session."""
        self.set_follow(False)
        self.view.setXRange(0, max(self._now, 1.0), padding=0.02)

    def bar_count(self, label: str) -> tuple[int, int]:
        """(final, provisional) rectangles drawn for a lane (tests)."""
        items = self._items.get(label)
        return (items[0].count(), items[1].count()) if items else (0, 0)

    def lane_labels(self) -> list[str]:
        return list(self._order)

