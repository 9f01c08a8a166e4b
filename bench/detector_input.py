"""YOLOX-nano's cost per frame at its square input and at the rectangular one (app/detect.py). Prints JSON.

A real MOT17-04 frame resized to each --sizes WxH goes through the whole detector call (letterbox, network,
decode, NMS) on one thread, --repeat rounds of --iters calls per variant, the two variants in turn within a
round; the median round is reported, with how many people each found on that frame.

    .venv/bin/python bench/detector_input.py [--sizes 480x360,640x480,1920x1080] [--iters 30] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"
FRAME = ASSETS / "mot" / "MOT17-mini" / "MOT17-04-FRCNN" / "img1" / "000001.jpg"
YOLOX = ASSETS / "models" / "yolox_nano.onnx"


def main(argv: list[str] | None = None) -> int:
    import cv2

    from tracklink.app.detect import YOLOX_DEFAULTS, YoloxDetector

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="480x360,640x480,1920x1080")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    if not FRAME.is_file() or not YOLOX.is_file():
        raise SystemExit(f"the shared assets are missing under {ASSETS}")
    variants = {"square": YoloxDetector(YOLOX, YOLOX_DEFAULTS, threads=1, rect=False),
                "rectangular": YoloxDetector(YOLOX, YOLOX_DEFAULTS, threads=1)}
    image = cv2.imread(str(FRAME))
    report = {}
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.lower().split("x"))
        frame = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        rounds: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeat):
            for name, detector in variants.items():
                detector([frame])  # warm-up (and this size's grid)
                t0 = time.perf_counter()
                for _ in range(args.iters):
                    detector([frame])
                rounds[name].append(1000 * (time.perf_counter() - t0) / args.iters)
        report[size] = {name: {"input": list(d.preprocess(frame)[0].shape[2:]),
                               "ms_per_frame": round(float(np.median(rounds[name])), 2),
                               "people": len(d([frame])[0])} for name, d in variants.items()}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
