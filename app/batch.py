"""Track and link people in recorded videos (or streams) and write MOTChallenge files, a store and a summary.

Writes, in --out: <camera>.txt (MOTChallenge rows `frame,id,x,y,w,h,conf,-1,-1,-1` with the per-camera
track id), <camera>.global.txt (the same rows with the global identity), tracklink.db (SQLite, unless --db
names another store, e.g. one PostgreSQL database shared by many machines), summary.json and, with
--save-video, <camera>.mp4 annotated with the final global ids. Re-running over the same footage with the
same settings resumes: cameras already done are skipped and the others are redone. Global ids are revised
at the end by clustering the tracklets of every finished camera in the store at once, this run's and any
other's. Exit code 1 when some camera failed (the others' outputs are complete); Ctrl-C (how a run over
live cameras ends) or SIGTERM finishes the live cameras, writes the outputs and exits 130. While a run is
going, summary.json says "running" and the files of the cameras it redoes are gone.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from tracklink.app.session import SessionOptions, add_session_arguments, add_store_argument

if TYPE_CHECKING:
    from tracklink.app.link import LinkConfig
    from tracklink.app.pipeline import Pipeline
    from tracklink.app.records import Tracklet
    from tracklink.app.session import Models
    from tracklink.app.sources import SourceSpec
    from tracklink.app.store import Store

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", metavar="VIDEO_OR_SOURCE",
                   help="video file, MOTChallenge/image folder, camera index or rtsp/http URL; NAME=SOURCE names it")
    p.add_argument("--out", default="out", help="output folder (default: ./out)")
    p.add_argument("--save-video", action="store_true",
                   help="also write <camera>.mp4, annotated with the final global ids (as in <camera>.global.txt)")
    p.add_argument("--show", action="store_true", help="show each camera in a window while it runs (needs a display)")
    add_store_argument(p)
    p.add_argument("--fresh", action="store_true",
                   help="start over: delete the SQLite store; in a PostgreSQL store, redo these cameras")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object instead of a table")
    add_session_arguments(p)


@dataclass
class BatchOptions(SessionOptions):
    sources: list[str] = field(default_factory=list)
    out: str = "out"
    db: str | None = None  # the store; default OUT/tracklink.db
    save_video: bool = False
    show: bool = False
    fresh: bool = False
    progress: bool = True


def run(args: argparse.Namespace) -> int:
    from tracklink.app.summary import format_summary

    names = BatchOptions.__dataclass_fields__
    summary = run_batch(BatchOptions(**{k: getattr(args, k) for k in names if hasattr(args, k)}))
    print(json.dumps(summary) if args.json else format_summary("tracklink batch", summary), flush=True)
    for name, error in summary["errors"].items():
        print(f"tracklink batch: error: camera {name}: {error}", file=sys.stderr)
    if summary["interrupted"]:
        print("tracklink batch: interrupted; run the same command again to finish the recordings", file=sys.stderr)
        return 130
    return 1 if summary["errors"] else 0


# ------------------------------------------------------------------------------------------------ run


@dataclass
class _Run:
    """One batch run's state between its stages."""

    options: BatchOptions
    specs: list["SourceSpec"]
    models: "Models"
    out: Path
    store: "Store"
    prints: dict[str, str]
    skipped: list[str]
    interrupted: bool = False
    videos: dict[str, Path] = field(default_factory=dict)


def run_batch(options: BatchOptions) -> dict:
    """The batch job; returns the summary it also writes to OUT/summary.json."""
    from tracklink.app import output_folder
    from tracklink.app.session import camera_fingerprints, load_models
    from tracklink.app.sources import parse_sources
    from tracklink.app.store import LINK_THRESHOLD_KEY

    specs = parse_sources(options.sources)  # names and paths only: nothing is opened yet
    out = Path(options.out)
    output_folder.check_output_names(specs, out)
    if options.show:
        _check_display()
    models = load_models(options)
    output_folder.prepare(out)
    with output_folder.write_errors(out):
        store = _open_store(options.db or out / "tracklink.db", options.fresh)
        store.set_meta(LINK_THRESHOLD_KEY, str(models.threshold))  # what `tracklink link` re-links with later
        store.commit()
        prints = camera_fingerprints(options, specs, models)
        skipped = [] if options.fresh else _finished_cameras(store, specs, prints)
        run = _Run(options, specs, models, out, store, prints, skipped)
        output_folder.retract(out, [s.name for s in specs if s.name not in run.skipped])
        started = time.monotonic()
        with _sigterm_as_interrupt():
            pipeline, raw = _process(run)
        # Over every camera in the store, not only this run's: runs into one store agree on who is who.
        tracklets, mapping = revise_identities(store, [c.name for c in store.cameras()], models.link)
        if options.save_video:
            from tracklink.app.annotate import write_annotated_videos

            run.videos = write_annotated_videos(store, specs, out, raw)
        summary = _summary(run, pipeline, tracklets, mapping, time.monotonic() - started)
        store.close()
    return summary


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (how systemd, docker and Kubernetes stop a process) ends a run as Ctrl-C does: live cameras
    finish, recordings stay to resume, the outputs and summary are written. A second one is ignored while
    that happens (a supervisor sends SIGKILL when it runs out of patience)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log.warning("SIGTERM: stopping as on Ctrl-C")
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_display() -> None:
    import os

    from tracklink import TracklinkError

    if sys.platform == "linux" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise TracklinkError("--show needs a display (DISPLAY is unset); drop --show, or run under xvfb-run")


def _open_store(db: str | Path, fresh: bool) -> "Store":
    from tracklink.app.store import is_server_url, open_store

    if fresh and not is_server_url(db):  # a shared server store is never wiped: --fresh redoes this run's cameras
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    return open_store(db)


def _finished_cameras(store: "Store", specs: list["SourceSpec"], prints: dict[str, str]) -> list[str]:
    """Recordings already done in the store with the same footage and settings: nothing to redo."""
    skipped = [s.name for s in specs if not s.live and (rec := store.camera(s.name)) is not None
               and rec.status == "done" and rec.fingerprint == prints[s.name]]
    for name in skipped:
        log.info("%s: already done in the store with the same footage and settings; skipping", name)
    return skipped


def _process(run: _Run) -> tuple["Pipeline", dict[str, Path]]:
    """Run the pipeline over the cameras still to do, with progress bars (and the raw frames of live cameras
    kept for annotated videos); returns the pipeline and those raw recordings."""
    from tracklink.app.annotate import RawRecorder
    from tracklink.app.session import build_pipeline, open_gallery
    from tracklink.app.sources import make_source

    to_run = [s for s in run.specs if s.name not in run.skipped]
    linker, _ = open_gallery(run.store, run.models.link, restarting=[s.name for s in to_run])
    pipeline = build_pipeline([make_source(s) for s in to_run], run.models, run.options, run.store, linker,
                              run.prints)
    raw = RawRecorder(run.out, pipeline.sources) if run.options.save_video else None
    window = LiveWindows() if run.options.show else None
    bars = ProgressBars()
    try:
        try:  # opening is inside: a stop that comes while the cameras open is a stop like any other
            pipeline.open()
            bars.open([s for s in pipeline.sources if s.name in pipeline.active], run.options.progress)
            for step in pipeline:
                for cam in step.cameras:
                    bars.advance(cam.frame.camera)
                    if raw is not None:
                        raw.write(cam.frame)
                    if window is not None:
                        window.show(cam)
        except KeyboardInterrupt:
            # Ctrl-C is how a run over live cameras ends: they are complete up to now, so they finish and
            # get outputs. Recordings stay unfinished in the store and resume on the next run.
            run.interrupted = True
            log.warning("interrupted: finishing the live cameras, leaving recordings to resume")
            for source in pipeline.sources:
                if source.live and source.name in pipeline.active:
                    pipeline.remove_source(source.name)
    finally:
        bars.close()
        for sink in (raw, window):
            if sink is not None:
                sink.close()
        pipeline.close()
    return pipeline, (raw.paths if raw is not None else {})


def revise_identities(store: "Store", cameras: list[str], link: "LinkConfig") -> tuple[list["Tracklet"], dict]:
    """Batch revision: cluster every finished camera's tracklets at once, with all constraints, and store
    the result (global ids and identities)."""
    from tracklink.app.link import cluster_tracklets

    store.begin_relink()  # read and rewrite as one: a concurrent run's revision waits, then sees this one's
    done = [c.name for c in store.cameras() if c.status == "done" and c.name in cameras]
    tracklets = [t for name in done for t in store.tracklets(name)]
    _check_one_embedding_size(tracklets)
    mapping = cluster_tracklets(tracklets, link)
    store.set_global_ids(mapping)
    for t in tracklets:
        t.global_id = mapping[t.key]
    store.put_identities(_identities(tracklets), replace_all=True)
    store.commit()
    return tracklets, mapping


def _check_one_embedding_size(tracklets: list["Tracklet"]) -> None:
    """Cameras of one store embedded by re-ID models of different sizes cannot be linked together."""
    from tracklink import TracklinkError

    sizes: dict[int, str] = {}
    for t in tracklets:
        if t.feature_sum is not None:
            sizes.setdefault(int(t.feature_sum.size), t.camera)
    if len(sizes) > 1:
        found = ", ".join(f"{size} (e.g. camera {camera})" for size, camera in sorted(sizes.items()))
        raise TracklinkError(f"the store holds embeddings of different sizes: {found}; runs with different re-ID "
                             "models need their own --out or --db")


def _identities(tracklets):
    from tracklink.app.records import Identity

    by_id: dict[int, Identity] = {}
    for t in tracklets:
        by_id.setdefault(t.global_id, Identity(t.global_id)).members.append(t)
    return list(by_id.values())


# ------------------------------------------------------------------------------------------------ outputs


def _camera_results(run: _Run, pipeline: "Pipeline", tracklets: list["Tracklet"]) -> dict[str, dict]:
    """Each camera's outcome; done cameras get their MOT files, the others lose stale ones."""
    cameras = {}
    sources = {s.name: s for s in pipeline.sources}
    for name in [s.name for s in run.specs]:
        rec = run.store.camera(name)
        if rec is not None and rec.status == "done":
            rows = write_mot(run.store, name, run.out)
            cameras[name] = {"status": "skipped" if name in run.skipped else "done", "frames": rec.frames,
                             "rows": rows, "tracklets": sum(t.camera == name for t in tracklets)}
            if getattr(sources.get(name), "skipped_frames", 0):  # a damaged stretch it stepped over
                cameras[name]["undecodable_frames"] = sources[name].skipped_frames
            continue
        for stale in (run.out / f"{name}.txt", run.out / f"{name}.global.txt"):  # not these results
            stale.unlink(missing_ok=True)
        if run.interrupted and name not in pipeline.errors:
            cameras[name] = {"status": "interrupted", "frames": 0}
        else:
            cameras[name] = {"status": "error", "error": pipeline.errors.get(name) or (rec.error if rec else ""),
                             "frames": rec.frames if rec else 0}
    return cameras


def _summary(run: _Run, pipeline: "Pipeline", tracklets: list["Tracklet"], mapping: dict[str, int],
             seconds: float) -> dict:
    from tracklink.app.output_folder import SUMMARY
    from tracklink.utils.files import atomic_write

    cameras = _camera_results(run, pipeline, tracklets)
    options, models = run.options, run.models
    cameras_of: dict[int, set[str]] = {}
    for t in tracklets:
        cameras_of.setdefault(mapping[t.key], set()).add(t.camera)
    errors = {name: c["error"] for name, c in cameras.items() if c["status"] == "error"}
    summary = {
        "status": "interrupted" if run.interrupted else "error" if errors else "done",
        "out": str(run.out),
        "wall_s": round(seconds, 2),
        "cameras": cameras,
        "frames": sum(c["frames"] for c in cameras.values() if c["status"] != "error"),
        "frames_processed": pipeline.stats.frames,
        "fps": {k: (round(v, 2) if v is not None else None) for k, v in pipeline.stats.fps().items()},
        "seconds": {k: round(v, 3) for k, v in pipeline.stats.seconds.items()},
        "tracklets": len(tracklets),
        "identities": len(set(mapping.values())),
        "cross_camera_identities": sum(len(c) > 1 for c in cameras_of.values()),
        "errors": errors,
        "interrupted": run.interrupted,
        "detector": models.detector_spec,
        "reid": str(models.reid_path),
        "backend": models.embedder.backend,
        "tracker": options.tracker,
        "link_threshold": models.threshold,
        "pooling": options.pooling,
        "transit": options.transit,
        "videos": {name: str(path) for name, path in run.videos.items()},
    }
    atomic_write(run.out / SUMMARY, json.dumps(summary, indent=2) + "\n")
    return summary


def write_mot(store: "Store", camera: str, out: Path) -> int:
    """OUT/<camera>.txt and OUT/<camera>.global.txt from the store; returns the number of rows."""
    from tracklink.utils.files import atomic_write

    local, world = [], []
    for a in store.appearances(camera):
        x1, y1, x2, y2 = a.xyxy
        box = f"{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{a.confidence:.4f},-1,-1,-1"
        local.append(f"{a.frame},{a.track_id},{box}\n")
        if a.global_id is not None:
            world.append(f"{a.frame},{a.global_id},{box}\n")
    world.sort(key=lambda row: tuple(int(v) for v in row.split(",", 2)[:2]))
    atomic_write(out / f"{camera}.txt", "".join(local))
    atomic_write(out / f"{camera}.global.txt", "".join(world))
    return len(local)


class ProgressBars:
    """One bar per camera (tqdm hides them when stderr is not a terminal)."""

    def __init__(self) -> None:
        self.bars: dict[str, object] = {}

    def open(self, sources, enabled: bool) -> None:
        from tqdm import tqdm

        from tracklink.utils.progress import bar_disabled

        if enabled:
            self.bars = {s.name: tqdm(total=s.frame_count, desc=s.name, unit="frame", position=i, leave=True,
                                      dynamic_ncols=True, disable=bar_disabled(True)) for i, s in enumerate(sources)}

    def advance(self, camera: str) -> None:
        bar = self.bars.get(camera)
        if bar is not None:
            bar.update(1)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


class LiveWindows:
    """`--show`: one window per camera with its newest frame and the global ids so far."""

    def show(self, cam) -> None:
        import cv2

        from tracklink.app.render import draw_tracks

        cv2.imshow(f"tracklink: {cam.frame.camera}", draw_tracks(cam.frame.image, cam.tracks, cam.global_ids))
        cv2.waitKey(1)

    def close(self) -> None:
        import cv2

        cv2.destroyAllWindows()
