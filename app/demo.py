"""Run the whole pipeline offline on two cameras with real people, and show the results.

The footage is built here, in seconds: the three people of `bus.jpg` (an image the ultralytics package ships)
are cut out with the packaged detector and walk across two synthetic cameras, "entrance" and "corridor"
(tracklink.app.scene). The corridor sees them later, mirrored (walking the other way) and under another
light, so linking them is real cross-camera re-identification. Then `tracklink batch` runs on both cameras with
the packaged models and writes everything batch mode writes, plus videos annotated with the final ids, and
the cross-camera IDF1 against the scene's known identities.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DEMO_CAMERAS = ("entrance", "corridor")
CROP_SIZE = (60, 180)  # (W, H) every person is scaled to before a walk's own scale
FPS = 10.0
FRAMES = 80
PERSON_MIN_SCORE = 0.5
# Camera 2's light: a cooler white balance and a little darker, so the same person looks different.
CORRIDOR_GAIN = (1.15, 0.97, 0.82)  # B, G, R


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo", help="output folder (default: ./demo)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--show", action="store_true", help="show both cameras in windows while they run")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def _walks():
    from tracklink.app.scene import Walk

    # Three people, all seen by both cameras; two of them cross each other at the entrance. The corridor sees
    # each of them a few seconds after they left the entrance.
    return (Walk(1, 0, 1, 40, True, 300, 1.05), Walk(2, 0, 10, 45, False, 335, 1.15),
            Walk(3, 0, 28, 42, True, 350, 1.1),
            Walk(1, 1, 44, 36, False, 320, 1.1), Walk(2, 1, 20, 40, True, 300, 1.0),
            Walk(3, 1, 52, 28, False, 345, 1.15))


def people_from_bus(detector) -> list[np.ndarray]:
    """Crops of the people in ultralytics' bus.jpg, found by the packaged detector (left to right)."""
    import cv2
    import ultralytics

    from tracklink import TracklinkError

    path = Path(ultralytics.__file__).resolve().parent / "assets" / "bus.jpg"
    image = cv2.imread(str(path))
    if image is None:
        raise TracklinkError(f"the demo needs {path}, which the ultralytics package ships; reinstall ultralytics")
    found = detector([image])[0]
    keep = [b for b, c in zip(found.xyxy, found.confidence) if c >= PERSON_MIN_SCORE]
    crops = [image[int(y1):int(y2), int(x1):int(x2)] for x1, y1, x2, y2 in sorted(keep, key=lambda b: b[0])]
    if len(crops) < 3:
        raise TracklinkError(f"the detector found {len(crops)} people in {path}, the demo needs 3")
    return crops[:3]


def build_footage(root: Path, people: list[np.ndarray]) -> list[Path]:
    """Both cameras in MOTChallenge layout (frames, seqinfo.ini, ground truth); returns their folders."""
    from tracklink.app.scene import background, render_camera

    corridor = [np.clip(p[:, ::-1] * np.array(CORRIDOR_GAIN), 0, 255).astype(np.uint8) for p in people]
    looks = (people, corridor)
    tints = ((1.0, 0.97, 0.92), (0.9, 0.95, 1.05))
    return [render_camera(root / name, cam, _walks(), lambda w, f: looks[w.camera][w.person - 1], FRAMES,
                          background(7 + cam, tints[cam]), CROP_SIZE, FPS)
            for cam, name in enumerate(DEMO_CAMERAS)]


def run(args: argparse.Namespace) -> int:
    from tracklink.app.batch import BatchOptions, run_batch
    from tracklink.app.detect import make_detector
    from tracklink.app.evalmot import evaluate
    from tracklink.app.summary import format_summary
    from tracklink.models.weights import default_detector

    out = Path(args.out)
    cameras = build_footage(out / "footage", people_from_bus(make_detector(default_detector())))
    summary = run_batch(BatchOptions([str(c) for c in cameras], out=str(out), save_video=True, fresh=True,
                                     show=args.show, progress=args.progress))
    score = evaluate(out / "footage", out, multi_camera=True)["scores"]["MTMC"]
    summary["footage"] = str(out / "footage")
    summary["mtmc"] = {k: round(float(v), 4) for k, v in score.items()}
    if args.json:
        print(json.dumps(summary))
        return 1 if summary["errors"] else 0
    print(format_summary("tracklink demo", summary))
    print(f"  {'footage':<11} {out / 'footage'}/ (two synthetic cameras; people from ultralytics' bus.jpg)")
    print(f"  {'accuracy':<11} cross-camera IDF1 {score['IDF1']:.3f}, MOTA {score['MOTA']:.3f} against the "
          "footage's known identities")
    print(f"  {'next':<11} tracklink batch your_video.mp4 --out out/ --save-video")
    return 1 if summary["errors"] else 0
