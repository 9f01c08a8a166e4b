"""The feed reads and detects up to two steps ahead on its worker thread and hands the grabs back in order;
a camera that ends or fails is not read again by a grab queued before it did."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tracklink.app.feed import FrameFeed
from tracklink.app.records import Detections
from tracklink.app.sources import make_source


def _numbered_frames(folder: Path, n: int, corrupt: int | None = None) -> Path:
    """Frames whose first pixel holds their number, so a grab says which frame it read; `corrupt`: that
    frame's file is not an image."""
    folder.mkdir()
    for k in range(n):
        cv2.imwrite(str(folder / f"{k:06d}.png"), np.full((8, 8, 3), k, np.uint8))
    if corrupt is not None:
        (folder / f"{corrupt:06d}.png").write_bytes(b"not an image")
    return folder


def _no_people(images):
    return [Detections.empty() for _ in images]


def _steps(feed: FrameFeed, source, n: int) -> list:
    out = []
    for _ in range(n):
        out.extend(feed.take([source]).reads)
        feed.read_ahead([source])
    return out


def test_grabs_come_back_in_order_with_two_steps_under_way(tmp_path: Path):
    source = make_source(f"cam={_numbered_frames(tmp_path / 'frames', 6)}")
    source.open()
    feed = FrameFeed(_no_people, ahead=True, depth=2)
    try:
        feed.read_ahead([source])
        feed.read_ahead([source])  # already two under way: no third
        assert len(feed._pending) == 2
        reads = _steps(feed, source, 7)
        assert [int(r.frame.image[0, 0, 0]) for r in reads[:6]] == [0, 1, 2, 3, 4, 5]
        assert reads[6].frame is None and reads[6].finished, "past the end: the camera has finished"
    finally:
        feed.close()
        source.close()


def test_a_camera_that_failed_is_not_read_again_by_a_queued_grab(tmp_path: Path):
    source = make_source(f"cam={_numbered_frames(tmp_path / 'frames', 5, corrupt=2)}")
    states: list[str] = []
    source.on_status = lambda name, status: states.append(status.state)
    source.open()
    feed = FrameFeed(_no_people, ahead=True, depth=2)
    try:
        reads = _steps(feed, source, 4)  # frames 0 and 1, the error at 2, then what was queued behind it
        feed.wait()
    finally:
        feed.close()
    assert [int(r.frame.image[0, 0, 0]) for r in reads[:2]] == [0, 1]
    assert reads[2].error and "000002.png" in reads[2].error and reads[2].finished
    assert all(r.frame is None and r.finished and not r.error for r in reads[3:]), "frame 3 was not read"
    assert states == ["live", "error"] and source.status.state == "error", states
    source.close()
