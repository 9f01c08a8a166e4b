"""The feed reads and detects up to two steps ahead on its worker thread, and hands the grabs back in order."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from tracklink.app.feed import FrameFeed
from tracklink.app.records import Detections
from tracklink.app.sources import make_source


def _numbered_frames(folder: Path, n: int) -> Path:
    """Frames whose first pixel holds their number, so a grab says which frame it read."""
    folder.mkdir()
    for k in range(n):
        cv2.imwrite(str(folder / f"{k:06d}.png"), np.full((8, 8, 3), k, np.uint8))
    return folder


def test_grabs_come_back_in_order_with_two_steps_under_way(tmp_path: Path):
    source = make_source(f"cam={_numbered_frames(tmp_path / 'frames', 6)}")
    source.open()
    started, release = [], threading.Event()

    def detect(images):  # holds the worker until released, so the grabs queued behind it can be counted
        started.append(int(images[0][0, 0, 0]))
        release.wait(10)
        return [Detections.empty() for _ in images]

    feed = FrameFeed(detect, ahead=True, depth=2)
    try:
        feed.read_ahead([source])
        feed.read_ahead([source])  # already two under way: no third
        assert len(feed._pending) == 2
        release.set()
        seen = []
        for _ in range(6):
            grab = feed.take([source])
            seen.append([int(r.frame.image[0, 0, 0]) if r.frame else None for r in grab.reads])
            feed.read_ahead([source])
        assert seen == [[0], [1], [2], [3], [4], [5]]
        assert started[:6] == [0, 1, 2, 3, 4, 5]
        assert all(r.finished for r in feed.take([source]).reads), "past the end: the camera has finished"
    finally:
        release.set()
        feed.close()
        source.close()
