"""Cost and agreement of camera-motion settings (app/camera_motion.py) on real frames. Prints JSON.

Each MOT17-mini sequence, resized to --size and played back and forth to 100 frames (as bench/pipeline_speed.py
plays it), goes through `BackgroundFlow` with the given settings and with the reference (200 corners, 3
pyramid levels: ultralytics' LK depth), each frame's YOLOX-nano detections (tracklink's defaults) masked out
as the tracker does. Reported per setting: ms a frame (the fastest of --repeat passes), and how far its
per-frame translation lies from the reference's: the mean over all frames and both axes (still frames, where
both find no motion, included), and the largest.

    .venv/bin/python bench/camera_motion.py [--size 480x360] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_speed import ASSETS, ping_pong  # noqa: E402

SETTINGS = {"reference": {"max_corners": 200, "levels": 3}, "default": {},
            "100 corners, 3 levels": {"max_corners": 100, "levels": 3},
            "200 corners, 2 levels": {"max_corners": 200, "levels": 2}}


def translations(frames: list[np.ndarray], boxes: list[np.ndarray], settings: dict,
                 repeat: int) -> tuple[float, np.ndarray]:
    from tracklink.app.camera_motion import BackgroundFlow

    best, shifts = float("inf"), np.zeros((0, 2))
    for _ in range(repeat):
        motion = BackgroundFlow(**settings)
        warps, seconds = [], 0.0
        for frame, xyxy in zip(frames, boxes):
            motion.boxes = xyxy
            t0 = time.perf_counter()
            warps.append(motion.apply(frame))
            seconds += time.perf_counter() - t0
        best = min(best, seconds)
        shifts = np.array([w[:, 2] for w in warps])
    return 1000 * best / len(frames), shifts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mot", type=Path, default=ASSETS / "mot" / "MOT17-mini")
    p.add_argument("--detector", type=Path, default=ASSETS / "models" / "yolox_nano.onnx", help="YOLOX ONNX")
    p.add_argument("--size", default="480x360")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    from tracklink.app.detect import DetectorConfig, make_detector

    spec = f"yolox:{args.detector}"
    detector = make_detector(spec, DetectorConfig.for_detector(spec), threads=1)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    report: dict = {}
    for sequence in sorted(d for d in args.mot.iterdir() if d.is_dir()):
        images = [cv2.resize(cv2.imread(str(f)), size, interpolation=cv2.INTER_AREA)
                  for f in sorted((sequence / "img1").glob("*.jpg"))]
        detected = [d.xyxy for d in detector(images)]
        order = ping_pong(len(images), 100)
        frames, boxes = [images[i] for i in order], [detected[i] for i in order]
        runs = {name: translations(frames, boxes, s, args.repeat) for name, s in SETTINGS.items()}
        reference = runs["reference"][1]
        report[sequence.name] = {name: {"ms_per_frame": round(ms, 2),
                                        "mean_px_from_reference": round(float(np.abs(t - reference).mean()), 3),
                                        "max_px_from_reference": round(float(np.abs(t - reference).max()), 2)}
                                 for name, (ms, t) in runs.items()}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
