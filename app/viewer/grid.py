"""The camera grid: up to 16 tiles of video with boxes labelled by global identity.

A box's colour comes from its global id (`render.color`, the same colours as batch mode's annotated
videos), so one person has one colour in every camera; a track not yet linked is grey. Boxes are painted
here rather than burnt into the frame in the worker, so highlighting a person applies at once, and the
tile can answer "which track is under the mouse" for the hover tooltip.
"""

from __future__ import annotations

import math
from functools import lru_cache

from PyQt6.QtCore import QEvent, QPointF, QRectF, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QFont, QPainter, QPen
from PyQt6.QtWidgets import QFrame, QGridLayout, QHBoxLayout, QLabel, QToolButton, QToolTip, QVBoxLayout, QWidget

from tracklink.app.viewer.messages import Box, TileFrame

UNLINKED = QColor(170, 170, 170)
STATE_COLOURS = {"live": "#2e9d4f", "reconnecting": "#d98a00", "ended": "#777777", "error": "#c62828",
                 "idle": "#777777", "removed": "#777777"}


@lru_cache(maxsize=4096)
def identity_colour(global_id: int) -> QColor:
    from tracklink.app.render import color

    b, g, r = color(global_id)
    return QColor(r, g, b)


def box_colour(box: Box) -> QColor:
    return identity_colour(box.global_id) if box.global_id is not None else UNLINKED


class VideoCanvas(QWidget):
    """One camera's newest frame, scaled to fit, with its boxes."""

    def __init__(self, camera: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.camera = camera
        self.frame: TileFrame | None = None
        self.highlight: int | None = None
        self.overlay = "waiting for frames…"
        self.setMinimumSize(160, 90)
        self.setMouseTracking(True)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    def _image_rect(self) -> QRectF:
        """Where the frame lands in the widget: scaled to fit, centred, aspect kept."""
        if self.frame is None:
            return QRectF()
        iw, ih = self.frame.image.width(), self.frame.image.height()
        scale = min(self.width() / iw, self.height() / ih)
        w, h = iw * scale, ih * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def _to_widget(self, box: Box, rect: QRectF) -> QRectF:
        s = rect.width() / self.frame.image.width()
        x1, y1, x2, y2 = box.xyxy
        return QRectF(rect.x() + x1 * s, rect.y() + y1 * s, (x2 - x1) * s, (y2 - y1) * s)

    def box_at(self, pos: QPointF) -> Box | None:
        """The smallest box under `pos` (the one in front, when people overlap)."""
        if self.frame is None:
            return None
        rect = self._image_rect()
        hits = [b for b in self.frame.boxes if self._to_widget(b, rect).contains(pos)]
        return min(hits, key=lambda b: (b.xyxy[2] - b.xyxy[0]) * (b.xyxy[3] - b.xyxy[1]), default=None)

    def tooltip_at(self, pos: QPointF) -> str:
        box = self.box_at(pos)
        if box is None:
            return ""
        who = f"person G{box.global_id}" if box.global_id is not None else "not linked yet"
        return f"{self.camera} · track {box.track_id} · {who} · score {box.confidence:.2f}"

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip:
            text = self.tooltip_at(QPointF(event.pos()))  # a QHelpEvent
            if text:
                QToolTip.showText(event.globalPos(), text, self)
            else:
                QToolTip.hideText()
                event.ignore()
            return True
        return super().event(event)

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(20, 20, 20))
        if self.frame is not None:
            rect = self._image_rect()
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            painter.drawImage(rect, self.frame.image)
            self._paint_boxes(painter, rect)
        if self.overlay:
            painter.setFont(self.font())
            painter.setPen(QColor(240, 240, 240))
            painter.fillRect(QRectF(0, self.height() - 44, self.width(), 44), QColor(0, 0, 0, 160))
            painter.drawText(QRectF(8, self.height() - 44, self.width() - 16, 44),
                             Qt.AlignmentFlag.AlignVCenter | Qt.TextFlag.TextWordWrap, self.overlay)
        painter.end()

    def _paint_boxes(self, painter: QPainter, rect: QRectF) -> None:
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, min(10.0, rect.height() / 40)))
        font.setBold(True)
        painter.setFont(font)
        metrics = painter.fontMetrics()
        focus = self.highlight
        # The highlighted person is painted last, on top of everyone else.
        for box in sorted(self.frame.boxes, key=lambda b: focus is not None and b.global_id == focus):
            colour = QColor(box_colour(box))
            r = self._to_widget(box, rect)
            selected = focus is not None and box.global_id == focus
            if focus is not None and not selected:
                colour.setAlpha(90)  # everyone else fades, so the selected person stands out
            if selected:
                painter.setPen(QPen(QColor(255, 255, 255), 5))
                painter.drawRect(r)
            painter.setPen(QPen(colour, 3 if selected else 2))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRect(r)
            label = f"G{box.global_id}" if box.global_id is not None else f"t{box.track_id}"
            tw, th = metrics.horizontalAdvance(label) + 6, metrics.height()
            tag = QRectF(r.x(), max(rect.y(), r.y() - th), tw, th)
            painter.fillRect(tag, colour)
            painter.setPen(QColor(0, 0, 0, colour.alpha()))
            painter.drawText(tag, Qt.AlignmentFlag.AlignCenter, label)


class CameraTile(QFrame):
    """A camera's header (name, status, remove button) over its video."""

    remove_requested = pyqtSignal(str)

    def __init__(self, camera: str, source: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.camera = camera
        self.state, self.reason = "idle", ""
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.name = QLabel(f"<b>{camera}</b>")
        self.name.setToolTip(source)
        self.status = QLabel()
        self.remove = QToolButton()
        self.remove.setText("✕")
        self.remove.setToolTip(f"remove camera {camera}")
        self.remove.clicked.connect(lambda: self.remove_requested.emit(self.camera))
        header = QHBoxLayout()
        header.setContentsMargins(4, 2, 4, 2)
        header.addWidget(self.name)
        header.addStretch(1)
        header.addWidget(self.status)
        header.addWidget(self.remove)
        self.canvas = VideoCanvas(camera)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(1, 1, 1, 1)
        layout.setSpacing(0)
        layout.addLayout(header)
        layout.addWidget(self.canvas, 1)
        self.set_status("idle")

    def set_status(self, state: str, reason: str = "") -> None:
        self.state, self.reason = state, reason
        colour = STATE_COLOURS.get(state, "#777777")
        self.status.setText(f'<span style="color:{colour}">●</span> {state}')
        self.status.setToolTip(reason or state)
        if state == "live":
            self.canvas.overlay = ""
        elif state == "idle":
            self.canvas.overlay = "opening…"
        else:
            self.canvas.overlay = f"{state}: {reason}" if reason else state
        self.canvas.update()

    def set_frame(self, frame: TileFrame) -> None:
        self.canvas.frame = frame
        self.canvas.update()

    def set_highlight(self, global_id: int | None) -> None:
        if self.canvas.highlight != global_id:
            self.canvas.highlight = global_id
            self.canvas.update()


def grid_shape(n: int, width: float, height: float, aspect: float, header: float = 24.0) -> tuple[int, int]:
    """(rows, columns) that show `n` frames of `aspect` (width / height) largest in a width x height area.

    A fixed near-square grid letterboxed two 4:3 cameras side by side in a wide window with half of each tile
    black; picking the shape by the frames' aspect uses the area.
    """
    best: tuple[float, int, int] | None = None
    for cols in range(1, max(n, 1) + 1):
        rows = math.ceil(n / cols)
        image_h = min(width / cols / aspect, height / rows - header)
        if best is None or image_h > best[0] + 1e-6:
            best = (image_h, rows, cols)
    return best[1], best[2]


class CameraGrid(QWidget):
    """Tiles in the grid that shows the cameras' frames largest (see `grid_shape`), up to 16 cameras."""

    remove_requested = pyqtSignal(str)
    MAX_TILES = 16

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.tiles: dict[str, CameraTile] = {}
        self.highlight: int | None = None
        self._layout = QGridLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(3)
        self._empty = QLabel("No cameras. Add a video file, a camera index or an RTSP URL with “Add source”.")
        self._empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._aspect = 16 / 9  # until the first frame says otherwise
        self._shape: tuple[int, int] | None = None
        self._relayout()

    def add_camera(self, camera: str, source: str) -> CameraTile:
        tile = self.tiles.get(camera)
        if tile is None:
            tile = self.tiles[camera] = CameraTile(camera, source)
            tile.remove_requested.connect(self.remove_requested)
            tile.set_highlight(self.highlight)
            self._relayout()
        return tile

    def remove_camera(self, camera: str) -> None:
        tile = self.tiles.pop(camera, None)
        if tile is not None:
            self._layout.removeWidget(tile)
            tile.deleteLater()
            self._relayout()

    def set_status(self, camera: str, state: str, reason: str = "") -> None:
        tile = self.tiles.get(camera)
        if tile is not None:
            tile.set_status(state, reason)

    def set_frames(self, frames: dict[str, TileFrame]) -> int:
        """Show the newest frames; returns how many tiles got a new one."""
        shown = 0
        for camera, frame in frames.items():
            tile = self.tiles.get(camera)
            if tile is not None:
                tile.set_frame(frame)
                shown += 1
                aspect = frame.image.width() / max(frame.image.height(), 1)
                if abs(aspect - self._aspect) > 0.01:
                    self._aspect = aspect
                    self._relayout()
        return shown

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self.tiles and grid_shape(len(self.tiles), self.width(), self.height(), self._aspect) != self._shape:
            self._relayout()

    def set_highlight(self, global_id: int | None) -> None:
        self.highlight = global_id
        for tile in self.tiles.values():
            tile.set_highlight(global_id)

    def _relayout(self) -> None:
        while self._layout.count():
            self._layout.takeAt(0)
        n = len(self.tiles)
        self._empty.setVisible(n == 0)
        if n == 0:
            self._layout.addWidget(self._empty, 0, 0)
            return
        rows, cols = self._shape = grid_shape(n, max(self.width(), 1), max(self.height(), 1), self._aspect)
        for i, tile in enumerate(self.tiles.values()):
            self._layout.addWidget(tile, i // cols, i % cols)
        for r in range(self.MAX_TILES):
            self._layout.setRowStretch(r, 1 if r < rows else 0)
        for c in range(self.MAX_TILES):
            self._layout.setColumnStretch(c, 1 if c < cols else 0)


__all__ = ["CameraGrid", "CameraTile", "VideoCanvas", "box_colour", "grid_shape", "identity_colour"]
