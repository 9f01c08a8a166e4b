"""What the viewer remembers between runs (QSettings) and the dialog that edits it.

Command-line flags win over remembered settings, and a run that starts cleanly remembers its flags, so
`tracklink view` with no flags reopens with the models and store of the last good run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from PyQt6.QtCore import QSettings
from PyQt6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog,
                             QFormLayout, QHBoxLayout, QLineEdit, QPushButton, QSpinBox, QWidget)

from tracklink.app.detect import DetectorConfig
from tracklink.app.session import BACKENDS, TRACKERS, SessionOptions
from tracklink.models.weights import CATALOGUE, DEFAULT_REID

DEFAULT_DB = "out/tracklink.db"  # the store `tracklink batch` writes with its default --out
MAX_RECENT = 10


@dataclass
class ViewerOptions(SessionOptions):
    """One pipeline run of the viewer: the session's options (as in `tracklink batch`) and the viewer's own."""

    sources: list[str] = field(default_factory=list)
    db: str = DEFAULT_DB
    # Identities with fewer boxes than this stay out of the people panel: a person glimpsed for a
    # frame or two is usually a false detection, and the store still has them.
    min_boxes: int = 3
    # Frames are shrunk in the worker to at most this many pixels on their long side before the UI
    # thread sees them, so painting 16 full-HD tiles never lands on the UI thread.
    display_max: int = 960
    max_steps: int | None = None  # --frames: stop stepping after this many pipeline steps


# Keys of ViewerOptions that persist; sources and max_steps belong to one run only.
_PERSISTED = ("db", "detector", "reid", "backend", "device", "tracker", "conf", "link_threshold", "threads", "transit",
              "pooling", "min_boxes", "nms_iou", "tracker_config", "gallery_ttl", "embed_every")


class ViewerSettings:
    """Typed access to a QSettings store (the user's by default; tests pass an .ini file)."""

    def __init__(self, qsettings: QSettings | None = None):
        self.qs = qsettings if qsettings is not None else QSettings("tracklink", "viewer")

    def options(self) -> ViewerOptions:
        """Remembered options (sources empty)."""
        base = ViewerOptions()
        values = {}
        types = {f.name: f.type for f in fields(ViewerOptions)}
        for key in _PERSISTED:
            raw = self.qs.value(f"pipeline/{key}")
            if raw is None or raw == "":
                continue
            kind = str(types[key])
            try:
                values[key] = (float(raw) if "float" in kind else int(raw) if "int" in kind else str(raw))
            except (TypeError, ValueError):
                continue  # a hand-edited or older settings file: fall back to the default
        return replace(base, **values)

    def save_options(self, options: ViewerOptions) -> None:
        for key in _PERSISTED:
            value = getattr(options, key)
            if value is None:
                self.qs.remove(f"pipeline/{key}")
            else:
                self.qs.setValue(f"pipeline/{key}", value)
        self.qs.sync()

    def merged(self, cli: ViewerOptions, given: set[str]) -> ViewerOptions:
        """The remembered options overridden by the command-line flags the user actually gave."""
        remembered = self.options()
        return replace(remembered, sources=list(cli.sources), max_steps=cli.max_steps,
                       **{k: getattr(cli, k) for k in given if k in _PERSISTED})

    def recent_sources(self) -> list[str]:
        value = self.qs.value("sources/recent") or []
        return [str(v) for v in ([value] if isinstance(value, str) else value)]

    def add_recent_source(self, spec: str) -> None:
        recent = [spec] + [s for s in self.recent_sources() if s != spec]
        self.qs.setValue("sources/recent", recent[:MAX_RECENT])
        self.qs.sync()

    def value(self, key: str, default=None):
        return self.qs.value(key, default)

    def set_value(self, key: str, value) -> None:
        self.qs.setValue(key, value)


class SettingsDialog(QDialog):
    """Models, backend and thresholds; accepting restarts the pipeline with them."""

    def __init__(self, options: ViewerOptions, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("tracklink settings")
        self._options = options
        form = QFormLayout(self)
        self.detector = self._path_row(form, "Detector", options.detector or "",
                                       "yolox:PATH, an ultralytics model file, or empty for the packaged YOLOX-nano")
        self.reid = self._path_row(form, "Re-ID model", options.reid or "",
                                   ".onnx, .engine or tracklink .pt; empty for osnet_x0_25_msmt17")
        self.db = self._path_row(form, "Store (SQLite)", options.db, "the same file `tracklink batch` writes")
        self.backend = QComboBox()
        self.backend.addItems(["auto", *BACKENDS])
        self.backend.setCurrentText(options.backend or "auto")
        form.addRow("Backend", self.backend)
        self.device = QComboBox()
        self.device.setEditable(True)
        self.device.addItems(["auto", "cpu", "cuda"])
        self.device.setCurrentText(options.device or "auto")
        form.addRow("Device", self.device)
        self.tracker = QComboBox()
        self.tracker.addItems(TRACKERS)
        self.tracker.setCurrentText(options.tracker)
        form.addRow("Tracker", self.tracker)
        # Unchecking "default" starts the value at the default in force: the published model's calibrated
        # threshold, and the detector's own score threshold.
        self.threshold_from_model, self.threshold = self._optional_row(
            form, "Link threshold", "from the model (metadata or calibration)", options.link_threshold,
            CATALOGUE[DEFAULT_REID].link_threshold, (-1.0, 1.0), decimals=3, step=0.01)
        self.conf_default, self.conf = self._optional_row(
            form, "Detector score", "detector default", options.conf, DetectorConfig.conf, (0.0, 1.0),
            decimals=2, step=0.05)
        self.min_boxes = QSpinBox()
        self.min_boxes.setRange(1, 1000)
        self.min_boxes.setValue(options.min_boxes)
        form.addRow("Hide people with fewer boxes than", self.min_boxes)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Apply and restart")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    @staticmethod
    def _optional_row(form: QFormLayout, label: str, default_text: str, value: float | None, default: float,
                      bounds: tuple[float, float], decimals: int, step: float) -> tuple[QCheckBox, QDoubleSpinBox]:
        """A number that may be left to its default: checked box = None, else the spin box's value."""
        use_default = QCheckBox(default_text)
        spin = QDoubleSpinBox()
        spin.setRange(*bounds)
        spin.setDecimals(decimals)
        spin.setSingleStep(step)
        use_default.toggled.connect(lambda on: spin.setEnabled(not on))
        spin.setValue(value if value is not None else default)
        use_default.setChecked(value is None)
        row = QHBoxLayout()
        row.addWidget(use_default)
        row.addWidget(spin)
        form.addRow(label, row)
        return use_default, spin

    def _path_row(self, form: QFormLayout, label: str, value: str, tip: str) -> QLineEdit:
        edit = QLineEdit(value)
        edit.setPlaceholderText(tip)
        edit.setToolTip(tip)
        browse = QPushButton("…")
        browse.setFixedWidth(32)

        def pick() -> None:
            path, _ = QFileDialog.getOpenFileName(self, label, str(Path(edit.text().split(":", 1)[-1]).parent))
            if path:
                prefix = "yolox:" if edit.text().startswith("yolox:") else ""
                edit.setText(prefix + path)

        browse.clicked.connect(pick)
        row = QHBoxLayout()
        row.addWidget(edit)
        row.addWidget(browse)
        form.addRow(label, row)
        return edit

    def options(self) -> ViewerOptions:
        def text(edit: QLineEdit) -> str | None:
            return edit.text().strip() or None

        def choice(combo: QComboBox) -> str | None:
            value = combo.currentText().strip()
            return None if value in ("", "auto") else value

        return replace(self._options, detector=text(self.detector), reid=text(self.reid),
                       db=text(self.db) or DEFAULT_DB, backend=choice(self.backend), device=choice(self.device),
                       tracker=self.tracker.currentText(),
                       link_threshold=None if self.threshold_from_model.isChecked() else self.threshold.value(),
                       conf=None if self.conf_default.isChecked() else self.conf.value(),
                       min_boxes=self.min_boxes.value())


__all__ = ["DEFAULT_DB", "SettingsDialog", "ViewerOptions", "ViewerSettings"]
