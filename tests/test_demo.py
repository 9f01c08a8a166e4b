"""`tracklink demo`: offline, the whole pipeline on two built-in cameras, a summary even under a pipe, and
annotated videos whose ids are the final ones of <camera>.global.txt, frame by frame."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from tracklink.app.render import Box, color, layout_labels

pytest.importorskip("ultralytics")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "demo"
    # Piped stdout, as in a log file: the summary must still print, and no progress bar may.
    done = subprocess.run([sys.executable, "-m", "tracklink", "demo", "--out", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "\r" not in done.stderr, "a progress bar was drawn into a pipe"
    return out, done.stdout


def test_demo_runs_offline_and_prints_its_summary(demo, no_network) -> None:
    out, stdout = demo
    assert "tracklink demo: done" in stdout
    assert "seen by more than one camera" in stdout and "cross-camera IDF1" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["cameras"]) == {"entrance", "corridor"}
    assert summary["cross_camera_identities"] >= 2  # the same people are linked across the two cameras
    assert "yolox_nano.onnx" in summary["detector"] and Path(summary["reid"]).name == "osnet_x0_25_msmt17.onnx"
    for name in ("entrance", "corridor"):
        assert (out / f"{name}.mp4").stat().st_size > 0 and (out / f"{name}.global.txt").stat().st_size > 0


def _rows(path: Path) -> dict[int, list[Box]]:
    rows = defaultdict(list)
    for line in path.read_text().splitlines():
        f, gid, x, y, w, h = (float(v) for v in line.split(",")[:6])
        rows[int(f)].append(Box((x, y, x + w, y + h), -1, int(gid)))
    return rows


def test_annotated_video_ids_equal_global_txt_frame_by_frame(demo) -> None:
    """Every box of .global.txt has, in the video frame, a label in its global id's colour."""
    out, _ = demo
    for name in ("entrance", "corridor"):
        rows = _rows(out / f"{name}.global.txt")
        capture = cv2.VideoCapture(str(out / f"{name}.mp4"))
        frame, checked = 0, 0
        while True:
            ok, image = capture.read()
            if not ok:
                break
            frame += 1
            for box, (x1, y1, x2, y2) in layout_labels(rows.get(frame, []), image.shape):
                patch = image[y1 + 1:y2 - 1, x2 - 4:x2 - 1].reshape(-1, 3).astype(float)  # label background
                seen = np.median(patch, axis=0)
                expected = np.array(color(box.global_id), float)
                others = [np.array(color(b.global_id), float) for b in rows[frame] if b.global_id != box.global_id]
                assert np.linalg.norm(seen - expected) < 60, (name, frame, box.global_id, seen, expected)
                assert all(np.linalg.norm(seen - expected) < np.linalg.norm(seen - o) for o in others)
                checked += 1
        capture.release()
        assert frame > 0 and checked == sum(len(v) for v in rows.values()), (name, frame, checked)
