"""Source controls: microphone (device picker) or file (open / drop), speed, playback, transport."""

from __future__ import annotations

from pathlib import Path

from PyQt5.QtCore import pyqtSignal
from PyQt5.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QStyle,
    QWidget,
)

SPEEDS: tuple[tuple[str, float | None], ...] = (("1×", 1.0), ("2×", 2.0), ("4×", 4.0),
                                                ("as fast as possible", None))
AUDIO_FILTER = "Audio files (*.wav *.flac *.ogg *.mp3 *.aiff *.aif *.opus *.m4a);;All files (*)"


def speed_label(speed: float | None) -> str:
    """``4×`` or ``as fast as possible``."""
    if speed is None:
        return "as fast as possible"
    return f"{speed:g}×"


class SourceBar(QWidget):
    """One row of controls; emits requests, holds no session state of its own."""

    startRequested = pyqtSignal()
    pauseToggled = pyqtSignal(bool)
    stopRequested = pyqtSignal()
    speedChanged = pyqtSignal(object)  # float | None
    sourceChanged = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        style = self.style()
        self.mic_radio = QRadioButton("Microphone")
        self.file_radio = QRadioButton("File")
        group = QButtonGroup(self)
        group.addButton(self.mic_radio)
        group.addButton(self.file_radio)
        self.device_combo = QComboBox()
        self.device_combo.setMinimumWidth(180)
        self.device_combo.setToolTip("Input device (stream-spk devices lists the same)")
        self.refresh_button = QPushButton()
        self.refresh_button.setIcon(style.standardIcon(QStyle.SP_BrowserReload))
        self.refresh_button.setToolTip("List the input devices again")
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("open or drop an audio file…")
        self.path_edit.setMinimumWidth(200)
        self.open_button = QPushButton("Open…")
        self.open_button.clicked.connect(self._browse)
        self.speed_combo = QComboBox()
        for text, value in SPEEDS:
            self.speed_combo.addItem(text, value)
        self.speed_combo.setToolTip("Replay speed of a file (a microphone is always live)")
        self.speed_combo.currentIndexChanged.connect(lambda _: self._speed_changed())
        self.play_check = QCheckBox("Play audio")
        self.play_check.setToolTip("Play the file while it is analysed (1× only)")
        self.start_button = QPushButton(style.standardIcon(QStyle.SP_MediaPlay), "Start")
        self.pause_button = QPushButton(style.standardIcon(QStyle.SP_MediaPause), "Pause")
        self.pause_button.setCheckable(True)
        self.stop_button = QPushButton(style.standardIcon(QStyle.SP_MediaStop), "Stop")
        self.start_button.clicked.connect(self.startRequested)
        self.pause_button.toggled.connect(self.pauseToggled)
        self.stop_button.clicked.connect(self.stopRequested)
        self.mic_radio.toggled.connect(lambda _: self._kind_changed())
        self.path_edit.textChanged.connect(lambda _: self.sourceChanged.emit())
        self._playback_reason: str | None = None
        self._devices_error: str | None = None
        self._default_device: int | None = None

        row = QHBoxLayout(self)
        row.setContentsMargins(6, 4, 6, 4)
        row.addWidget(self.mic_radio)
        row.addWidget(self.device_combo)
        row.addWidget(self.refresh_button)
        row.addSpacing(10)
        row.addWidget(self.file_radio)
        row.addWidget(self.path_edit, 1)
        row.addWidget(self.open_button)
        row.addSpacing(10)
        row.addWidget(QLabel("Speed"))
        row.addWidget(self.speed_combo)
        row.addWidget(self.play_check)
        row.addSpacing(10)
        row.addWidget(self.start_button)
        row.addWidget(self.pause_button)
        row.addWidget(self.stop_button)
        self.file_radio.setChecked(True)
        self.set_running(False)

    # --- state ----------------------------------------------------------------------------
    def kind(self) -> str:
        """``"mic"`` or ``"file"``."""
        return "mic" if self.mic_radio.isChecked() else "file"

    def file_path(self) -> Path | None:
        text = self.path_edit.text().strip()
        return Path(text).expanduser() if text else None

    def set_file(self, path: str | Path) -> None:
        self.path_edit.setText(str(path))
        self.file_radio.setChecked(True)

    def device(self) -> int | None:
        """The chosen input device index; None for the system's default input device."""
        data = self.device_combo.currentData()
        if not isinstance(data, int) or data < 0 or data == self._default_device:
            return None
        return int(data)

    def select_device(self, index: int) -> bool:
        """Choose the input device with this index; False when the picker does not list it."""
        for i in range(self.device_combo.count()):
            if self.device_combo.itemData(i) == index:
                self.device_combo.setCurrentIndex(i)
                return True
        return False

    def device_name(self) -> str:
        return self.device_combo.currentText()

    def speed(self) -> float | None:
        return self.speed_combo.currentData()

    def set_speed(self, speed: float | None) -> None:
        for i in range(self.speed_combo.count()):
            if self.speed_combo.itemData(i) == speed:
                self.speed_combo.setCurrentIndex(i)
                return
        self.speed_combo.addItem(speed_label(speed), speed)
        self.speed_combo.setCurrentIndex(self.speed_combo.count() - 1)

    def playback(self) -> bool:
        return self.play_check.isEnabled() and self.play_check.isChecked()

    def set_devices(self, devices: list[dict], error: str | None = None) -> None:
        """Fill the device picker; ``error`` (no PortAudio...) or no devices disables the microphone."""
        self.device_combo.clear()
        self._devices_error = error
        self._default_device = None
        if error is not None:
            self.device_combo.addItem("microphone unavailable", -1)
            self.device_combo.setToolTip(error)
        elif not devices:
            self._devices_error = "no audio input device found (is a microphone connected?)"
            self.device_combo.addItem("no input device found", -1)
            self.device_combo.setToolTip(self._devices_error)
        else:
            self._default_device = next((int(d["index"]) for d in devices if d.get("is_default")), None)
            for d in devices:
                mark = " (default)" if d.get("is_default") else ""
                self.device_combo.addItem(f"{d['index']}: {d['name']}{mark}", int(d["index"]))
                if d.get("is_default"):
                    self.device_combo.setCurrentIndex(self.device_combo.count() - 1)
            self.device_combo.setToolTip("Input device")
        self.mic_radio.setToolTip(self._devices_error or "Analyse the microphone live")
        self._kind_changed()

    @property
    def microphone_error(self) -> str | None:
        """Why the microphone cannot be used (None when it can)."""
        return self._devices_error

    def set_playback_unavailable(self, reason: str | None) -> None:
        self._playback_reason = reason
        self._kind_changed()

    def set_running(self, running: bool, paused: bool = False) -> None:
        """Enable the controls that make sense now."""
        self._running = running
        for w in (self.mic_radio, self.file_radio, self.device_combo, self.refresh_button, self.path_edit,
                  self.open_button, self.play_check):
            w.setEnabled(not running)
        self.start_button.setEnabled(not running)
        self.pause_button.setEnabled(running)
        self.stop_button.setEnabled(running)
        self.pause_button.blockSignals(True)
        self.pause_button.setChecked(paused)
        self.pause_button.blockSignals(False)
        self._kind_changed()

    # --- internals ------------------------------------------------------------------------
    def _kind_changed(self) -> None:
        running = getattr(self, "_running", False)
        mic = self.kind() == "mic"
        self.speed_combo.setEnabled(not mic)
        reason = self._playback_reason
        if reason is None and mic:
            reason = "playback is for files"
        elif reason is None and self.speed() != 1.0:
            reason = "audio playback only at 1×"
        self.play_check.setEnabled(reason is None and not running)
        self.play_check.setToolTip(reason or "Play the file while it is analysed")
        self.sourceChanged.emit()

    def _speed_changed(self) -> None:
        self._kind_changed()
        self.speedChanged.emit(self.speed())

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a recording", str(self.file_path() or ""), AUDIO_FILTER)
        if path:
            self.set_file(path)
