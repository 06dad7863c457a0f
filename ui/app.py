"""The main window of the desktop app, and its entry point (``stream-spk gui`` / ``stream-spk-gui``).

Threads: the microphone callback only enqueues (:class:`MicSource`); one worker thread
(:class:`SessionWorker`) loads the model and runs :class:`StreamRunner`; this GUI thread drains
the worker's outbox every 50 ms (:class:`WorkerBridge`), applies events to the pure
:class:`TimelineModel` and redraws what changed. The GUI thread never waits on the model.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PyQt5.QtCore import Qt, QTimer
from PyQt5.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent
from PyQt5.QtWidgets import (
    QAction,
    QApplication,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from stream_spk.errors import StreamSpkError
from stream_spk.session import SessionOptions
from stream_spk.sources import FileSource, MicSource, list_input_devices
from stream_spk.types import Event, SpeakerTurn, Stats
from stream_spk.ui import colors, commands, export
from stream_spk.ui.bridge import WorkerBridge
from stream_spk.ui.enroll_dialog import EnrollDialog
from stream_spk.ui.levels import SignalHistory
from stream_spk.ui.messages import Batch, ModelReady, SessionEnded, SessionStarted
from stream_spk.ui.playback import AudioPlayer, playback_unavailable
from stream_spk.ui.signal_strip import SignalStrip
from stream_spk.ui.source_bar import SourceBar, speed_label
from stream_spk.ui.speakers_panel import SpeakerRow, SpeakersPanel
from stream_spk.ui.status_panel import StatusPanel
from stream_spk.ui.timeline import TimelineView
from stream_spk.ui.timeline_model import TimelineModel
from stream_spk.ui.worker import PipelineFactory, SessionWorker

log = logging.getLogger("stream_spk.ui")

FRAME_MS = 50  # GUI refresh period: drain the worker, redraw (20 fps at most)
PACED_CHUNK = 0.25  # seconds per chunk read from a source (smooth meters at paced speeds)
# As fast as possible, the worker joins a file's chunks into this many seconds per pipeline call
# (Feed): the pipeline batches a chunk's step-grid points into one call per network, so this sets
# the batch size. 4 s is what `diarize` feeds; on the 2-core dev machine the app then replays at
# 0.93-0.98 of diarize's throughput, against 0.49-0.54 with 0.5 s and 0.82-0.84 with 2 s, and the
# GUI stays smooth (longest stall 29 ms; bench/gui_responsiveness.py --fast --fast-chunk 0.5,2,4
# --compare-diarize, see README).
FAST_CHUNK = 4.0
EXIT_JOIN_SECONDS = 20.0  # after the window closed: let the worker finish its chunk (never kill torch mid-call)


@dataclass
class LaunchOptions:
    """Automation: replay a file (or listen to a microphone) at once, take a screenshot, quit."""

    replay: Path | None = None
    speed: float | None = 1.0
    mic: bool = False  # start a microphone session at once
    device: int | None = None  # ... on this input device (None: the default input)
    seconds: float | None = None  # ... and stop it after this much captured audio
    screenshot: Path | None = None
    screenshot_at: float | None = None
    exit_when_done: bool = False


class MainWindow(QMainWindow):
    """Source controls, live timeline, signal strip, speakers panel, status bar."""

    def __init__(self, options: SessionOptions | None = None, launch: LaunchOptions | None = None, *,
                 pipeline_factory: PipelineFactory | None = None, mic_stream_factory: Any = None,
                 output_factory: Any = None, list_devices: Callable[[], list[dict]] = list_input_devices,
                 check_playback: Callable[[], str | None] = playback_unavailable) -> None:
        super().__init__()
        self.options = options or SessionOptions()
        self.launch = launch or LaunchOptions()
        self._mic_factory = mic_stream_factory
        self._output_factory = output_factory
        self._list_devices = list_devices
        self._check_playback = check_playback
        self.setWindowTitle("stream-spk — who is speaking")
        self.resize(1360, 820)
        self.setAcceptDrops(True)

        self.model = TimelineModel()
        self.history = SignalHistory()
        self.events: list[Event] = []
        self.worker = SessionWorker(self.options, pipeline_factory)
        self.bridge = WorkerBridge(self.worker, interval_ms=None, parent=self)
        self.running = False
        self.paused = False
        self.finished_sessions = 0
        self.last_error: str | None = None
        self.last_session: SessionEnded | None = None
        self.last_stats: Stats | None = None
        self.model_info: ModelReady | None = None
        self.exit_code = 0
        self._known: tuple[str, ...] = ()
        self._uri = "session"
        self._source: Any = None
        self._description = ""
        self._speed: float | None = None
        self._chunk = PACED_CHUNK
        self._stream_now = 0.0
        self._now_wall = time.monotonic()
        self._shot_taken = False
        self._launch_stopped = False
        self._error_box: QMessageBox | None = None
        self.enroll_dialog: EnrollDialog | None = None

        self._build_ui()
        self._build_menus()
        self._connect()
        self.worker.start()
        self.worker.load_model()
        self.frame_timer = QTimer(self)
        self.frame_timer.setInterval(FRAME_MS)
        self.frame_timer.timeout.connect(self.tick)
        self.frame_timer.start()
        QTimer.singleShot(0, self._probe_audio)
        if self.launch.replay is not None:
            self.source_bar.set_file(self.launch.replay)
            self.source_bar.set_speed(self.launch.speed)
            QTimer.singleShot(0, self.start_session)
        elif self.launch.mic:
            QTimer.singleShot(0, self._launch_mic)  # after _probe_audio has listed the devices

    # ================= layout =============================================================
    def _build_ui(self) -> None:
        self.source_bar = SourceBar()
        self.timeline = TimelineView(self.model)
        self.strip = SignalStrip(self.history)
        self.strip.link_x(self.timeline.plot)
        self.speakers = SpeakersPanel()
        self.known_button = QPushButton("Known speakers…")
        self.known_button.setToolTip("Enroll a speaker from the microphone or files; rename or delete enrolled "
                                     "speakers")
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Save the session as RTTM or JSON")
        panel_buttons = QHBoxLayout()
        panel_buttons.setContentsMargins(6, 0, 6, 6)
        panel_buttons.addWidget(self.known_button)
        panel_buttons.addWidget(self.export_button)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.speakers, 1)
        right_layout.addLayout(panel_buttons)
        right.setMinimumWidth(300)

        left = QSplitter(Qt.Vertical)
        left.addWidget(self.timeline)
        left.addWidget(self.strip)
        left.setStretchFactor(0, 5)
        left.setStretchFactor(1, 1)
        left.setSizes([560, 130])
        main = QSplitter(Qt.Horizontal)
        main.addWidget(left)
        main.addWidget(right)
        main.setStretchFactor(0, 1)
        main.setStretchFactor(1, 0)
        main.setSizes([1040, 320])
        line = QFrame()
        line.setFrameShape(QFrame.HLine)
        line.setStyleSheet(f"color: {colors.GRID};")
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(4, 2, 4, 0)
        layout.setSpacing(2)
        layout.addWidget(self.source_bar)
        layout.addWidget(line)
        layout.addWidget(main, 1)
        self.setCentralWidget(central)
        self.status = StatusPanel(self.statusBar())
        self.status.message("loading model…")

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self._action(file_menu, "&Open recording…", self.source_bar._browse, "Ctrl+O")
        file_menu.addSeparator()
        self._action(file_menu, "Export &RTTM…", lambda: self.export_rttm())
        self._action(file_menu, "Export &JSON…", lambda: self.export_json())
        self._action(file_menu, "Save &screenshot…", lambda: self.save_screenshot())
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, "Ctrl+Q")
        session = bar.addMenu("&Session")
        self._action(session, "&Start", self.start_session, "Ctrl+Return")
        self._action(session, "S&top", self.stop_session, "Ctrl+.")
        speakers = bar.addMenu("S&peakers")
        self._action(speakers, "&Known speakers and enrollment…", self.open_enroll_dialog, "Ctrl+K")
        view = bar.addMenu("&View")
        self._action(view, "&Follow live", lambda: self.timeline.set_follow(True), "F")
        self._action(view, "Show &whole session", self.timeline.show_all, "Ctrl+0")

    def _action(self, menu: Any, text: str, slot: Callable[[], Any], shortcut: str | None = None) -> QAction:
        act = QAction(text, self)
        if shortcut:
            act.setShortcut(shortcut)
        act.triggered.connect(lambda _=False: slot())
        menu.addAction(act)
        return act

    def _connect(self) -> None:
        sb = self.source_bar
        sb.startRequested.connect(self.start_session)
        sb.stopRequested.connect(self.stop_session)
        sb.pauseToggled.connect(self.set_paused)
        sb.speedChanged.connect(self._speed_changed)
        sb.refresh_button.clicked.connect(self._probe_audio)
        self.speakers.renameRequested.connect(self.rename_speaker)
        self.speakers.mergeRequested.connect(self.merge_speakers)
        self.speakers.saveRequested.connect(self._ask_known_name)
        self.known_button.clicked.connect(self.open_enroll_dialog)
        self.export_button.clicked.connect(self._export_menu)
        b = self.bridge
        b.batch.connect(self._on_batch)
        b.status.connect(lambda text: self.status.message(text))
        b.modelReady.connect(self._on_model_ready)
        b.sessionStarted.connect(self._on_session_started)
        b.sessionEnded.connect(self._on_session_ended)
        b.failure.connect(self.show_error)

    def _probe_audio(self) -> None:
        """List input devices and check playback (imports sounddevice; quick)."""
        try:
            self.source_bar.set_devices(self._list_devices())
        except StreamSpkError as exc:
            self.source_bar.set_devices([], str(exc))
        except Exception as exc:  # a broken audio stack must not take the window down
            self.source_bar.set_devices([], f"cannot list audio devices ({type(exc).__name__}: {exc})")
        self.source_bar.set_playback_unavailable(self._check_playback())

    def _launch_mic(self) -> None:
        sb = self.source_bar
        sb.mic_radio.setChecked(True)
        if self.launch.device is not None and not sb.select_device(self.launch.device):
            self.show_error(f"no input device with index {self.launch.device} (see stream-spk devices)")
            self._launch_failed()
            return
        if not self.start_session():
            self._launch_failed()

    def _launch_failed(self) -> None:
        self.exit_code = 2
        if self.launch.exit_when_done:
            QTimer.singleShot(0, self.quit_app)

    # ================= session control ====================================================
    def start_session(self) -> bool:
        """Start analysing the chosen source; False (and a message) when it cannot start."""
        if self.running:
            return False
        sb = self.source_bar
        try:
            if sb.kind() == "file":
                path = sb.file_path()
                if path is None:
                    raise StreamSpkError("choose a recording first (Open…, or drop a file on the window)")
                speed, chunk = sb.speed(), PACED_CHUNK  # joined into FAST_CHUNK while as fast as possible
                source: Any = FileSource(path, chunk_seconds=chunk, speed=None)
                live, description, duration, uri = False, path.name, source.duration, path.stem
            else:
                if sb.microphone_error:
                    raise StreamSpkError(sb.microphone_error)
                speed, chunk = 1.0, PACED_CHUNK
                source = MicSource(sb.device(), chunk_seconds=chunk, stream_factory=self._mic_factory)
                live, description, duration, uri = True, "microphone", None, "microphone"
        except StreamSpkError as exc:
            self.show_error(str(exc))
            return False
        player = None
        if not live and sb.playback() and speed == 1.0:
            player = AudioPlayer(self._output_factory)
        self.model.reset()
        self.history.clear()
        self.events.clear()
        self.last_stats = None
        self._uri, self._description, self._speed, self._chunk = uri, description, speed, chunk
        self._source = source
        self._stream_now, self._now_wall = 0.0, time.monotonic()
        self.timeline.set_follow(True)
        self.worker.start_session(source, speed=None if live else speed, live=live, description=description,
                                  duration=duration, player=player, fast_chunk=None if live else FAST_CHUNK)
        self._set_running(True)
        self.status.message(f"starting {description}…")
        return True

    def stop_session(self) -> None:
        if self.running:
            self.worker.stop_session()
            self.status.message("stopping…")

    def set_paused(self, paused: bool) -> None:
        if not self.running:
            return
        self.paused = paused
        self.worker.pause(paused)
        self._now_wall = time.monotonic()
        self.source_bar.set_running(True, paused)
        if paused:
            self.status.message("paused" + (" — microphone audio is not analysed meanwhile"
                                            if self.source_bar.kind() == "mic" else ""))
        else:
            self.status.message("resumed")

    def _speed_changed(self, speed: float | None) -> None:
        if self.running and self.source_bar.kind() == "file":
            self._speed = speed
            self.worker.set_speed(speed)
            self.status.message("replaying " + ("as fast as possible" if speed is None else f"at {speed_label(speed)}"))

    def _set_running(self, running: bool) -> None:
        self.running = running
        if not running:
            self.paused = False
        self.source_bar.set_running(running, self.paused)

    # ================= worker messages ====================================================
    def _on_batch(self, batch: Batch) -> None:
        self.model.apply(batch.events)
        for ev in batch.events:
            if isinstance(ev, Stats):
                self.last_stats = ev
                self.status.set_stats(ev)
            if not (isinstance(ev, SpeakerTurn) and ev.status == "provisional"):
                self.events.append(ev)
        for frame in batch.levels:
            self.history.add(frame)
        if batch.now is not None and batch.now >= self._stream_now:
            self._stream_now = batch.now
            self._now_wall = time.monotonic()
            self.model.advance(batch.now)

    def _on_model_ready(self, msg: ModelReady) -> None:
        self.model_info = msg
        self._known = msg.known
        self.status.set_model(msg.device, msg.precision)
        if not self.running:
            self.status.message("model ready: open a recording or choose the microphone, then Start", 8000)

    def _on_session_started(self, msg: SessionStarted) -> None:
        self._known = msg.known
        if msg.duration is None:
            self.status.message("listening to the microphone…")
        else:
            pace = "as fast as possible" if self._speed is None else f"at {speed_label(self._speed)}"
            self.status.message(f"replaying {msg.description} ({msg.duration:.1f} s) {pace}")

    def _on_session_ended(self, msg: SessionEnded) -> None:
        self.model.end_of_stream()
        self._set_running(False)
        self.last_session = msg
        self.finished_sessions += 1
        if msg.error:
            self.show_error(msg.error)
            self.exit_code = 1
        else:
            speed = msg.audio_seconds / msg.wall_seconds if msg.wall_seconds > 0 else 0.0
            verb = "stopped" if msg.stopped else "done"
            notes = self._source.warnings() if isinstance(self._source, FileSource) else []
            self.status.message(f"{verb}: {msg.audio_seconds:.1f} s of audio in {msg.wall_seconds:.1f} s "
                                f"({speed:.1f}× real time)" + "".join(f" — warning: {n}" for n in notes))
        self.refresh_view()
        self._automation_at_end()

    # ================= drawing ============================================================
    @property
    def stream_now(self) -> float:
        """Stream time of the end of the last chunk the worker processed."""
        return self._stream_now

    def display_now(self) -> float:
        """Stream time for the cursor: the last chunk's end, advanced smoothly in real time."""
        now = self._stream_now
        if self.running and not self.paused and self._speed is not None:
            now += min((time.monotonic() - self._now_wall) * self._speed, self._chunk)
        return now

    def tick(self) -> None:
        """One frame: drain the worker, redraw what changed, run automation."""
        self.bridge.drain()
        self.refresh_view()
        self._automation_tick()

    def refresh_view(self) -> None:
        self.timeline.refresh(self.display_now())
        self.strip.refresh()
        self.speakers.set_rows(self.speaker_rows())

    def speaker_rows(self) -> list[SpeakerRow]:
        """Speakers heard in this session, then enrolled speakers not heard yet."""
        times, shares = self.model.talk_times(), self.model.shares()
        rows = [SpeakerRow(lane.label, colors.color_for(lane.color), times.get(lane.label, 0.0),
                           shares.get(lane.label, 0.0), lane.known) for lane in self.model.lanes()]
        heard = {r.label for r in rows}
        rows += [SpeakerRow(name, "#C9CED6", 0.0, 0.0, True) for name in self._known if name not in heard]
        return rows

    # ================= speaker commands ===================================================
    def rename_speaker(self, label: str, new_label: str) -> None:
        """Rename a session speaker (on the worker, between chunks)."""
        self.bridge.call(functools.partial(commands.rename_speaker, label=label, new_label=new_label),
                         done=lambda ev: self.status.message(f"{ev.old} is now {ev.new}", 6000),
                         failed=lambda text: self.show_error(f"cannot rename {label}: {text}"))

    def merge_speakers(self, keep: str, drop: str) -> None:
        """Merge speaker ``drop`` into ``keep``."""
        self.bridge.call(functools.partial(commands.merge_speakers, keep=keep, drop=drop),
                         done=lambda ev: self.status.message(f"merged {ev.old} into {ev.new}", 6000),
                         failed=lambda text: self.show_error(f"cannot merge {drop} into {keep}: {text}"))

    def _ask_known_name(self, label: str) -> None:
        dialog = QInputDialog(self)
        dialog.setWindowTitle("Save as known speaker")
        dialog.setLabelText(f"Name for {label} (recognised in later sessions):")
        dialog.textValueSelected.connect(lambda name: self.save_as_known(label, name))
        dialog.open()

    def save_as_known(self, label: str, name: str) -> None:
        """Enroll a session speaker from the voice heard in this session."""
        def done(saved: str) -> None:
            self.model.mark_known(saved)
            if saved not in self._known:
                self._known = (*self._known, saved)
            self.status.message(f"saved {label} as the known speaker {saved!r}", 8000)
            if self.enroll_dialog is not None:
                self.enroll_dialog.refresh_known()

        self.bridge.call(functools.partial(commands.save_session_speaker, label=label, name=name), done=done,
                         failed=lambda text: self.show_error(f"cannot save {label}: {text}"))

    def open_enroll_dialog(self) -> EnrollDialog:
        if self.enroll_dialog is None:
            path = Path(self.options.profiles) if self.options.profiles else None
            dlg = EnrollDialog(self.bridge, path, self.source_bar.device, self._enroll_mic_error,
                               stream_factory=self._mic_factory, parent=self)
            dlg.profilesChanged.connect(lambda: self.bridge.call(commands.mark_profiles_changed))
            dlg.profileRenamed.connect(self._profile_renamed)
            self.enroll_dialog = dlg
        self.enroll_dialog.refresh_known()
        self.enroll_dialog.update_controls()
        self.enroll_dialog.show()
        self.enroll_dialog.raise_()
        return self.enroll_dialog

    def _enroll_mic_error(self) -> str | None:
        return self.source_bar.microphone_error

    def _profile_renamed(self, old: str, new: str) -> None:
        self._known = tuple(new if k == old else k for k in self._known)
        if self.model.lane(old) is not None:
            self.rename_speaker(old, new)

    # ================= export and screenshots =============================================
    def _export_menu(self) -> None:
        menu = QMenu(self)
        menu.addAction("RTTM…", lambda: self.export_rttm())
        menu.addAction("JSON…", lambda: self.export_json())
        menu.popup(self.export_button.mapToGlobal(self.export_button.rect().bottomLeft()))

    def _save_path(self, title: str, suffix: str, filt: str) -> Path | None:
        default = str(Path.cwd() / f"{self._uri}{suffix}")
        path, _ = QFileDialog.getSaveFileName(self, title, default, filt)
        return Path(path) if path else None

    def export_rttm(self, path: str | Path | None = None) -> Path | None:
        """Write the session's final turns (current names) as RTTM."""
        path = Path(path) if path else self._save_path("Export RTTM", ".rttm", "RTTM (*.rttm)")
        if path is None:
            return None
        try:
            n = export.write_rttm(self.model, path, self._uri)
        except StreamSpkError as exc:
            self.show_error(str(exc))
            return None
        self.status.message(f"wrote {n} turns to {path}", 8000)
        return path

    def export_json(self, path: str | Path | None = None) -> Path | None:
        """Write speakers, turns and the event log as JSON."""
        path = Path(path) if path else self._save_path("Export JSON", ".json", "JSON (*.json)")
        if path is None:
            return None
        info = {"source": self._description, "latency": self.options.latency}
        try:
            export.write_json(self.model, self.events, path, self._uri, info)
        except StreamSpkError as exc:
            self.show_error(str(exc))
            return None
        self.status.message(f"wrote {path}", 8000)
        return path

    def save_screenshot(self, path: str | Path | None = None) -> bool:
        """Save a PNG of the window as it is now."""
        if path is None:
            chosen, _ = QFileDialog.getSaveFileName(self, "Save screenshot", "stream-spk.png", "PNG (*.png)")
            if not chosen:
                return False
            path = chosen
        self.refresh_view()
        ok = self.grab().save(str(path), "PNG")
        if not ok:
            self.show_error(f"cannot write the screenshot {path}")
        return ok

    # ================= automation =========================================================
    def _automation_tick(self) -> None:
        la = self.launch
        if la.mic and la.seconds is not None and self.running and not self._launch_stopped \
                and self._stream_now >= la.seconds:
            self._launch_stopped = True
            self.stop_session()
        if la.screenshot is None or la.screenshot_at is None or self._shot_taken or not self.running:
            return
        if self._stream_now >= la.screenshot_at:
            self._take_launch_screenshot()
            if la.exit_when_done:
                self.worker.stop_session()
                QTimer.singleShot(0, self.quit_app)

    def _automation_at_end(self) -> None:
        la = self.launch
        if (la.replay is None and not la.mic) or self.finished_sessions != 1:
            return
        if la.screenshot is not None and not self._shot_taken:
            self._take_launch_screenshot()
        if la.exit_when_done:
            QTimer.singleShot(0, self.quit_app)

    def _take_launch_screenshot(self) -> None:
        self._shot_taken = True
        if self.save_screenshot(self.launch.screenshot):
            print(f"stream-spk: screenshot saved to {self.launch.screenshot}", file=sys.stderr)
        else:
            self.exit_code = 1

    def quit_app(self) -> None:
        """Close the window and leave the event loop with ``exit_code``."""
        code = self.exit_code
        self.close()
        app = QApplication.instance()
        if app is not None:
            app.exit(code)

    # ================= errors, drops, closing =============================================
    def show_error(self, text: str) -> None:
        """A dialog (non-blocking) plus a status message; never a traceback."""
        self.last_error = text
        self.status.message(f"error: {text}", 15000)
        if self.launch.exit_when_done:
            print(f"stream-spk: error: {text}", file=sys.stderr)
            return
        if self._error_box is not None:
            self._error_box.close()
        box = QMessageBox(QMessageBox.Warning, "stream-spk", text, QMessageBox.Ok, self)
        box.setAttribute(Qt.WA_DeleteOnClose)
        box.finished.connect(lambda _: setattr(self, "_error_box", None))
        self._error_box = box
        box.open()

    @property
    def error_box(self) -> QMessageBox | None:
        return self._error_box

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt name)
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 (Qt name)
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.use_file(paths[0])

    def use_file(self, path: str | Path) -> bool:
        """Choose a dropped/opened file as the source (checked at once)."""
        from stream_spk.audio import audio_info

        try:
            audio_info(path)
        except StreamSpkError as exc:
            self.show_error(str(exc))
            return False
        self.source_bar.set_file(path)
        self.status.message(f"{Path(path).name}: press Start to replay it"
                            + (" (after stopping the current session)" if self.running else ""), 8000)
        return True

    def shutdown(self, timeout: float = 3.0) -> bool:
        """Stop the session and the worker (queued commands finish first); True if it ended in time."""
        self.frame_timer.stop()
        if self.enroll_dialog is not None:
            self.enroll_dialog.abandon()
            self.enroll_dialog.close()
        ended = self.worker.shutdown(timeout)
        if not ended:
            log.warning("the worker thread did not stop within %.1f s", timeout)
        return ended

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt name)
        if self.frame_timer.isActive():
            self.shutdown()
        event.accept()


# ================= entry point ============================================================
def _excepthook(window_ref: list) -> Callable[..., None]:
    def hook(exc_type: type, exc: BaseException, tb: Any) -> None:
        traceback.print_exception(exc_type, exc, tb)
        if window_ref and window_ref[0] is not None:
            window_ref[0].show_error(f"unexpected error: {exc_type.__name__}: {exc}")
    return hook


def build_parser() -> argparse.ArgumentParser:
    from stream_spk.cli.gui_cmd import add_arguments

    parser = argparse.ArgumentParser(prog="stream-spk-gui",
                                     description="Real-time speaker diarization and recognition: the desktop app.")
    add_arguments(parser)
    return parser


def launch_options(args: argparse.Namespace) -> LaunchOptions:
    return LaunchOptions(replay=Path(args.replay) if args.replay else None,
                         speed=None if args.fast else args.speed, mic=bool(getattr(args, "mic", False)),
                         device=getattr(args, "device_index", None), seconds=getattr(args, "seconds", None),
                         screenshot=Path(args.screenshot) if args.screenshot else None,
                         screenshot_at=args.screenshot_at, exit_when_done=args.exit_when_done)


def session_options(args: argparse.Namespace) -> SessionOptions:
    return SessionOptions(model_file=args.model_file, precision=args.precision, compute_device=args.compute_device,
                          backend=getattr(args, "backend", "auto"), latency=args.latency, profiles=args.profiles,
                          second_look=getattr(args, "second_look", True))


def check_microphone(device: str | None, stream_factory: Any = None) -> int | None:
    """Resolve ``--device`` and open-check it before any window opens (a one-line error if it
    cannot be used); returns the device index, None for the default input."""
    dev: int | str | None = int(device) if device is not None and device.strip().isdigit() else device
    source = MicSource(dev, stream_factory=stream_factory)
    source.open()
    source.close()
    source.wait_released(1.0)
    return source.device_index if dev is not None else None


def run_gui(args: argparse.Namespace) -> int:
    """Open the window for parsed arguments; returns the exit status."""
    if args.screenshot_at is not None and not args.screenshot:
        raise StreamSpkError("--screenshot-at needs --screenshot PNG")
    mic = bool(getattr(args, "mic", False))
    if mic and args.replay:
        raise StreamSpkError("--mic and --replay: choose one source")
    if not mic and (getattr(args, "device", None) is not None or getattr(args, "seconds", None) is not None):
        raise StreamSpkError("--device and --seconds need --mic")
    if (args.screenshot or args.exit_when_done) and not (args.replay or mic):
        raise StreamSpkError("--screenshot and --exit-when-done need --replay FILE or --mic")
    if args.replay:
        from stream_spk.audio import audio_info

        audio_info(args.replay)  # a bad file is a one-line error before any window opens
    args.device_index = check_microphone(args.device) if mic else None
    logging.basicConfig(level=logging.WARNING, format="stream-spk: %(message)s")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("stream-spk")
    window_ref: list = [None]
    previous_hook = sys.excepthook
    sys.excepthook = _excepthook(window_ref)
    window = None
    try:
        window = MainWindow(session_options(args), launch_options(args))
        window_ref[0] = window
        window.show()
        code = app.exec_()
    finally:
        window_ref[0] = None
        sys.excepthook = previous_hook
        if window is not None and not window.worker.shutdown(EXIT_JOIN_SECONDS):
            log.warning("the worker thread is still busy; exiting anyway")
    return int(code or window.exit_code)


def main(argv: Sequence[str] | None = None) -> int:
    """``stream-spk-gui`` entry point."""
    from stream_spk.runtime import configure_threads

    configure_threads()
    from stream_spk.cli.gui_cmd import check_gui_available

    args = build_parser().parse_args(argv)
    try:
        check_gui_available()
        return run_gui(args)
    except StreamSpkError as exc:
        print(f"stream-spk-gui: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
