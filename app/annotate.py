"""Annotated videos with the final global ids, drawn after batch clustering from the stored boxes.

Online ids change while tracklets are linked, and batch clustering revises them at the end, so a video drawn
while the pipeline runs would disagree with <camera>.global.txt (a box changing colour mid-video when it gets
linked). These videos are drawn once the ids are final: recordings are decoded a second time, and a live
camera's frames are kept raw while it runs (`RawRecorder`), then drawn the same way.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from tracklink.app.records import Frame
from tracklink.app.render import Box, draw_boxes
from tracklink.app.store import Store

log = logging.getLogger(__name__)

FALLBACK_FPS = 30.0  # live sources may not report a rate


def _writer(path: Path, fps: float, size: tuple[int, int]):
    import cv2

    return cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)


def boxes_by_frame(store: Store, camera: str) -> dict[int, list[Box]]:
    """The camera's stored boxes with their final global ids (None: never linked), per frame."""
    frames: dict[int, list[Box]] = defaultdict(list)
    for a in store.appearances(camera):
        frames[a.frame].append(Box(a.xyxy, a.track_id, a.global_id))
    return frames


def annotate(frames: Iterable[Frame], boxes: dict[int, list[Box]], path: Path, fps: float) -> list[list[str]]:
    """Draw every frame with its boxes into `path`; returns the labels drawn, frame by frame."""
    writer, drawn = None, []
    try:
        for frame in frames:
            if writer is None:
                h, w = frame.image.shape[:2]
                writer = _writer(path, fps, (w, h))
            on_frame = boxes.get(frame.index, [])
            writer.write(draw_boxes(frame.image, on_frame))
            drawn.append([b.label for b in on_frame])
    finally:
        if writer is not None:
            writer.release()
    return drawn


def _recorded_frames(path: Path) -> Iterator[Frame]:
    """Frames a RawRecorder kept, numbered from 1 as the pipeline numbered them."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        index = 0
        while True:
            ok, image = capture.read()
            if not ok:
                return
            index += 1
            yield Frame(path.stem, index, 0.0, image)
    finally:
        capture.release()


def write_annotated_videos(store: Store, specs: Sequence, out: Path, raw: dict[str, Path]) -> dict[str, Path]:
    """OUT/<camera>.mp4 for every finished camera in `specs`; returns camera -> video."""
    from tracklink.app.sources import make_source

    videos = {}
    for spec in specs:
        record = store.camera(spec.name)
        if record is None or record.status != "done":
            continue
        boxes, path = boxes_by_frame(store, spec.name), out / f"{spec.name}.mp4"
        if spec.name in raw:
            annotate(_recorded_frames(raw[spec.name]), boxes, path, record.fps or FALLBACK_FPS)
            raw[spec.name].unlink(missing_ok=True)
        elif not spec.live:
            source = make_source(spec)
            source.open()
            try:
                annotate(iter(source), boxes, path, source.fps or FALLBACK_FPS)
            finally:
                source.close()
        else:
            continue
        videos[spec.name] = path
    return videos


class RawRecorder:
    """Keeps the frames of live cameras, undrawn, so that they can be annotated once the ids are final."""

    def __init__(self, out: Path, sources) -> None:
        self.out = out
        self.live = {s.name: s for s in sources if s.live}
        self.paths: dict[str, Path] = {}
        self._writers: dict[str, object] = {}

    def write(self, frame: Frame) -> None:
        source = self.live.get(frame.camera)
        if source is None:
            return
        writer = self._writers.get(frame.camera)
        if writer is None:
            h, w = frame.image.shape[:2]
            self.paths[frame.camera] = self.out / f".{frame.camera}.raw.avi"
            import cv2

            writer = cv2.VideoWriter(str(self.paths[frame.camera]), cv2.VideoWriter_fourcc(*"MJPG"),
                                     source.fps or FALLBACK_FPS, (w, h))
            self._writers[frame.camera] = writer
        writer.write(np.ascontiguousarray(frame.image))

    def close(self) -> None:
        for writer in self._writers.values():
            writer.release()


__all__ = ["RawRecorder", "annotate", "boxes_by_frame", "write_annotated_videos"]
