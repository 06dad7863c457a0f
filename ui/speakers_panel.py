"""Speakers panel: every speaker with colour, name, talk time and share; rename, merge, save.

The panel only shows rows and emits requests; the main window turns requests into worker
commands (so the pipeline is changed between chunks, never during one).
"""

from __future__ import annotations

from dataclasses import dataclass

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtGui import QColor, QIcon, QPainter, QPixmap
from PyQt5.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from stream_spk.ui import colors


@dataclass(frozen=True)
class SpeakerRow:
    """One speaker as the panel shows it."""

    label: str
    color: str  # hex
    talk_time: float
    share: float
    known: bool


def format_duration(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` past an hour)."""
    s = int(round(max(seconds, 0.0)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def swatch(color: str, size: int = 14) -> QIcon:
    pix = QPixmap(size, size)
    pix.fill(Qt.transparent)
    p = QPainter(pix)
    p.setRenderHint(QPainter.Antialiasing)
    p.setPen(Qt.NoPen)
    p.setBrush(QColor(color))
    p.drawRoundedRect(1, 1, size - 2, size - 2, 3, 3)
    p.end()
    return QIcon(pix)


def merge_pair(a: SpeakerRow, b: SpeakerRow) -> tuple[str, str] | None:
    """(keep, drop) for merging two speakers: an enrolled one is kept, else the one who spoke more."""
    if a.known and b.known:
        return None
    if a.known != b.known:
        return (a.label, b.label) if a.known else (b.label, a.label)
    return (a.label, b.label) if a.talk_time >= b.talk_time else (b.label, a.label)


class SpeakersPanel(QWidget):
    """Table of speakers plus Rename / Merge / Save as known speaker actions."""

    renameRequested = pyqtSignal(str, str)  # label, new label
    mergeRequested = pyqtSignal(str, str)  # keep, drop
    saveRequested = pyqtSignal(str)  # label of an anonymous speaker

    COLUMNS = ("Speaker", "Talk time", "Share")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: list[SpeakerRow] = []
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeToContents)
        self.table.itemChanged.connect(self._edited)
        self.table.itemSelectionChanged.connect(self._update_buttons)

        self.rename_button = QPushButton("Rename")
        self.rename_button.setToolTip("Rename the selected speaker (or double-click the name)")
        self.rename_button.clicked.connect(self._rename_clicked)
        self.merge_button = QPushButton("Merge")
        self.merge_button.setToolTip("Select two speakers who are one person: the one who spoke less joins "
                                     "the other")
        self.merge_button.clicked.connect(self._merge_clicked)
        self.save_button = QPushButton("Save as known speaker…")
        self.save_button.setToolTip("Enroll this anonymous speaker under a name, to be recognised in later "
                                    "sessions")
        self.save_button.clicked.connect(self._save_clicked)
        title = QLabel("Speakers")
        title.setStyleSheet("font-weight: 600; font-size: 11pt;")
        self.summary = QLabel("no speech yet")
        self.summary.setStyleSheet("color: #6B7280;")
        buttons = QHBoxLayout()
        buttons.addWidget(self.rename_button)
        buttons.addWidget(self.merge_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 2, 6, 6)
        layout.addWidget(title)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.save_button)
        self._update_buttons()

    # --- content --------------------------------------------------------------------------
    def rows(self) -> list[SpeakerRow]:
        return list(self._rows)

    def set_rows(self, rows: list[SpeakerRow]) -> None:
        """Show ``rows`` (cheap when nothing changed; never while the user edits a name)."""
        if rows == self._rows or self.table.state() == QAbstractItemView.EditingState:
            return
        selected = set(self.selected_labels())
        structure = [(r.label, r.color, r.known) for r in rows] != [(r.label, r.color, r.known) for r in self._rows]
        self._rows = list(rows)
        self.table.blockSignals(True)
        try:
            if structure:
                self.table.setRowCount(len(rows))
            for i, row in enumerate(rows):
                if structure:
                    name = QTableWidgetItem(swatch(row.color), row.label)
                    name.setData(Qt.UserRole, row.label)
                    name.setToolTip("enrolled speaker" if row.known else "anonymous speaker of this session "
                                    "(double-click to rename)")
                    font = name.font()
                    font.setBold(row.known)
                    name.setFont(font)
                    self.table.setItem(i, 0, name)
                    for col in (1, 2):
                        item = QTableWidgetItem()
                        item.setFlags(Qt.ItemIsSelectable | Qt.ItemIsEnabled)
                        item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                        self.table.setItem(i, col, item)
                self.table.item(i, 1).setText(format_duration(row.talk_time))
                self.table.item(i, 2).setText(f"{row.share:.0%}")
                grey = row.talk_time <= 0
                for col in range(3):
                    self.table.item(i, col).setForeground(QColor("#9AA1AC" if grey else colors.TEXT))
            if structure:
                self.table.clearSelection()
                for i, row in enumerate(rows):
                    if row.label in selected:
                        self.table.selectRow(i)
        finally:
            self.table.blockSignals(False)
        total = sum(r.talk_time for r in rows)
        speaking = sum(1 for r in rows if r.talk_time > 0)
        self.summary.setText(f"{speaking} speaker{'s' if speaking != 1 else ''} · {format_duration(total)} of "
                             "speech" if speaking else "no speech yet")
        self._update_buttons()

    def selected_labels(self) -> list[str]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [self._rows[r].label for r in rows if r < len(self._rows)]

    def select(self, *labels: str) -> None:
        """Select the rows of ``labels`` (tests, keyboard users)."""
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.MultiSelection)
        for i, row in enumerate(self._rows):
            if row.label in labels:
                self.table.selectRow(i)
        self.table.setSelectionMode(mode)

    def _row(self, label: str) -> SpeakerRow | None:
        return next((r for r in self._rows if r.label == label), None)

    # --- actions --------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        sel = [r for r in (self._row(lab) for lab in self.selected_labels()) if r is not None]
        self.rename_button.setEnabled(len(sel) == 1)
        self.merge_button.setEnabled(len(sel) == 2 and merge_pair(*sel) is not None)
        self.save_button.setEnabled(len(sel) == 1 and not sel[0].known and sel[0].talk_time > 0)

    def _edited(self, item: QTableWidgetItem) -> None:
        if item.column() != 0:
            return
        old = item.data(Qt.UserRole)
        new = " ".join(item.text().split())
        self.table.blockSignals(True)
        item.setText(old)  # the worker's Relabel will bring the new name
        self.table.blockSignals(False)
        if old and new and new != old:
            self.renameRequested.emit(old, new)

    def _rename_clicked(self) -> None:
        labels = self.selected_labels()
        if len(labels) == 1:
            row = next(i for i, r in enumerate(self._rows) if r.label == labels[0])
            self.table.editItem(self.table.item(row, 0))

    def _merge_clicked(self) -> None:
        sel = [r for r in (self._row(lab) for lab in self.selected_labels()) if r is not None]
        if len(sel) == 2:
            pair = merge_pair(*sel)
            if pair is not None:
                self.mergeRequested.emit(*pair)

    def _save_clicked(self) -> None:
        labels = self.selected_labels()
        if len(labels) == 1:
            self.saveRequested.emit(labels[0])
