"""Track and link people in recorded videos (or streams) and write MOTChallenge files, a store and a summary.

Writes, in --out: <camera>.txt (MOTChallenge rows `frame,id,x,y,w,h,conf,-1,-1,-1` with the per-camera
track id), <camera>.global.txt (the same rows with the global identity), tracklink.db (SQLite), summary.json
and, with --save-video, <camera>.mp4. Re-running over the same footage with the same settings resumes:
cameras already done are skipped and the others are redone. Global ids are revised at the end by
clustering all tracklets at once. Exit code 1 when some camera failed (the others' outputs are complete);
Ctrl-C (how a run over live cameras ends) finishes the live cameras, writes the outputs and exits 130.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tracklink.app.track import TRACKERS

log = logging.getLogger(__name__)

# CPU threads per model; 0 is the runtime's default, one per core. On our 2-core CPU, 480x360 with re-ID:
# 35 fps with 2 threads against 27 with 1 when the other core was idle; with it busy, the same speed at
# 1.5x the CPU time. Pass 1 where other work shares the cores. (ONNX Runtime's threads never spin-wait
# here: that doubled the CPU time of a step and made it slower.)
DEFAULT_THREADS = 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", metavar="VIDEO_OR_SOURCE",
                   help="video file, MOTChallenge/image folder, camera index or rtsp/http URL; NAME=SOURCE names it")
    p.add_argument("--detector", default=None,
                   help="yolox:PATH for a YOLOX ONNX, or an ultralytics model file or name (default: yolo11n.pt)")
    p.add_argument("--reid", default=None,
                   help="re-ID model: .onnx, .engine, tracklink .pt or a catalogue name (default: osnet_x0_25_msmt17, "
                        "downloaded once into the user cache)")
    p.add_argument("--out", default="out", help="output folder (default: ./out)")
    p.add_argument("--save-video", action="store_true", help="also write annotated <camera>.mp4 videos")
    p.add_argument("--tracker", choices=TRACKERS, default="bytetrack",
                   help="per-camera tracker; botsort also matches on our embeddings (default: bytetrack)")
    p.add_argument("--link-threshold", type=float, default=None,
                   help="cosine similarity for linking tracklets (default: from the model or its calibration)")
    p.add_argument("--backend", choices=["torch", "onnxruntime", "tensorrt"], default=None,
                   help="re-ID runtime (default: the fastest present for the model file)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the best available)")
    p.add_argument("--conf", type=float, default=None, help="detector score threshold (default: 0.1)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing tracklink.db in --out; start over")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help=f"CPU threads of each model (detector, re-ID) (default: {DEFAULT_THREADS}; 0: one per core)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


@dataclass
class BatchOptions:
    sources: list[str]
    out: str = "out"
    detector: str | None = None
    reid: str | None = None
    tracker: str = "bytetrack"
    link_threshold: float | None = None
    backend: str | None = None
    device: str | None = None
    conf: float | None = None
    save_video: bool = False
    fresh: bool = False
    progress: bool = True
    threads: int = DEFAULT_THREADS  # per model; 0: the runtime's default (one per core)


def run(args: argparse.Namespace) -> int:
    options = BatchOptions(sources=args.sources, out=args.out, detector=args.detector, reid=args.reid,
                           tracker=args.tracker, link_threshold=args.link_threshold, backend=args.backend,
                           device=args.device, conf=args.conf, save_video=args.save_video, fresh=args.fresh,
                           threads=args.threads,
                           progress=args.progress)
    summary = run_batch(options)
    for name, error in summary["errors"].items():
        print(f"tracklink batch: error: camera {name}: {error}", file=sys.stderr)
    if summary["interrupted"]:
        print("tracklink batch: interrupted; run the same command again to finish the recordings", file=sys.stderr)
        return 130
    return 1 if summary["errors"] else 0


# ------------------------------------------------------------------------------------------------ models


def load_models(options: BatchOptions):
    """Detector, embedder and link threshold, all before any video is opened.

    Both models are tried even when the first fails, so an offline machine hears about --detector and
    --reid in one message.
    """
    from tracklink import TracklinkError
    from tracklink.app.detect import DetectorConfig, make_detector
    from tracklink.app.link import resolve_threshold
    from tracklink.app.weights import resolve_reid

    if options.threads < 0:
        raise TracklinkError(f"--threads must be 0 (one per core) or more, got {options.threads}")
    errors, detector, embedder, reid_path = [], None, None, None
    config = DetectorConfig() if options.conf is None else DetectorConfig(conf=options.conf)
    try:
        detector = make_detector(options.detector, config, options.device, options.threads or None)
    except TracklinkError as exc:
        errors.append(str(exc))
    try:
        from tracklink.export.runtime import open_embedder, resolve_backend

        reid_path = resolve_reid(options.reid)
        embedder = open_embedder(reid_path, backend=options.backend, device=options.device,
                                 **_runtime_options(resolve_backend(reid_path, options.backend), options.threads))
    except TracklinkError as exc:
        errors.append(str(exc))
    if errors:
        raise TracklinkError("\n  ".join(errors))
    threshold = resolve_threshold(reid_path, embedder.meta, options.link_threshold)
    return detector, embedder, reid_path, threshold


def _runtime_options(backend: str, threads: int | None) -> dict:
    """The embedder's CPU threads in its backend's terms; ONNX Runtime's workers sleep instead of spinning."""
    if backend == "onnxruntime":
        return {"intra_op_threads": threads or None, "spinning": False}
    if backend == "torch":
        return {"threads": threads or None}
    return {}  # TensorRT runs on the GPU


def _file_identity(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def source_identity(spec) -> dict:
    """What makes a recording the same footage on a re-run: resolved path, size and mtime of its files."""
    path = Path(spec.target)
    if spec.kind == "video":
        return _file_identity(path)
    if spec.kind == "images":
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return {"path": str(path.resolve()), "files": len(files),
                "size": sum(p.stat().st_size for p in files),
                "mtime_ns": max((p.stat().st_mtime_ns for p in files), default=0)}
    return {"live": spec.display}


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def camera_fingerprints(options: BatchOptions, specs, backend: str, reid_path: Path,
                        threshold: float) -> dict[str, str]:
    """camera -> fingerprint of its footage and the settings that shape its rows (batch and viewer alike)."""
    from tracklink.app.weights import sha256sum

    detector_file = Path(str(options.detector or "").split(":", 1)[-1])
    settings = {"detector": options.detector, "detector_file": _file_identity(detector_file)
                if detector_file.is_file() else None, "conf": options.conf, "reid": sha256sum(reid_path),
                "backend": backend, "tracker": options.tracker, "link_threshold": threshold}
    return {s.name: fingerprint(settings, source_identity(s)) for s in specs}


# ------------------------------------------------------------------------------------------------ run


def run_batch(options: BatchOptions) -> dict:
    """The batch job; returns the summary it also writes to OUT/summary.json."""
    from tracklink.app.link import LinkConfig, OnlineLinker, cluster_tracklets
    from tracklink.app.pipeline import Pipeline, PipelineConfig
    from tracklink.app.sources import make_source, parse_sources
    from tracklink.app.store import SqliteStore
    from tracklink.app.track import TrackerConfig

    specs = parse_sources(options.sources)  # names and paths only: nothing is opened yet
    detector, embedder, reid_path, threshold = load_models(options)

    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    db_path = out / "tracklink.db"
    if options.fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(str(db_path) + suffix).unlink(missing_ok=True)
    store = SqliteStore(db_path)

    prints = camera_fingerprints(options, specs, embedder.backend, reid_path, threshold)
    skipped = [s.name for s in specs if not s.live and (rec := store.camera(s.name)) is not None
               and rec.status == "done" and rec.fingerprint == prints[s.name]]
    for name in skipped:
        log.info("%s: already done in %s with the same footage and settings; skipping", name, db_path)
    to_run = [s for s in specs if s.name not in skipped]

    link_config = LinkConfig(threshold=threshold)
    linker = OnlineLinker(link_config)
    finished_before = [t for name in skipped for t in store.tracklets(name)]
    if finished_before:
        linker.link_many(finished_before)  # online ids of the new cameras then agree with the finished ones

    pipeline = Pipeline([make_source(s) for s in to_run], detector, embedder,
                        PipelineConfig(tracker=TrackerConfig(options.tracker)), store, linker, prints)
    writers = _VideoWriters(out, pipeline.sources) if options.save_video else None
    bars: dict[str, object] = {}
    interrupted = False
    try:
        pipeline.open()
        bars = _progress_bars([s for s in pipeline.sources if s.name in pipeline.active], options.progress)
        try:
            for step in pipeline:
                for cam in step.cameras:
                    bar = bars.get(cam.frame.camera)
                    if bar is not None:
                        bar.update(1)
                    if writers is not None:
                        writers.write(cam)
        except KeyboardInterrupt:
            # Ctrl-C is how a run over live cameras ends: they are complete up to now, so they finish and
            # get outputs. Recordings stay unfinished in the store and resume on the next run.
            interrupted = True
            log.warning("interrupted: finishing the live cameras, leaving recordings to resume")
            for source in pipeline.sources:
                if source.live and source.name in pipeline.active:
                    pipeline.remove_source(source.name)
    finally:
        for bar in bars.values():
            bar.close()
        if writers is not None:
            writers.close()
        pipeline.close()

    # Batch revision: cluster every finished camera's tracklets at once, with all constraints.
    done = [c.name for c in store.cameras() if c.status == "done" and c.name in prints]
    tracklets = [t for name in done for t in store.tracklets(name)]
    mapping = cluster_tracklets(tracklets, link_config)
    store.set_global_ids(mapping)
    for t in tracklets:
        t.global_id = mapping[t.key]
    store.put_identities(_identities(tracklets), replace_all=True)
    store.commit()

    cameras = {}
    for name in [s.name for s in specs]:
        rec = store.camera(name)
        if name in done:
            rows = write_mot(store, name, out)
            cameras[name] = {"status": "skipped" if name in skipped else "done", "frames": rec.frames, "rows": rows,
                             "tracklets": sum(t.camera == name for t in tracklets)}
        else:
            for stale in (out / f"{name}.txt", out / f"{name}.global.txt"):  # from an earlier run: not these results
                stale.unlink(missing_ok=True)
            if interrupted and name not in pipeline.errors:
                cameras[name] = {"status": "interrupted", "frames": 0}
                continue
            cameras[name] = {"status": "error", "error": pipeline.errors.get(name) or (rec.error if rec else ""),
                             "frames": rec.frames if rec else 0}
    errors = {name: c["error"] for name, c in cameras.items() if c["status"] == "error"}
    summary = {
        "cameras": cameras,
        "frames": sum(c["frames"] for c in cameras.values() if c["status"] != "error"),
        "frames_processed": pipeline.stats.frames,
        "fps": {k: (round(v, 2) if v is not None else None) for k, v in pipeline.stats.fps().items()},
        "seconds": {k: round(v, 3) for k, v in pipeline.stats.seconds.items()},
        "tracklets": len(tracklets),
        "identities": len(set(mapping.values())),
        "errors": errors,
        "interrupted": interrupted,
        "detector": options.detector or "yolo11n.pt",
        "reid": str(reid_path),
        "backend": embedder.backend,
        "tracker": options.tracker,
        "link_threshold": threshold,
    }
    _atomic_write(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    store.close()
    return summary


def _identities(tracklets):
    from tracklink.app.records import Identity

    by_id: dict[int, Identity] = {}
    for t in tracklets:
        by_id.setdefault(t.global_id, Identity(t.global_id)).members.append(t)
    return list(by_id.values())


def write_mot(store, camera: str, out: Path) -> int:
    """OUT/<camera>.txt and OUT/<camera>.global.txt from the store; returns the number of rows."""
    local, world = [], []
    for a in store.appearances(camera):
        x1, y1, x2, y2 = a.xyxy
        box = f"{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{a.confidence:.4f},-1,-1,-1"
        local.append(f"{a.frame},{a.track_id},{box}\n")
        if a.global_id is not None:
            world.append(f"{a.frame},{a.global_id},{box}\n")
    world.sort(key=lambda row: tuple(int(v) for v in row.split(",", 2)[:2]))
    _atomic_write(out / f"{camera}.txt", "".join(local))
    _atomic_write(out / f"{camera}.global.txt", "".join(world))
    return len(local)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _progress_bars(sources, enabled: bool) -> dict:
    """One bar per camera (tqdm hides them when stderr is not a terminal)."""
    from tqdm import tqdm

    if not enabled:
        return {}
    return {s.name: tqdm(total=s.frame_count, desc=s.name, unit="frame", position=i, leave=True,
                         dynamic_ncols=True, disable=None)
            for i, s in enumerate(sources)}


class _VideoWriters:
    """One annotated mp4 per camera, opened at its first frame (when the size is known)."""

    def __init__(self, out: Path, sources: Sequence):
        # The sources, not their rates: a source knows its fps only once it is open.
        self.out, self.sources = out, {s.name: s for s in sources}
        self.writers: dict[str, object] = {}

    def write(self, cam) -> None:
        import cv2

        from tracklink.app.render import draw_tracks

        frame = cam.frame
        writer = self.writers.get(frame.camera)
        if writer is None:
            h, w = frame.image.shape[:2]
            source = self.sources.get(frame.camera)
            fps = (source.fps if source is not None else None) or 30.0  # live sources may not report a rate
            writer = cv2.VideoWriter(str(self.out / f"{frame.camera}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                     fps, (w, h))
            self.writers[frame.camera] = writer
        writer.write(draw_tracks(frame.image, cam.tracks, cam.global_ids))

    def close(self) -> None:
        for writer in self.writers.values():
            writer.release()
