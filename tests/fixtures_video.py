"""Test videos cut from the shared MOT17-mini sequences (used by the viewer tests and its bench)."""

from __future__ import annotations

from pathlib import Path

import cv2


def write_camera(sequence: Path, out: Path, frames: int, size: tuple[int, int] = (640, 480)) -> Path:
    """An MJPG video from a MOTChallenge sequence: centre-cropped to the size's aspect, played forth and back
    (0..n-1..1, no jump at the turn) so that tracks last long enough to link."""
    images = []
    for path in sorted((sequence / "img1").glob("*.jpg")):
        image = cv2.imread(str(path))
        h, w = image.shape[:2]
        cw = min(w, round(h * size[0] / size[1]))
        x0 = (w - cw) // 2
        images.append(cv2.resize(image[:, x0:x0 + cw], size, interpolation=cv2.INTER_AREA))
    order = list(range(len(images))) + list(range(len(images) - 2, 0, -1))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, size)
    for k in range(frames):
        writer.write(images[order[k % len(order)]])
    writer.release()
    return out
