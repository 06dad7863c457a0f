"""Enrollment dialog: record or choose audio, check its quality, save; manage known speakers.

The check (VAD + embeddings) runs on the worker thread through the bridge; nothing is written
until "Save", so closing the dialog mid-way abandons the enrollment cleanly. The known-speaker
list reads and edits the profile store directly (small SQLite transactions).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PyQt5.QtCore import Qt, QTimer, pyqtSignal
from PyQt5.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QStyle,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from stream_spk.errors import StreamSpkError
from stream_spk.ui import commands
from stream_spk.ui.bridge import WorkerBridge
from stream_spk.ui.recorder import MicRecorder
from stream_spk.ui.signal_strip import LevelMeter
from stream_spk.ui.source_bar import AUDIO_FILTER
from stream_spk.ui.speakers_panel import format_duration

LEVEL_ICONS = {"refused": QStyle.SP_MessageBoxCritical, "warning": QStyle.SP_MessageBoxWarning,
               "info": QStyle.SP_MessageBoxInformation}


class EnrollDialog(QDialog):
    """Non-modal dialog; ``profilesChanged`` after a save, rename or delete."""

    profilesChanged = pyqtSignal()
    profileRenamed = pyqtSignal(str, str)

    def __init__(self, bridge: WorkerBridge, profiles_path: Path | None, mic_device: Callable[[], Any],
                 mic_error: Callable[[], str | None], stream_factory: Any = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Known speakers")
        self.resize(620, 520)
        self.bridge = bridge
        self.profiles_path = profiles_path
        self._mic_device = mic_device
        self._mic_error = mic_error
        self._stream_factory = stream_factory
        self._material: list[tuple[str, Any]] = []
        self._pending: commands.PendingEnrollment | None = None
        self._recorder: MicRecorder | None = None
        self._busy = False
        self.last_error: str | None = None
        self.tabs = QTabWidget()
        self.tabs.addTab(self._enroll_tab(), "Enroll a speaker")
        self.tabs.addTab(self._known_tab(), "Known speakers")
        close = QDialogButtonBox(QDialogButtonBox.Close)
        close.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        layout.addWidget(close)
        self._timer = QTimer(self)
        self._timer.setInterval(50)
        self._timer.timeout.connect(self._poll_recorder)
        self.refresh_known()
        self.update_controls()

    # ================= enroll tab =========================================================
    def _enroll_tab(self) -> QWidget:
        w = QWidget()
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("e.g. Anna")
        self.name_edit.textChanged.connect(lambda _: self._invalidate())
        self.material_list = QListWidget()
        self.material_list.setMaximumHeight(90)
        self.add_files_button = QPushButton("Add files…")
        self.add_files_button.clicked.connect(self._browse)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self._remove_material)
        self.seconds_spin = QDoubleSpinBox()
        self.seconds_spin.setRange(3, 120)
        self.seconds_spin.setDecimals(0)
        self.seconds_spin.setValue(15)
        self.seconds_spin.setSuffix(" s")
        self.record_button = QPushButton(self.style().standardIcon(QStyle.SP_MediaPlay), "Record")
        self.record_button.setToolTip("Record the speaker alone, talking naturally (8 s or more recommended)")
        self.record_button.clicked.connect(self.start_recording)
        self.stop_record_button = QPushButton("Stop")
        self.stop_record_button.clicked.connect(self.stop_recording)
        self.record_progress = QProgressBar()
        self.record_progress.setFormat("not recording")
        self.record_progress.setValue(0)
        self.record_meter = LevelMeter()
        self.check_button = QPushButton("Check")
        self.check_button.setToolTip("Find the speech, embed it and report on its quality; nothing is saved yet")
        self.check_button.clicked.connect(self.check)
        self.save_button = QPushButton("Save")
        self.save_button.clicked.connect(self.save)
        self.check_progress = QProgressBar()
        self.check_progress.setRange(0, 100)
        self.check_progress.setFormat("")
        self.check_progress.setValue(0)
        self.feedback_list = QListWidget()
        self.feedback_list.setWordWrap(True)
        self.feedback_list.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)

        files = QHBoxLayout()
        files.addWidget(self.add_files_button)
        files.addWidget(self.remove_button)
        files.addStretch(1)
        rec = QHBoxLayout()
        rec.addWidget(self.seconds_spin)
        rec.addWidget(self.record_button)
        rec.addWidget(self.stop_record_button)
        rec.addWidget(self.record_progress, 1)
        actions = QHBoxLayout()
        actions.addWidget(self.check_button)
        actions.addWidget(self.check_progress, 1)
        actions.addWidget(self.save_button)
        form = QFormLayout()
        form.addRow("Name", self.name_edit)
        form.addRow("Audio", self.material_list)
        form.addRow("", files)
        form.addRow("Microphone", rec)
        form.addRow("Level", self.record_meter)
        layout = QVBoxLayout(w)
        layout.addLayout(form)
        layout.addLayout(actions)
        layout.addWidget(QLabel("Quality"))
        layout.addWidget(self.feedback_list, 1)
        layout.addWidget(self.verdict)
        return w

    def add_files(self, paths: list[str | Path]) -> None:
        """Use these audio files as enrollment material."""
        for p in paths:
            self._material.append((Path(p).name, str(p)))
            self.material_list.addItem(f"file: {Path(p).name}")
        self._invalidate()

    def add_recording(self, samples: np.ndarray) -> None:
        n = sum(1 for label, _ in self._material if label.startswith("microphone")) + 1
        label = f"microphone {n}"
        self._material.append((label, np.asarray(samples, np.float32)))
        self.material_list.addItem(f"{label}: {samples.size / 16000:.1f} s")
        self._invalidate()

    def _browse(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Audio of one speaker", "", AUDIO_FILTER)
        if paths:
            self.add_files(paths)

    def _remove_material(self) -> None:
        row = self.material_list.currentRow()
        if 0 <= row < len(self._material):
            self._material.pop(row)
            self.material_list.takeItem(row)
            self._invalidate()

    def _invalidate(self) -> None:
        """Name or material changed: an earlier check no longer applies."""
        self._pending = None
        self.feedback_list.clear()
        self.verdict.setText("")
        self.update_controls()

    def update_controls(self) -> None:
        recording = self._recorder is not None
        mic_error = self._mic_error()
        self.record_button.setEnabled(not recording and not self._busy and mic_error is None)
        self.record_button.setToolTip(mic_error or "Record the speaker alone, talking naturally (8 s or more "
                                                   "recommended)")
        self.stop_record_button.setEnabled(recording)
        ready = bool(self.name_edit.text().strip()) and bool(self._material)
        self.check_button.setEnabled(ready and not self._busy and not recording)
        self.save_button.setEnabled(self._pending is not None and not self._busy)
        self.add_files_button.setEnabled(not self._busy)

    # --- recording ------------------------------------------------------------------------
    def start_recording(self) -> None:
        if self._recorder is not None:
            return
        rec = MicRecorder(self._mic_device(), self.seconds_spin.value(), stream_factory=self._stream_factory)
        self._recorder = rec
        rec.start()
        self._timer.start()
        self.update_controls()

    def stop_recording(self) -> None:
        if self._recorder is not None:
            self._recorder.stop()

    def _poll_recorder(self) -> None:
        rec = self._recorder
        if rec is None:
            self._timer.stop()
            return
        st = rec.state()
        total = rec.seconds
        self.record_progress.setRange(0, int(total * 10))
        self.record_progress.setValue(int(min(st.seconds, total) * 10))
        self.record_progress.setFormat(f"recording… {max(0.0, total - st.seconds):.0f} s left")
        self.record_meter.set_level(st.rms_db, st.peak_db)
        if st.done:
            self._timer.stop()
            self._recorder = None
            samples = rec.samples()
            self.record_meter.set_level(-90, -90)
            if st.error:
                self._error(f"recording failed: {st.error}")
                self.record_progress.setFormat("recording failed")
            if samples.size >= 16000 * 0.5:
                self.add_recording(samples)
                self.record_progress.setFormat(f"recorded {samples.size / 16000:.1f} s")
            self.update_controls()

    # --- check and save -------------------------------------------------------------------
    def check(self) -> None:
        """Analyse the material on the worker thread; the feedback appears when done."""
        name = self.name_edit.text().strip()
        if not name or not self._material or self._busy:
            return
        self._set_busy(True, "checking…")
        self.bridge.call(functools.partial(commands.check_enrollment, name=name, material=list(self._material)),
                         done=self._checked, failed=self._failed, progress=self._progress)

    def _progress(self, fraction: float, text: str) -> None:
        self.check_progress.setValue(int(fraction * 100))
        self.check_progress.setFormat(text)

    def _checked(self, check: commands.EnrollmentCheck) -> None:
        self._set_busy(False, "checked")
        result = check.result
        self.feedback_list.clear()
        for fb in result.feedback:
            item = QListWidgetItem(self.style().standardIcon(LEVEL_ICONS.get(fb.level, QStyle.SP_MessageBoxWarning)),
                                   fb.message)
            item.setData(Qt.UserRole, fb.code)
            self.feedback_list.addItem(item)
        if result.accepted:
            self._pending = check.pending
            self.verdict.setText(f"Ready to save {result.name!r}: {result.speech_seconds:.1f} s of speech "
                                 f"({result.n_windows} windows).")
            if not result.feedback:
                self.feedback_list.addItem(QListWidgetItem(
                    self.style().standardIcon(QStyle.SP_DialogApplyButton), "good: clean speech of one voice"))
        else:
            self._pending = None
            self.verdict.setText(f"Not enrolled: {result.feedback[0].message if result.feedback else 'refused'}.")
        self.update_controls()

    def feedback_codes(self) -> list[str]:
        return [self.feedback_list.item(i).data(Qt.UserRole) for i in range(self.feedback_list.count())
                if self.feedback_list.item(i).data(Qt.UserRole)]

    def save(self) -> None:
        """Write the checked material to the profile store."""
        if self._pending is None or self._busy:
            return
        self._set_busy(True, "saving…")
        self.bridge.call(functools.partial(commands.commit_enrollment, pending=self._pending),
                         done=self._saved, failed=self._failed)

    def _saved(self, speaker: Any) -> None:
        self._set_busy(False, "saved")
        self._pending = None
        self.verdict.setText(f"Saved {speaker.name!r} ({format_duration(speaker.speech_seconds)} of speech in "
                             "total). It is recognised from the next session on.")
        self.refresh_known()
        self.profilesChanged.emit()
        self.update_controls()

    def _failed(self, text: str) -> None:
        self._set_busy(False, "")
        self._error(text)

    def _set_busy(self, busy: bool, text: str) -> None:
        self._busy = busy
        if busy:
            self.check_progress.setValue(0)
        else:
            self.check_progress.setValue(100 if text else 0)
        self.check_progress.setFormat(text)
        self.update_controls()

    @property
    def busy(self) -> bool:
        return self._busy

    def _error(self, text: str) -> None:
        self.last_error = text
        self.verdict.setText(f"<span style='color:#C0392B'>{text}</span>")

    # ================= known speakers tab =================================================
    def _known_tab(self) -> QWidget:
        w = QWidget()
        self.known_table = QTableWidget(0, 4)
        self.known_table.setHorizontalHeaderLabels(("Name", "Speech", "Vectors", "Updated"))
        self.known_table.verticalHeader().setVisible(False)
        self.known_table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.known_table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.known_table.setEditTriggers(QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed)
        self.known_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
        self.known_table.itemChanged.connect(self._known_edited)
        self.store_label = QLabel("")
        self.store_label.setWordWrap(True)
        self.store_label.setStyleSheet("color: #6B7280;")
        rename = QPushButton("Rename")
        rename.clicked.connect(self._rename_clicked)
        delete = QPushButton("Delete")
        delete.clicked.connect(self._delete_clicked)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh_known)
        buttons = QHBoxLayout()
        buttons.addWidget(rename)
        buttons.addWidget(delete)
        buttons.addStretch(1)
        buttons.addWidget(refresh)
        layout = QVBoxLayout(w)
        layout.addWidget(self.known_table, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.store_label)
        return w

    def _store_path(self) -> Path:
        if self.profiles_path is not None:
            return Path(self.profiles_path)
        from stream_spk.profiles import default_profiles_path

        return default_profiles_path()

    def known_names(self) -> list[str]:
        return [self.known_table.item(i, 0).text() for i in range(self.known_table.rowCount())]

    def refresh_known(self) -> None:
        """Read the enrolled speakers from the store."""
        path = self._store_path()
        records = []
        if path.exists():
            try:
                with commands.open_profiles(path) as store:
                    records = store.list()
            except StreamSpkError as exc:
                self.store_label.setText(f"{path}: {exc}")
                return
        self.known_table.blockSignals(True)
        self.known_table.setRowCount(len(records))
        for i, r in enumerate(records):
            name = QTableWidgetItem(r.name)
            name.setData(Qt.UserRole, r.name)
            self.known_table.setItem(i, 0, name)
            for col, text in ((1, format_duration(r.speech_seconds)), (2, str(r.n_embeddings)),
                              (3, r.updated.replace("T", " ")[:16])):
                item = QTableWidgetItem(text)
                item.setFlags(Qt.ItemIsSelectable | Qt.ItemIsEnabled)
                self.known_table.setItem(i, col, item)
        self.known_table.blockSignals(False)
        self.store_label.setText(f"{len(records)} enrolled speaker{'s' if len(records) != 1 else ''} in {path}"
                                 if path.exists() else f"nobody enrolled yet ({path})")

    def rename_profile(self, old: str, new: str) -> bool:
        """Rename an enrolled speaker in the store; False (and a message) on failure."""
        try:
            with commands.open_profiles(self._store_path()) as store:
                store.rename(old, new)
        except StreamSpkError as exc:
            self._known_error(str(exc))
            return False
        self.refresh_known()
        self.profileRenamed.emit(old, new.strip())
        self.profilesChanged.emit()
        return True

    def delete_profile(self, name: str, confirm: bool = True) -> bool:
        """Delete an enrolled speaker (asks first when ``confirm``)."""
        if confirm and QMessageBox.question(self, "Delete speaker",
                                            f"Delete {name!r} and all their voice material?") != QMessageBox.Yes:
            return False
        try:
            with commands.open_profiles(self._store_path()) as store:
                store.delete(name)
        except StreamSpkError as exc:
            self._known_error(str(exc))
            return False
        self.refresh_known()
        self.profilesChanged.emit()
        return True

    def _known_error(self, text: str) -> None:
        self.last_error = text
        self.store_label.setText(f"<span style='color:#C0392B'>{text}</span>")

    def _selected_known(self) -> str | None:
        rows = {i.row() for i in self.known_table.selectedIndexes()}
        return self.known_table.item(rows.pop(), 0).data(Qt.UserRole) if len(rows) == 1 else None

    def _known_edited(self, item: QTableWidgetItem) -> None:
        if item.column() != 0:
            return
        old, new = item.data(Qt.UserRole), item.text().strip()
        if old and new and new != old:
            if not self.rename_profile(old, new):
                self.known_table.blockSignals(True)
                item.setText(old)
                self.known_table.blockSignals(False)

    def _rename_clicked(self) -> None:
        rows = sorted({i.row() for i in self.known_table.selectedIndexes()})
        if len(rows) == 1:
            self.known_table.editItem(self.known_table.item(rows[0], 0))

    def _delete_clicked(self) -> None:
        name = self._selected_known()
        if name:
            self.delete_profile(name)

    # ================= closing ============================================================
    def abandon(self) -> None:
        """Stop any recording and drop unsaved material (nothing was written)."""
        if self._recorder is not None:
            self._recorder.cancel()
            self._recorder = None
        self._timer.stop()
        self._pending = None
        self.update_controls()

    def reject(self) -> None:
        self.abandon()
        super().reject()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        self.abandon()
        super().closeEvent(event)
