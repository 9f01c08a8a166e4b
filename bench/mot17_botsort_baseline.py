"""Ultralytics' own BOTSORT on MOT17-mini, fed the same YOLOX detections as `tracklink batch` (issue 4, item 1).

The baseline is ultralytics as its users run it: its BOTSORT with its default botsort.yaml (camera-motion
compensation on, its re-ID off), updated once per frame with an ultralytics `Boxes` of that frame's
detections, as its predictor's tracking callback does. Only the detector is ours, and it is the one
`tracklink batch --detector yolox:PATH` runs with its default settings, so the two differ in tracking only.

Writes PRED/<sequence>.txt (MOTChallenge rows `frame,id,x,y,w,h,conf,-1,-1,-1`) and PRED/timing.json, and
prints one JSON line per sequence. Score it as ours is scored:

    .venv/bin/python bench/mot17_botsort_baseline.py --out runs/ultra_botsort
    .venv/bin/python -m tracklink eval-mot --gt ../shared/assets/mot/MOT17-mini --pred runs/ultra_botsort
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO.parent / "shared" / "assets"


def make_tracker():
    """BOTSORT exactly as `model.track(tracker="botsort.yaml")` builds it: from the YAML alone."""
    from ultralytics.trackers import BOTSORT
    from ultralytics.utils import YAML, IterableSimpleNamespace
    from ultralytics.utils.checks import check_yaml

    return BOTSORT(IterableSimpleNamespace(**YAML.load(check_yaml("botsort.yaml"))))


def run_sequence(sequence: Path, detector, out: Path) -> dict:
    from ultralytics.engine.results import Boxes

    from tracklink.app.sources import ImageFolderSource, parse_source

    source = ImageFolderSource(parse_source(str(sequence)))
    source.open()
    tracker = make_tracker()
    rows, seconds = [], {"decode": 0.0, "detect": 0.0, "track": 0.0}
    frames = 0
    while True:
        t0 = time.perf_counter()
        frame = source.read()
        seconds["decode"] += time.perf_counter() - t0
        if frame is None:
            break
        t0 = time.perf_counter()
        det = detector([frame.image])[0]
        seconds["detect"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        boxes = Boxes(np.concatenate([det.xyxy, det.confidence[:, None], det.class_id[:, None]], axis=1)
                      .astype(np.float32), frame.image.shape[:2])
        tracks = tracker.update(boxes, frame.image)
        seconds["track"] += time.perf_counter() - t0
        frames += 1
        for x1, y1, x2, y2, tid, score, *_ in tracks:
            box = f"{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f}"
            rows.append(f"{frame.index},{int(tid)},{box},{score:.4f},-1,-1,-1\n")
    source.close()
    (out / f"{sequence.name}.txt").write_text("".join(rows))
    busy = sum(seconds.values())
    fps = {k: round(frames / s, 2) if s > 0 else None for k, s in seconds.items()}
    fps["overall"] = round(frames / busy, 2) if busy > 0 else None
    return {"sequence": sequence.name, "frames": frames, "rows": len(rows), "fps": fps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mot", type=Path, default=ASSETS / "mot" / "MOT17-mini", help="folder of MOTChallenge sequences")
    p.add_argument("--detector", type=Path, default=ASSETS / "models" / "yolox_nano.onnx", help="YOLOX ONNX")
    p.add_argument("--out", type=Path, required=True, help="folder for <sequence>.txt")
    args = p.parse_args(argv)
    from tracklink.app.detect import make_detector

    if not args.mot.is_dir():
        raise SystemExit(f"{args.mot} not found (the shared assets live in ../shared/assets)")
    detector = make_detector(f"yolox:{args.detector}")  # DetectorConfig() defaults, as tracklink batch runs it
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for sequence in sorted(d for d in args.mot.iterdir() if (d / "img1").is_dir()):
        results.append(run_sequence(sequence, detector, args.out))
        print(json.dumps(results[-1]), flush=True)
    (args.out / "timing.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
