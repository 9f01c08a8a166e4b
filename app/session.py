"""The session layer every front end shares: options, models, fingerprints, the store's gallery, the pipeline.

`tracklink batch` and `tracklink view` differ only at their ends (files and a summary, or a window); `match`
and `calibrate` embed crops instead of decoding video. Everything they have in common is here, once:

- `SessionOptions` and `add_session_arguments`: the same flags, defaults and help in every command;
- `load_models`: detector, re-ID embedder and link configuration, all checked before any video opens;
- `camera_fingerprints`: what makes a stored camera "the same footage with the same settings";
- `open_gallery`: the one resume policy. Stored tracklets keep their stored global ids, so reopening a store
  (a batch re-run, a viewer restart) continues the same people instead of renumbering them;
- `build_pipeline`: sources, models, store and linker put together;
- `crop_tracklets`: tracklets from folders of crops, pooled like the pipeline pools them (match, calibrate).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from tracklink import TracklinkError
from tracklink.app.track import TRACKERS
from tracklink.models.pooling import POOLINGS
from tracklink.utils.suffixes import BACKENDS

if TYPE_CHECKING:
    from tracklink.app.link import LinkConfig, OnlineLinker
    from tracklink.app.pipeline import Pipeline
    from tracklink.app.records import Tracklet
    from tracklink.app.sources import Source, SourceSpec
    from tracklink.app.store import Store
    from tracklink.app.track import TrackerConfig
    from tracklink.export.runtime import Embedder

log = logging.getLogger(__name__)

# BoT-SORT with our embeddings, by bench/tracking.py: with YOLOX-nano its best setting beat ByteTrack's best
# on the tuning sequences (objective +0.014 against -0.071: README, "Tracking defaults"); it is also
# ultralytics' own default tracker for its YOLO models.
DEFAULT_TRACKER = "botsort"
# CPU threads per model; 0: automatic (`model_threads`). With read-ahead the detector and the re-ID model run
# at the same time, so each gets half the cores: on our 2-core CPU, MOT17-04 at 480x360 with BoT-SORT ran
# 72.9 frames/s with 1 thread per model against 59.7 with 2 (and 47.7 with the stages in turn, 2 threads;
# `bench/pipeline_speed.py --sequences MOT17-04-FRCNN --cameras 1 --tracker botsort --threads 1|0`).
DEFAULT_THREADS = 0


@dataclass(kw_only=True)
class SessionOptions:
    """What shapes a pipeline run, whichever front end drives it. None means the pipeline's own default.

    Keyword-only, so a front end's options (`BatchOptions(sources, ...)`) keep their own positional fields.
    """

    detector: str | None = None
    reid: str | None = None
    tracker: str = DEFAULT_TRACKER
    link_threshold: float | None = None
    backend: str | None = None
    device: str | None = None
    conf: float | None = None
    nms_iou: float | None = None
    tracker_config: str | None = None  # YAML file overriding keys of the tracker's YAML
    threads: int = DEFAULT_THREADS  # per model; 0: the runtime's default (one per core)
    read_ahead: bool = True  # read and detect the next frames while tracking and embedding (app/feed.py)
    embed_every: int = 4  # after a track's first crops, embed one every N frames (EmbedSchedule)
    transit: str | None = None  # YAML file of camera-pair transit windows
    pooling: str = "mean"  # how a tracklet's frame embeddings become its feature
    # Allow a pickled detector (.pt) from a path: loading one runs the code it holds. Never remembered.
    trust_pickle: bool = False
    gallery_ttl: float | None = None  # seconds unseen before an identity leaves the online search index


# ---------------------------------------------------------------------------------------------- flags


def add_session_arguments(p: argparse.ArgumentParser, remembered: bool = False) -> None:
    """The flags of `SessionOptions`. `remembered`: defaults are None, so a front end that remembers
    settings (the viewer) can tell a flag the user gave from one left out."""
    fallback = "remembered, else " if remembered else ""
    p.add_argument("--detector", default=None,
                   help=f"yolox:PATH for a YOLOX ONNX or engine, or an ultralytics model file or name (default: "
                        f"{fallback}the packaged YOLOX-nano)")
    p.add_argument("--reid", default=None,
                   help=f"re-ID model: .onnx, .engine, tracklink .pt or a catalogue name (default: {fallback}"
                        "the packaged osnet_x0_25_msmt17)")
    p.add_argument("--tracker", choices=TRACKERS, default=None if remembered else DEFAULT_TRACKER,
                   help=f"per-camera tracker; botsort also matches on our embeddings (default: {fallback}"
                        f"{DEFAULT_TRACKER})")
    p.add_argument("--link-threshold", type=float, default=None,
                   help="cosine similarity for linking tracklets (default: from the model or its calibration)")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="re-ID runtime (default: the fastest present for the model file)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the best available)")
    p.add_argument("--conf", type=float, default=None,
                   help="detector score threshold (default: measured per detector family; README, Tracking defaults)")
    p.add_argument("--nms-iou", type=float, default=None,
                   help="detector NMS IoU (default: measured per detector family; README, Tracking defaults); "
                        "YOLOX keeps a first pass at 0.4 below it (two-pass NMS)")
    p.add_argument("--tracker-config", default=None, metavar="FILE.yaml",
                   help="override any key of the tracker's YAML (ultralytics' bytetrack.yaml/botsort.yaml keys, "
                        "and report_thresh, report_motion); a tracker_type key picks the tracker")
    p.add_argument("--threads", type=int, default=None if remembered else DEFAULT_THREADS,
                   help="CPU threads of each model (detector, re-ID) (default: 0, automatic: half the cores each, as "
                        "they run at the same time; one per core with --no-read-ahead)")
    p.add_argument("--embed-every", type=int, default=None if remembered else 4, metavar="N",
                   help="after a track's first 5 crops, embed one every N frames; 1 embeds every fit box of every "
                        "track (slower; more crops for cross-camera linking) (default: 4)")
    p.add_argument("--no-read-ahead", dest="read_ahead", action="store_false",
                   help="run the stages in turn on one thread instead of reading and detecting the next frames "
                        "while this step tracks and embeds (same results; for profiling one stage)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a pickled ultralytics .pt from a path as --detector: loading a pickle runs any code "
                        "it holds, so only for files you trust (the published yolo11n.pt is checked by sha256 "
                        "and needs no flag; ONNX and engines never do)")
    add_transit_argument(p)
    p.add_argument("--pooling", choices=POOLINGS, default=None if remembered else "mean",
                   help="tracklet feature from its frame embeddings: mean, max, or caa (class-aware attention; "
                        "needs a tracklink checkpoint with its classifier) (default: mean)")
    p.add_argument("--gallery-ttl", type=float, default=None, metavar="SECONDS",
                   help="live runs: a person not seen for this long leaves the online search index, so linking "
                        "stays fast over days; they stay in the store and come back when searched or seen again "
                        f"(default: {fallback}keep everyone; `tracklink batch` re-clusters every tracklet at its end)")


def add_store_argument(p: argparse.ArgumentParser, default: str = "OUT/tracklink.db") -> None:
    """--db: where a run's results live, a SQLite file or one PostgreSQL database that many runs and
    machines share (see README, Many cameras, many machines)."""
    p.add_argument("--db", default=None, metavar="URL_OR_PATH",
                   help="the store: a SQLite file, or postgresql://user@host:port/db to share one store among "
                        f"runs and machines (default: {default})")


def add_transit_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--transit", default=None, metavar="FILE.yaml",
                   help="camera-pair transit windows: a person last seen in camera A appears in camera B "
                        "between min_s and max_s seconds later (see README, Linking)")


def add_embedder_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of the commands that embed crops with one model (match, calibrate)."""
    p.add_argument("--model", required=True, help="re-ID model: tracklink checkpoint (.pt), ONNX or TensorRT engine")
    p.add_argument("--backend", choices=BACKENDS, help="override the file-type choice")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the best available)")
    p.add_argument("--batch-size", type=int, default=64, help="crops per embedder call")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


# ---------------------------------------------------------------------------------------------- models


@dataclass
class Models:
    """Everything a pipeline run needs that comes from files, loaded and checked up front."""

    detector: Any
    embedder: "Embedder"
    reid_path: Path
    link: "LinkConfig"
    pooling: str
    detector_spec: str = ""  # what --detector said, or the packaged default's
    detector_config: Any = None  # the DetectorConfig in force (score and NMS thresholds)

    @property
    def threshold(self) -> float:
        return self.link.threshold


def load_models(options: SessionOptions) -> Models:
    """Detector, embedder and link configuration, all before any video is opened.

    Both models are tried even when the first fails, so an offline machine hears about --detector and
    --reid in one message.
    """
    from tracklink.app.link import LinkConfig, load_transit, resolve_threshold

    if options.threads < 0:
        raise TracklinkError(f"--threads must be 0 (one per core) or more, got {options.threads}")
    if options.embed_every < 1:
        raise TracklinkError(f"--embed-every must be 1 or more (1: every frame), got {options.embed_every}")
    transit = load_transit(options.transit) if options.transit else {}
    LinkConfig(threshold=0.0, gallery_ttl=options.gallery_ttl)  # a bad --gallery-ttl fails before models load
    errors, detector, embedder, reid_path, spec, detector_config = [], None, None, None, "", None
    try:
        spec, detector_config, detector = _open_detector(options)
    except TracklinkError as exc:
        errors.append(str(exc))
    try:
        reid_path, embedder = _open_reid(options)
    except TracklinkError as exc:
        errors.append(str(exc))
    try:
        tracker_config(options, spec or None)
    except TracklinkError as exc:
        errors.append(str(exc))
    if errors:
        raise TracklinkError("\n  ".join(errors))
    embedder.embed_for(options.pooling)  # a pooling the model cannot do fails before any video opens
    threshold = resolve_threshold(reid_path, embedder.meta, options.link_threshold)
    link = LinkConfig(threshold=threshold, transit=transit, gallery_ttl=options.gallery_ttl)
    return Models(detector, embedder, reid_path, link, options.pooling, spec, detector_config)


def _open_detector(options: SessionOptions) -> tuple[str, Any, Any]:
    """(the detector's spec, its DetectorConfig, the detector): --detector, else the packaged YOLOX-nano."""
    from tracklink.app.detect import DetectorConfig, make_detector
    from tracklink.models.weights import default_detector

    spec = options.detector or default_detector()
    config = DetectorConfig.for_detector(spec)
    overrides = {k: v for k, v in (("conf", options.conf), ("iou", options.nms_iou)) if v is not None}
    for name, value in overrides.items():
        if not 0.0 <= value <= 1.0:
            raise TracklinkError(f"--{'conf' if name == 'conf' else 'nms-iou'} must be within 0..1, got {value}")
    config = replace(config, **overrides)
    return spec, config, make_detector(spec, config, options.device, model_threads(options),
                                       trust_pickle=options.trust_pickle)


def _open_reid(options: SessionOptions) -> tuple[Path, "Embedder"]:
    from tracklink.export.runtime import open_embedder, resolve_backend
    from tracklink.models.weights import resolve_reid

    reid_path = resolve_reid(options.reid)
    backend = resolve_backend(reid_path, options.backend)
    return reid_path, open_embedder(reid_path, backend=options.backend, device=options.device,
                                    **runtime_options(backend, model_threads(options)))


def model_threads(options: SessionOptions) -> int | None:
    """--threads, or with 0: half the cores each when the two models run at once (read-ahead), else the
    runtime's default (None: one per core)."""
    if options.threads:
        return options.threads
    return max(1, (os.cpu_count() or 2) // 2) if options.read_ahead else None


def runtime_options(backend: str, threads: int | None) -> dict:
    """The embedder's CPU threads in its backend's terms; ONNX Runtime's workers sleep instead of spinning."""
    if backend == "onnxruntime":
        return {"intra_op_threads": threads or None, "spinning": False}
    if backend == "torch":
        return {"threads": threads or None}
    return {}  # TensorRT runs on the GPU


# ---------------------------------------------------------------------------------------------- fingerprints


def _file_identity(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def source_identity(spec: "SourceSpec") -> dict:
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


def camera_fingerprints(options: SessionOptions, specs: Iterable["SourceSpec"], models: Models) -> dict[str, str]:
    """camera -> fingerprint of its footage and the settings that shape its rows (batch and viewer alike)."""
    from tracklink.utils.files import sha256_file

    detector_file = Path(str(options.detector or "").split(":", 1)[-1])
    settings = {"detector": options.detector, "detector_file": _file_identity(detector_file)
                if detector_file.is_file() else None, "conf": options.conf, "reid": sha256_file(models.reid_path),
                "backend": models.embedder.backend, "tracker": options.tracker, "link_threshold": models.threshold}
    for key in ("nms_iou", "tracker_config"):  # only when given, so earlier stores stay valid
        if getattr(options, key) is not None:
            settings[key] = getattr(options, key) if key == "nms_iou" else sha256_file(Path(options.tracker_config))
    if options.pooling != "mean":  # only then, so stores written before pooling was a choice stay valid
        settings["pooling"] = options.pooling
    # The thresholds in force, defaults included: a release that changes a default redoes the cameras it
    # would track differently instead of skipping them as done.
    settings["thresholds"] = {"detector": dataclasses.asdict(models.detector_config),
                              "tracker": dict(vars(tracker_config(options, models.detector_spec).args()))}
    return {s.name: fingerprint(settings, source_identity(s)) for s in specs}


# ---------------------------------------------------------------------------------------------- store


def open_gallery(store: "Store", link: "LinkConfig", restarting: Iterable[str]) -> tuple["OnlineLinker", list]:
    """The online gallery of a run on `store`, and the stored tracklets it brought back.

    The one resume policy of every front end: each stored tracklet of a camera that is not about to restart
    (its rows are replaced) and did not fail comes back under its stored global id, so new sightings join
    the people already stored, and new ids continue after the largest stored one. A stored tracklet that was
    never linked (it had not matured when its run stopped) stays out of the gallery, as it was out of it.
    With `link.gallery_ttl`, stored people not seen within it of the latest stored tracklet come back into
    the gallery but not into its search index.
    """
    from tracklink.app.link import OnlineLinker

    restarting = set(restarting)
    usable = {c.name for c in store.cameras() if c.name not in restarting and c.status != "error"}
    stored = [t for t in store.tracklets() if t.camera in usable]
    for t in stored:
        t.ended = True  # whatever was tracking them stopped with the run that stored them
    stored = [t for t in stored if t.global_id is not None]
    linker = OnlineLinker(link, id_source=store.allocate_global_ids)  # ids unique across the store's writers
    linker.restore(stored)
    return linker, stored


def build_pipeline(sources: Sequence["Source"], models: Models, options: SessionOptions, store: "Store | None",
                   linker: "OnlineLinker | None", fingerprints: dict[str, str]) -> "Pipeline":
    from tracklink.app.pipeline import Pipeline, PipelineConfig

    from tracklink.app.step_strategies import EmbedSchedule

    config = PipelineConfig(tracker=tracker_config(options, models.detector_spec), pooling=models.pooling,
                            embed=EmbedSchedule(every=options.embed_every), read_ahead=options.read_ahead)
    return Pipeline(sources, models.detector, models.embedder, config, store, linker, fingerprints)


def tracker_config(options: SessionOptions, detector_spec: str | None = None) -> "TrackerConfig":
    """--tracker, the detector family's measured defaults, and the keys of --tracker-config over them.

    `detector_spec`: the detector in use when it is not --detector's (the packaged default)."""
    from tracklink.app.track import TrackerConfig, detector_family, load_tracker_yaml

    overrides = load_tracker_yaml(options.tracker_config) if options.tracker_config else {}
    kind = overrides.pop("tracker_type", None) or options.tracker
    config = TrackerConfig(kind, overrides, family=detector_family(detector_spec or options.detector))
    config.args()  # unknown keys and trackers fail here, before any video opens
    return config


# ---------------------------------------------------------------------------------------------- crops


def crop_tracklets(embedder: "Embedder", groups: Sequence[tuple[str, Sequence[Path]]], pooling: str = "mean",
                   batch_size: int = 64, progress: bool = True) -> list["Tracklet"]:
    """One pipeline `Tracklet` per (camera, frame files) group: pooled feature, unknown (NaN) times.

    Crops of all groups share embedder calls of `batch_size`, as the pipeline batches across cameras, and
    are pooled by the pipeline's own rule. `track_id` is the group's 1-based position within its camera.
    """
    from tracklink.app.records import Tracklet
    from tracklink.data.embedding import embed_frames

    embed = embedder.embed_for(pooling)
    nan = float("nan")
    tracklets, position = [], {}
    for cam, frames in groups:
        position[cam] = position.get(cam, 0) + 1
        tracklets.append(Tracklet(cam, position[cam], 1, len(frames), nan, nan, ended=True, pooling=pooling))
    feats, owner, weights = embed_frames(embed, [paths for _, paths in groups], batch_size, progress)
    for i, t in enumerate(tracklets):
        mine = owner == i
        t.add_embeddings(feats[mine], None if weights is None else weights[mine])
        t.num_boxes = t.num_embeddings
    return tracklets


__all__ = ["BACKENDS", "DEFAULT_THREADS", "Models", "POOLINGS", "SessionOptions", "TRACKERS",
           "add_embedder_arguments", "add_session_arguments", "add_store_argument", "add_transit_argument",
           "build_pipeline", "camera_fingerprints", "crop_tracklets", "fingerprint", "load_models",
           "open_gallery", "runtime_options", "source_identity", "tracker_config"]
