"""The main window: camera grid on the left, people on the right, sources and pause in the toolbar.

The window owns one `PipelineWorker` at a time and only reacts to its signals; nothing here decodes,
infers, links or touches the store. Changing models in Settings restarts the worker with the same sources.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

from PyQt6.QtCore import QObject, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import (QApplication, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QHBoxLayout, QLabel,
                             QMainWindow, QMessageBox, QPushButton, QSplitter, QVBoxLayout, QWidget)

from tracklink.app.viewer.grid import CameraGrid
from tracklink.app.viewer.people import PeoplePanel
from tracklink.app.viewer.settings import SettingsDialog, ViewerOptions, ViewerSettings
from tracklink.app.viewer.messages import RunInfo, StageSnapshot, backend_label
from tracklink.app.viewer.worker import PipelineWorker

log = logging.getLogger(__name__)

SHOWN_STAGES = ("decode", "detect", "embed", "link")
SHOT_SETTLE_MS = 300  # after the last step, let queued frames and people reach the widgets before the grab


# The default window fits a 1600x900 screen (a common laptop, and the README's Xvfb screen) with its title bar,
# a panel and the status bar whole; on a smaller screen it takes 92% of the available area.
DEFAULT_SIZE = (1480, 800)


def default_size(available=None) -> tuple[int, int]:
    if available is None or available.width() <= 0:
        return DEFAULT_SIZE
    return (min(DEFAULT_SIZE[0], int(available.width() * 0.92)), min(DEFAULT_SIZE[1], int(available.height() * 0.92)))


def _offscreen() -> bool:
    """Rendering without a screen (tests, --screenshot on a headless machine): no real window geometry."""
    return QApplication.platformName() in ("offscreen", "minimal")


class EventLoopProbe(QObject):
    """How late the UI thread runs a precise timer: the stall a user would feel, in milliseconds."""

    def __init__(self, interval_ms: int = 10, window_s: float = 5.0, parent: QObject | None = None):
        super().__init__(parent)
        self.interval = interval_ms / 1000.0
        self.window_s = window_s
        self.samples: deque[tuple[float, float]] = deque()  # (time, lateness ms)
        self.max_ms = 0.0
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._tick)
        self._last: float | None = None

    def start(self) -> None:
        self._last = time.perf_counter()
        self._timer.start(round(self.interval * 1000))

    def stop(self) -> None:
        self._timer.stop()

    def reset(self) -> None:
        self.samples.clear()
        self.max_ms = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        late = max(0.0, (now - self._last - self.interval) * 1000.0) if self._last is not None else 0.0
        self._last = now
        self.samples.append((now, late))
        self.max_ms = max(self.max_ms, late)
        while self.samples and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()

    def recent_max_ms(self) -> float:
        return max((s[1] for s in self.samples), default=0.0)


class AddSourceDialog(QDialog):
    """A file, a camera index or a stream URL; recent sources are one click away."""

    def __init__(self, recent: list[str], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Add source")
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.addItems(recent)
        self.combo.setCurrentText("")
        self.combo.lineEdit().setPlaceholderText("video file, image folder, camera index (0) or rtsp://… ; NAME=… names it")
        self.combo.setMinimumWidth(460)
        file_button, folder_button = QPushButton("File…"), QPushButton("Folder…")
        file_button.clicked.connect(self._pick_file)
        folder_button.clicked.connect(self._pick_folder)
        row = QHBoxLayout()
        row.addWidget(self.combo, 1)
        row.addWidget(file_button)
        row.addWidget(folder_button)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(buttons)

    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Video file", "", "Videos (*.mp4 *.avi *.mkv *.mov *.webm);;All (*)")
        if path:
            self.combo.setCurrentText(path)

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Image folder (MOTChallenge sequence)")
        if path:
            self.combo.setCurrentText(path)

    def text(self) -> str:
        return self.combo.currentText().strip()


class MainWindow(QMainWindow):
    screenshot_saved = pyqtSignal(str)

    def __init__(self, options: ViewerOptions, settings: ViewerSettings | None = None,
                 screenshot: str | Path | None = None, probe_interval_ms: int = 25):
        super().__init__()
        self.settings = settings or ViewerSettings()
        self.options = options
        self.screenshot = Path(screenshot) if screenshot else None
        self.exit_code: int | None = None
        self.worker: PipelineWorker | None = None
        self.info: RunInfo | None = None
        self.sources: dict[str, str] = {}  # camera -> text that reopens it, in the order they were added
        self.ui_frames = 0  # tile repaints with a new frame, for the UI frame rate
        self._ui_window: deque[tuple[float, int]] = deque()
        self.ui_fps: float | None = None
        self._first_frame: float | None = None
        self.last_stats: StageSnapshot | None = None
        self.dialogs: list[QMessageBox] = []  # open message boxes (non-blocking), kept for tests

        self.grid = CameraGrid()
        self.panel = PeoplePanel()
        self.split = QSplitter(Qt.Orientation.Horizontal)
        self.split.addWidget(self.grid)
        self.split.addWidget(self.panel)
        self.split.setStretchFactor(0, 3)
        self.split.setStretchFactor(1, 1)
        self.setCentralWidget(self.split)
        self.grid.remove_requested.connect(self.remove_source)
        self.panel.person_selected.connect(self.grid.set_highlight)
        self.panel.search_requested.connect(self._search)

        bar = self.addToolBar("main")
        bar.setMovable(False)
        self.add_action = QAction("Add source…", self)
        self.add_action.setShortcut(QKeySequence("Ctrl+O"))
        self.add_action.triggered.connect(self._ask_source)
        self.pause_action = QAction("Pause", self)
        self.pause_action.setCheckable(True)
        self.pause_action.setShortcut(QKeySequence(Qt.Key.Key_Space))
        self.pause_action.toggled.connect(self.set_paused)
        self.settings_action = QAction("Settings…", self)
        self.settings_action.triggered.connect(self._edit_settings)
        for action in (self.add_action, self.pause_action, self.settings_action):
            bar.addAction(action)

        self.state_label = QLabel()
        self.stage_label = QLabel()
        self.ui_label = QLabel()
        self.backend_label = QLabel()
        status = self.statusBar()
        status.addWidget(self.state_label)
        status.addWidget(self.stage_label, 1)
        status.addPermanentWidget(self.ui_label)
        status.addPermanentWidget(self.backend_label)

        self.probe = EventLoopProbe(probe_interval_ms, parent=self)
        self.probe.start()
        self._ui_timer = QTimer(self)
        self._ui_timer.timeout.connect(self._update_ui_rate)
        self._ui_timer.start(1000)

        geometry = self.settings.value("window/geometry")
        if _offscreen():  # no screen to fit: render at the size a 1600x900 desktop gets
            self.resize(*DEFAULT_SIZE)
        elif geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(*default_size(self.screen().availableGeometry().size() if self.screen() else None))
        splitter = self.settings.value("window/splitter")
        if splitter is not None:
            self.split.restoreState(splitter)
        else:
            self.split.setSizes([self.width() - 420, 420])  # room for a row of crops and its text
        self.start_pipeline(options)

    # pipeline lifecycle --------------------------------------------------------------------------------

    def start_pipeline(self, options: ViewerOptions) -> None:
        self.options = options
        self._first_frame = None
        self.setWindowTitle(f"tracklink view — {options.db}")
        self._set_state("loading models…")
        self.backend_label.setText("")
        worker = self.worker = PipelineWorker(options)
        worker.started_ok.connect(self._started)
        worker.failed.connect(self._failed)
        worker.notice.connect(lambda text: self._message("tracklink", text, QMessageBox.Icon.Warning))
        worker.frames_ready.connect(self._show_frames)
        worker.camera_added.connect(self._camera_added)
        worker.camera_removed.connect(self._camera_removed)
        worker.camera_status.connect(self.grid.set_status)
        worker.people_changed.connect(self.panel.set_people)
        worker.stats_ready.connect(self._show_stats)
        worker.search_done.connect(self.panel.show_search)
        worker.steps_done.connect(self._steps_done)
        worker.start(PipelineWorker.Priority.LowPriority)  # Windows and macOS; Linux: lower_thread_priority

    def stop_pipeline(self, timeout_s: float = 30.0) -> None:
        """Stop the worker; it closes the sources and flushes the store before it ends."""
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop()
            if not worker.wait(round(timeout_s * 1000)):
                log.warning("the pipeline thread did not stop within %.0f s", timeout_s)

    def restart_pipeline(self, options: ViewerOptions) -> None:
        sources = list(self.sources.values())
        self.stop_pipeline()
        for camera in list(self.grid.tiles):
            self.grid.remove_camera(camera)
        self.sources.clear()
        self.panel.set_people([])
        self.start_pipeline(replace(options, sources=sources))

    def add_source(self, text: str) -> None:
        if not text:
            return
        if self.worker is None or self.worker.isFinished():
            self._message("tracklink", "the pipeline is not running; fix the models in Settings first",
                          QMessageBox.Icon.Warning)
            return
        self.worker.add_source(text)
        self.settings.add_recent_source(text)

    def remove_source(self, camera: str) -> None:
        if self.worker is not None:
            self.worker.remove_source(camera)

    def set_paused(self, paused: bool) -> None:
        if self.pause_action.isChecked() != paused:
            self.pause_action.setChecked(paused)  # re-enters through toggled
            return
        self.pause_action.setText("Resume" if paused else "Pause")
        if self.worker is not None:
            self.worker.set_paused(paused)
            self._set_state("paused" if paused else "running")

    # worker signals ------------------------------------------------------------------------------------

    def _started(self, info: RunInfo) -> None:
        self.info = info
        self.settings.save_options(self.options)
        for text in self.options.sources:
            self.settings.add_recent_source(text)
        self._set_state("paused" if self.pause_action.isChecked() else "running")
        if self.pause_action.isChecked():
            self.worker.set_paused(True)
        detector = Path(info.detector.split(":", 1)[-1]).name
        self.backend_label.setText(f"re-ID {backend_label(info.backend)} · detector {detector} · "
                                   f"link ≥ {info.threshold:.2f}")
        self.backend_label.setToolTip(f"re-ID model {info.reid} on {info.backend}\ndetector {info.detector}\n"
                                      f"store {info.db} ({info.restored} people restored)")

    def _failed(self, message: str) -> None:
        self._set_state("stopped")
        if self.screenshot is not None:  # automation: no one is there to close a dialog
            print(f"tracklink view: error: {message}", file=sys.stderr)
            self._quit(2)
            return
        self._message("tracklink: the pipeline cannot run", message, QMessageBox.Icon.Critical)

    def _message(self, title: str, text: str, icon: QMessageBox.Icon) -> None:
        box = QMessageBox(icon, title, text, QMessageBox.StandardButton.Ok, self)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.finished.connect(lambda _=None, b=box: self.dialogs.remove(b) if b in self.dialogs else None)
        self.dialogs.append(box)
        box.open()  # window-modal but not blocking: the video keeps running behind it

    def _camera_added(self, camera: str, display: str, reopen: str) -> None:
        if self.info is not None and not self.pause_action.isChecked():
            self._set_state("running")
        self.grid.add_camera(camera, display)
        self.sources[camera] = reopen
        self.panel.set_cameras(list(self.sources))

    def _camera_removed(self, camera: str) -> None:
        self.grid.remove_camera(camera)
        self.sources.pop(camera, None)
        self.panel.set_cameras(list(self.sources))

    def _show_frames(self) -> None:
        if self.worker is None:
            return
        shown = self.grid.set_frames(self.worker.take_frames())
        if shown and self._first_frame is None:
            self._first_frame = time.monotonic()
            self.probe.reset()  # the lag shown is while video runs, not the one-off stalls of loading models
        self.ui_frames += shown
        self._ui_window.append((time.monotonic(), shown))

    def _update_ui_rate(self) -> None:
        now = time.monotonic()
        while self._ui_window and now - self._ui_window[0][0] > 3.0:
            self._ui_window.popleft()
        # Over the last 3 s, or since the first frame when that was more recent.
        span = min(3.0, now - self._first_frame) if self._first_frame is not None else 0.0
        self.ui_fps = sum(n for _, n in self._ui_window) / span if span > 0 else 0.0
        self.ui_label.setText(f"UI {self.ui_fps:.1f} fps · lag ≤ {self.probe.recent_max_ms():.0f} ms")

    def _show_stats(self, stats: StageSnapshot) -> None:
        self.last_stats = stats
        if stats.fps is None and not stats.ms:
            self.stage_label.setText(f"{stats.frames} frames")
            return
        fps = f"{stats.fps:.1f} fps" if stats.fps is not None else "– fps"
        stages = " · ".join(f"{k} {stats.ms.get(k, 0.0):.0f}" for k in SHOWN_STAGES)
        self.stage_label.setText(f"{fps} · {stages} ms/step · {stats.frames} frames")
        self.stage_label.setToolTip("\n".join(f"{k}: {v:.1f} ms per step (all cameras)" for k, v in stats.ms.items()))

    def _search(self, image, label: str) -> None:
        if self.worker is None or self.info is None:
            self.panel.results.clear()
            self.panel.results.addItem("the pipeline is not running: no gallery to search")
            return
        self.worker.search(image, label)

    def _steps_done(self, steps: int) -> None:
        finished = all(t.state in ("ended", "error") for t in self.grid.tiles.values())
        self._set_state("no cameras" if not self.grid.tiles else "all cameras ended" if finished
                        else f"stopped after {steps} steps (--frames)")
        if self.screenshot is not None and self.exit_code is None:
            QTimer.singleShot(SHOT_SETTLE_MS, self._take_screenshot)

    def _take_screenshot(self) -> None:
        if self.worker is not None:
            self._show_frames()
        if self.panel.selected is None and self.panel.model.people:
            # Show off the highlight and the timeline: the person seen in most cameras, then most boxes.
            best = max(self.panel.model.people, key=lambda p: (len(p.cameras), p.boxes))
            self.panel.select(best.global_id)
        path = self.screenshot
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.grab().save(str(path)):
            print(f"tracklink view: error: cannot write the screenshot {path}", file=sys.stderr)
            self._quit(2)
            return
        self.screenshot_saved.emit(str(path))
        self._quit(0)

    def _quit(self, code: int) -> None:
        self.exit_code = code
        self.close()
        QApplication.instance().exit(code)

    # UI ------------------------------------------------------------------------------------------------

    def _set_state(self, text: str) -> None:
        self.state_label.setText(f"<b>{text}</b>")

    def _ask_source(self) -> None:
        dialog = AddSourceDialog(self.settings.recent_sources(), self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.add_source(dialog.text())

    def _edit_settings(self) -> None:
        dialog = SettingsDialog(self.options, self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.restart_pipeline(dialog.options())

    def closeEvent(self, event) -> None:
        if not _offscreen():  # an offscreen run's window has no real size: it must not become the next default
            self.settings.set_value("window/geometry", self.saveGeometry())
            self.settings.set_value("window/splitter", self.split.saveState())
        self.probe.stop()
        self.hide()  # closing a stream can take a few seconds; do not leave a frozen window on screen
        self.stop_pipeline()
        super().closeEvent(event)


__all__ = ["AddSourceDialog", "EventLoopProbe", "MainWindow"]
