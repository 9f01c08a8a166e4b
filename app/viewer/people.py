"""The people panel: one row per global identity, a timeline for the selected one, and search by image.

Rows keep a stable order (by global id) and are updated in place, so a row does not jump away while the
operator reaches for it. Times are file time (m:ss.s from the start of a recording) or, for live cameras,
the local wall-clock time.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QAbstractListModel, QModelIndex, QRectF, QSize, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QImage, QPainter, QPen
from PyQt6.QtWidgets import (QAbstractItemView, QLabel, QListView, QListWidget, QListWidgetItem, QSplitter,
                             QStyle, QStyledItemDelegate, QStyleOptionViewItem, QVBoxLayout, QWidget)

from tracklink.app.viewer.grid import identity_colour
from tracklink.app.viewer.messages import Person, SearchResult
from tracklink.utils.suffixes import is_image

WALL_CLOCK = 1e8  # timestamps above this are seconds since 1970 (live cameras), below it file time
ROW_HEIGHT = 56  # px: a row of crops still tells people apart, and a 900-px screen lists about a dozen people
PersonRole = Qt.ItemDataRole.UserRole + 1


def format_time(ts: float) -> str:
    if ts >= WALL_CLOCK:
        return time.strftime("%H:%M:%S", time.localtime(ts))
    minutes, seconds = divmod(max(ts, 0.0), 60.0)
    return f"{int(minutes)}:{seconds:04.1f}"


class PeopleModel(QAbstractListModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.people: list[Person] = []

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.people)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        person = self.people[index.row()]
        if role == PersonRole:
            return person
        if role == Qt.ItemDataRole.DisplayRole:
            return f"G{person.global_id}"
        if role == Qt.ItemDataRole.ToolTipRole:
            return (f"G{person.global_id}: {person.boxes} boxes in {', '.join(person.cameras)}; first seen "
                    f"{format_time(person.first_seen)}, last seen {format_time(person.last_seen)}")
        return None

    def row_of(self, global_id: int) -> int | None:
        return next((i for i, p in enumerate(self.people) if p.global_id == global_id), None)

    def update(self, people: list[Person]) -> None:
        """Merge a snapshot (sorted by global id): rows are removed, inserted or changed in place."""
        new = {p.global_id: p for p in people}
        for row in reversed(range(len(self.people))):
            if self.people[row].global_id not in new:
                self.beginRemoveRows(QModelIndex(), row, row)
                del self.people[row]
                self.endRemoveRows()
        row = 0
        for person in people:
            if row < len(self.people) and self.people[row].global_id == person.global_id:
                self.people[row] = person
                index = self.index(row)
                self.dataChanged.emit(index, index)
            else:
                self.beginInsertRows(QModelIndex(), row, row)
                self.people.insert(row, person)
                self.endInsertRows()
            row += 1


class PersonDelegate(QStyledItemDelegate):
    """A colour strip, the crops, and two lines of text."""

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        return QSize(option.rect.width() or 200, ROW_HEIGHT)  # as wide as the list: text elides, no h-scroll

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        person: Person = index.data(PersonRole)
        painter.save()
        rect = QRectF(option.rect)
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(rect, option.palette.highlight())
            text_colour = option.palette.highlightedText().color()
        else:
            text_colour = option.palette.text().color()
        colour = identity_colour(person.global_id)
        painter.fillRect(QRectF(rect.x(), rect.y() + 2, 6, rect.height() - 4), colour)
        x, crop_h = rect.x() + 10, rect.height() - 8
        for image in person.crops:
            w = image.width() * crop_h / max(image.height(), 1)
            painter.drawImage(QRectF(x, rect.y() + 4, w, crop_h), image)
            x += w + 3
        if not person.crops:
            painter.setPen(QPen(QColor(150, 150, 150), 1, Qt.PenStyle.DashLine))
            painter.drawRect(QRectF(x, rect.y() + 4, crop_h / 2, crop_h))
            x += crop_h / 2 + 3
        text = QRectF(x + 6, rect.y() + 4, rect.right() - x - 8, rect.height() - 8)
        painter.setPen(text_colour)
        font = painter.font()
        font.setBold(True)
        painter.setFont(font)
        width = int(text.width())
        live = " ● live" if person.live else ""
        lines = [(f"G{person.global_id}{live}", Qt.AlignmentFlag.AlignTop),
                 (f"{len(person.cameras)} camera{'s' if len(person.cameras) != 1 else ''}: "
                  f"{', '.join(person.cameras)}", Qt.AlignmentFlag.AlignVCenter),
                 (f"{format_time(person.first_seen)} – {format_time(person.last_seen)} · {person.boxes} boxes",
                  Qt.AlignmentFlag.AlignBottom)]
        for k, (line, where) in enumerate(lines):
            if k == 1:
                font.setBold(False)
                painter.setFont(font)
            elided = painter.fontMetrics().elidedText(line, Qt.TextElideMode.ElideRight, width)
            painter.drawText(text, where | Qt.AlignmentFlag.AlignLeft, elided)
        painter.restore()


class TimelineWidget(QWidget):
    """The selected person's appearances: one row per camera, one bar per tracklet."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.person: Person | None = None
        self.cameras: list[str] = []
        self.setMinimumHeight(90)

    def set_person(self, person: Person | None, cameras: list[str]) -> None:
        self.person, self.cameras = person, cameras
        self.update()

    def rows(self) -> list[str]:
        """Cameras shown: every open camera, and any other camera the person was seen in."""
        seen = self.person.cameras if self.person else []
        return list(dict.fromkeys([*self.cameras, *seen]))

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().base())
        painter.setPen(self.palette().text().color())
        if self.person is None:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Click a person to see their timeline")
            painter.end()
            return
        p = self.person
        rows = self.rows()
        header = 18
        painter.drawText(QRectF(4, 0, self.width() - 8, header), Qt.AlignmentFlag.AlignVCenter,
                         f"G{p.global_id} timeline  {format_time(p.first_seen)} – {format_time(p.last_seen)}")
        label_w = min(140.0, max(painter.fontMetrics().horizontalAdvance(c) for c in rows) + 10.0)
        t0, t1 = p.first_seen, p.last_seen
        span = max(t1 - t0, 1e-6)
        left, right = label_w, self.width() - 8.0
        row_h = max(12.0, min(24.0, (self.height() - header - 4) / max(len(rows), 1)))
        colour = identity_colour(p.global_id)
        for r, camera in enumerate(rows):
            y = header + r * row_h
            painter.setPen(self.palette().text().color())
            painter.drawText(QRectF(4, y, label_w - 8, row_h), Qt.AlignmentFlag.AlignVCenter,
                             painter.fontMetrics().elidedText(camera, Qt.TextElideMode.ElideMiddle, int(label_w - 8)))
            painter.fillRect(QRectF(left, y + row_h / 2 - 1, right - left, 2), QColor(128, 128, 128, 80))
            for cam, start, end in p.segments:
                if cam != camera:
                    continue
                x1 = left + (start - t0) / span * (right - left)
                x2 = left + (end - t0) / span * (right - left)
                painter.fillRect(QRectF(x1, y + 3, max(x2 - x1, 3.0), row_h - 6), colour)
        painter.end()


class SearchDrop(QLabel):
    """Drop a crop or an image file here: the worker embeds it and ranks the gallery."""

    image_dropped = pyqtSignal(object, str)  # BGR np.ndarray, label

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Drop a crop or image file here\nto search the people seen so far", parent)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setAcceptDrops(True)
        self.setMinimumHeight(56)
        self.setStyleSheet("QLabel { border: 2px dashed #888; border-radius: 6px; padding: 6px; }")

    @staticmethod
    def _image_files(mime) -> list[Path]:
        return [Path(u.toLocalFile()) for u in mime.urls()
                if u.isLocalFile() and is_image(u.toLocalFile())]

    def dragEnterEvent(self, event) -> None:
        mime = event.mimeData()
        if mime.hasImage() or self._image_files(mime):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        mime = event.mimeData()
        files = self._image_files(mime)
        if files:
            self.search_file(files[0])
        elif mime.hasImage():
            self.search_image(QImage(mime.imageData()), "dropped image")
        event.acceptProposedAction()

    def search_file(self, path: Path) -> None:
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        self.image_dropped.emit(image, path.name)

    def search_image(self, image: QImage, label: str) -> None:
        image = image.convertToFormat(QImage.Format.Format_BGR888)
        ptr = image.constBits()
        ptr.setsize(image.sizeInBytes())
        rows = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine())
        self.image_dropped.emit(rows[:, :image.width() * 3].reshape(image.height(), image.width(), 3).copy(), label)


class PeoplePanel(QWidget):
    person_selected = pyqtSignal(object)  # global id, or None
    search_requested = pyqtSignal(object, str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.title = QLabel("<b>People</b>")
        self.model = PeopleModel(self)
        self.view = QListView()
        self.view.setModel(self.model)
        self.view.setItemDelegate(PersonDelegate(self.view))
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setUniformItemSizes(True)
        self.view.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.view.selectionModel().currentChanged.connect(self._current_changed)
        self.timeline = TimelineWidget()
        self.drop = SearchDrop()
        self.drop.image_dropped.connect(self._dropped)
        self.results = QListWidget()
        self.results.setMaximumHeight(120)
        self.results.itemClicked.connect(lambda item: self.select(item.data(Qt.ItemDataRole.UserRole)))
        lower = QWidget()
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        lower_layout.addWidget(self.timeline, 1)
        lower_layout.addWidget(self.drop)
        lower_layout.addWidget(self.results)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.view)
        split.addWidget(lower)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.title)
        layout.addWidget(split, 1)
        self.selected: int | None = None
        self.cameras: list[str] = []

    def set_people(self, people: list[Person]) -> None:
        self.model.update(people)
        self.title.setText(f"<b>People</b> ({len(people)})")
        if self.selected is not None:
            row = self.model.row_of(self.selected)
            self.timeline.set_person(self.model.people[row] if row is not None else None, self.cameras)

    def set_cameras(self, cameras: list[str]) -> None:
        self.cameras = list(cameras)
        self.timeline.set_person(self.timeline.person, self.cameras)

    def select(self, global_id: int | None) -> None:
        """Select a person (or clear with None), as a click on their row does."""
        row = self.model.row_of(global_id) if global_id is not None else None
        if row is None:
            self.view.clearSelection()
            self.view.setCurrentIndex(QModelIndex())
        else:
            self.view.setCurrentIndex(self.model.index(row))

    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        person = current.data(PersonRole) if current.isValid() else None
        self.selected = person.global_id if person is not None else None
        self.timeline.set_person(person, self.cameras)
        self.person_selected.emit(self.selected)

    def _dropped(self, image, label: str) -> None:
        self.results.clear()
        if image is None:
            self.results.addItem(f"{label}: cannot read this image")
            return
        self.results.addItem(f"searching for {label}…")
        self.search_requested.emit(image, label)

    def show_search(self, result: SearchResult) -> None:
        self.results.clear()
        if result.error:
            self.results.addItem(f"{result.label}: {result.error}")
            return
        for global_id, score in result.hits:
            item = QListWidgetItem(f"G{global_id}   cosine {score:.3f}")
            item.setData(Qt.ItemDataRole.UserRole, global_id)
            item.setForeground(identity_colour(global_id))
            self.results.addItem(item)


__all__ = ["PeopleModel", "PeoplePanel", "PersonDelegate", "SearchDrop", "TimelineWidget", "format_time"]
