"""Pipeline speed on this machine (issue 4, acceptance item 4). Prints one JSON object.

Input: MOT17-mini sequences from the shared assets, resized to --size (default 480x360) and played back and
forth (0, 1, ..., n-1, n-2, ..., 1, 0, ...) to --frames frames, written as mp4 videos in a temp folder: one
video per camera, camera k showing the k-th sequence of --sequences. Each run is `tracklink batch`'s own
code path (`run_batch`) with the real YOLOX detector and OSNet embedder, re-ID on, into a fresh output folder.

Beside it, in the same run and on the same videos, ultralytics' own BYTETracker without re-ID on the same
YOLOX detector (ByteTrack's published thresholds, as in bench/tracking.py): decode, detect, track, one
after the other, as `model.track()` runs them. `vs_ultralytics` is tracklink's overall fps (re-ID, linking
and the store included) over that peer's, per sequence.

Reported per camera count (--cameras, default 1,2,4): camera-frames/s of each stage (decode, detect, track,
embed, link, store: camera-frames processed / seconds spent in the stage, from summary.json), overall
camera-frames/s over the pipeline's wall time, and ms per camera-frame, so the cost of adding a stream
shows directly. The first default camera is MOT17-04, the most crowded sequence (about 27 tracked people a
frame), so the 1-camera row is the hard case; `per_sequence` runs every sequence alone as one camera, so
content (crowd size) can be told apart from the number of streams. Each configuration runs --repeat times;
the fastest run is kept (the CPU is shared: the fastest is the least disturbed).

    .venv/bin/python bench/pipeline_speed.py [--cameras 1,2,4] [--per-sequence] [--size 480x360] [--threads N]
        [--tracker botsort|bytetrack] [--no-read-ahead]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/tracking.py: the peers' thresholds
ASSETS = REPO.parent / "shared" / "assets"
DEFAULT_SEQUENCES = ("MOT17-04-FRCNN", "MOT17-11-FRCNN", "MOT17-13-FRCNN", "MOT17-02-FRCNN")


def ping_pong(n: int, length: int) -> list[int]:
    """Frame order 0..n-1..1 repeated: smooth back-and-forth motion from a few real frames."""
    cycle = list(range(n)) + list(range(n - 2, 0, -1)) or [0]
    return [cycle[i % len(cycle)] for i in range(length)]


def make_video(sequence: Path, path: Path, size: tuple[int, int], frames: int) -> Path:
    files = sorted((sequence / "img1").glob("*.jpg"))
    if not files:
        raise SystemExit(f"no frames in {sequence / 'img1'}")
    images = [cv2.resize(cv2.imread(str(f)), size, interpolation=cv2.INTER_AREA) for f in files]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, size)
    for i in ping_pong(len(images), frames):
        writer.write(images[i])
    writer.release()
    return path


def run_once(videos: list[Path], out: Path, args: argparse.Namespace) -> dict:
    from tracklink.app.batch import BatchOptions, run_batch

    # NAME=PATH: a sequence shown by two cameras (when cycled) still makes two cameras.
    options = BatchOptions([f"cam{k + 1}={v}" for k, v in enumerate(videos)], out=str(out),
                           detector=f"yolox:{args.detector}", reid=str(args.reid), tracker=args.tracker, fresh=True,
                           progress=False, threads=args.threads, read_ahead=args.read_ahead)
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        summary = run_batch(options)
    total_s = time.perf_counter() - t0
    if summary["errors"]:
        raise SystemExit(f"batch failed: {summary['errors']}")
    frames = summary["frames_processed"]
    overall = summary["fps"]["overall"]
    return {
        "cameras": len(videos),
        "camera_frames": frames,
        "fps": summary["fps"],  # per stage, plus "pipeline" (busy time) and "overall" (wall time)
        "ms_per_camera_frame": round(1000 / overall, 2) if overall else None,
        "steps_per_s": round(overall / len(videos), 2) if overall else None,  # each step reads every camera
        "stage_ms_per_camera_frame": {k: round(1000 * s / frames, 2) for k, s in summary["seconds"].items()},
        "tracklets": summary["tracklets"],
        "identities": summary["identities"],
        "run_batch_s": round(total_s, 2),  # with model loading and the final clustering
        "backend": summary["backend"],
    }


def run_peer(video: Path, args: argparse.Namespace) -> float:
    """ultralytics' BYTETracker, re-ID off, on the same YOLOX detector; frames/s over decode+detect+track."""
    from ultralytics.engine.results import Boxes
    from ultralytics.trackers import BYTETracker
    from ultralytics.utils import IterableSimpleNamespace

    from tracklink.app.detect import DetectorConfig, make_detector
    from tracklink.app.track import ultralytics_tracker_yaml
    from tracking import PEER_DETECTOR, PEER_TRACKER

    detector = make_detector(f"yolox:{args.detector}", DetectorConfig(conf=PEER_DETECTOR["conf"],
                                                                      iou=PEER_DETECTOR["iou"]),
                             threads=args.threads or None)
    tracker = BYTETracker(IterableSimpleNamespace(**{**ultralytics_tracker_yaml("bytetrack"), **PEER_TRACKER}))
    capture = cv2.VideoCapture(str(video))
    frames, t0 = 0, time.perf_counter()
    while True:
        ok, image = capture.read()
        if not ok:
            break
        det = detector([image])[0]
        tracker.update(Boxes(np.concatenate([det.xyxy, det.confidence[:, None], det.class_id[:, None]], axis=1)
                             .astype(np.float32), image.shape[:2]), image)
        frames += 1
    capture.release()
    return frames / (time.perf_counter() - t0)


def beside_peer(video: Path, root: Path, args: argparse.Namespace, tag: str) -> dict:
    """One camera: tracklink and the peer in turn, --repeat times each, interleaved so that a slow spell of
    the machine falls on both; the fastest run of each is kept."""
    ours, peer = [], []
    for r in range(args.repeat):
        ours.append(run_once([video], root / f"{tag}-{r}", args))
        peer.append(run_peer(video, args))
    best = max(ours, key=lambda run: run["fps"]["overall"] or 0)
    best["overall_fps_runs"] = [run["fps"]["overall"] for run in ours]
    best["ultralytics_bytetrack_fps_runs"] = [round(f, 1) for f in peer]
    best["ultralytics_bytetrack_fps"] = round(max(peer), 1)
    best["vs_ultralytics"] = round(best["fps"]["overall"] / max(peer), 3)
    # Each pair ran back to back, so a slow spell of the machine falls on both: the median of the pairs'
    # ratios does not hang on one lucky run of either side, as the ratio of the two fastest does.
    best["vs_ultralytics_paired_median"] = round(statistics.median(
        (run["fps"]["overall"] or 0) / p for run, p in zip(ours, peer)), 3)
    return best


def best_of(videos: list[Path], root: Path, args: argparse.Namespace, tag: str) -> dict:
    runs = [run_once(videos, root / f"{tag}-{r}", args) for r in range(args.repeat)]
    best = max(runs, key=lambda r: r["fps"]["overall"] or 0)
    best["overall_fps_runs"] = [r["fps"]["overall"] for r in runs]
    return best


def main(argv: list[str] | None = None) -> int:
    from tracklink.app.session import DEFAULT_THREADS, TRACKERS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mot", type=Path, default=ASSETS / "mot" / "MOT17-mini")
    p.add_argument("--detector", type=Path, default=ASSETS / "models" / "yolox_nano.onnx", help="YOLOX ONNX")
    p.add_argument("--reid", type=Path, default=ASSETS / "models" / "osnet_x0_25_msmt17.onnx")
    p.add_argument("--sequences", default=",".join(DEFAULT_SEQUENCES),
                   help="camera k shows the k-th of these (cycled when there are more cameras)")
    p.add_argument("--cameras", default="1,2,4", help="camera counts to run")
    p.add_argument("--frames", type=int, default=100, help="frames per camera")
    p.add_argument("--size", default="480x360", help="WxH of every camera")
    p.add_argument("--tracker", default="bytetrack", choices=TRACKERS)
    p.add_argument("--threads", type=int, default=None, help="CPU threads per model (default: tracklink batch's)")
    p.add_argument("--repeat", type=int, default=2, help="runs per configuration; the fastest is reported")
    p.add_argument("--per-sequence", action="store_true", help="also run each MOT17-mini sequence alone")
    p.add_argument("--no-read-ahead", dest="read_ahead", action="store_false",
                   help="tracklink runs its stages in turn (no read-ahead thread)")
    args = p.parse_args(argv)

    args.threads = DEFAULT_THREADS if args.threads is None else args.threads
    for path in (args.mot, args.detector, args.reid):
        if not path.exists():
            raise SystemExit(f"{path} is missing (the shared assets live in ../shared/assets)")
    size = tuple(int(v) for v in args.size.lower().split("x"))
    sequences = [s for s in args.sequences.split(",") if s]
    counts = [int(c) for c in args.cameras.split(",") if c]
    logging.disable(logging.WARNING)

    report: dict = {
        "host": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                 "load_avg_1m_before": round(os.getloadavg()[0], 2)},
        "input": {"size": list(size), "frames_per_camera": args.frames, "sequences": sequences},
        "tracker": args.tracker, "threads": args.threads, "detector": str(args.detector), "reid": str(args.reid),
        "repeat": args.repeat, "read_ahead": args.read_ahead,
    }
    with tempfile.TemporaryDirectory(prefix="tracklink-speed-") as tmp:
        root = Path(tmp)
        names = sorted({*sequences, *([d.name for d in args.mot.iterdir() if d.is_dir()] if args.per_sequence
                                      else [])})
        videos = {s: make_video(args.mot / s, root / f"{s.split('-FRCNN')[0]}.mp4", size, args.frames) for s in names}
        report["scaling"] = [best_of([videos[sequences[k % len(sequences)]] for k in range(n)], root, args, f"n{n}")
                             for n in counts]
        if args.per_sequence:
            report["per_sequence"] = {s: beside_peer(videos[s], root, args, s) for s in names}
    report["host"]["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
