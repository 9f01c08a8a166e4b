"""Per-camera tracking with ultralytics' BYTETracker or BOTSORT, fed our detections and our embeddings.

We reuse the trackers rather than write one: they take any object with conf/cls/xywh/xyxy. BOTSORT's
appearance cue normally runs its own re-ID model per camera; we hand it instead the embeddings that the
pipeline computed for all cameras in one batched call (`FrameFeatures`), so a step costs one embedder run
however many cameras there are.

Crops unfit for appearance (too small, cut by the frame edge, or mostly covered by another person) get no
embedding: they would pull a tracklet's mean towards the background or the other person.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tracklink import TracklinkError
from tracklink.app.camera_motion import NAME as BACKGROUND_FLOW, BackgroundFlow
from tracklink.app.records import Detections, Frame, Track
from tracklink.app.report_gate import ReportGate

TRACKERS = ("bytetrack", "botsort")
# BOTSORT consults appearance for boxes overlapping by IoU >= proximity_thresh (0.5); a detection is embedded
# before matching when it overlaps two predicted track boxes at this lower IoU (`CameraTracker.ambiguous`).
AMBIGUITY_IOU = 0.3
# BoT-SORT's camera-motion estimators: ours (app/camera_motion.py) and ultralytics' (its gmc.py).
GMC_METHODS = (BACKGROUND_FLOW, "sparseOptFlow", "orb", "sift", "ecc", "none", None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod((rb - lt).clip(0), axis=2)
    area_a = np.prod((a[:, 2:] - a[:, :2]).clip(0), axis=1)
    area_b = np.prod((b[:, 2:] - b[:, :2]).clip(0), axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass(frozen=True)
class AppearanceConfig:
    """Which detections are worth an embedding."""

    min_height: int = 48  # px; OSNet sees 256x128, a smaller person is mostly upsampling blur
    min_width: int = 16  # px
    edge_margin: int = 2  # px; a box this close to the border is cut by it (a partial body)
    max_overlap: float = 0.5  # largest fraction of the box that another box may cover
    occluder_conf: float = 0.25  # only boxes this confident count as occluders (not NMS leftovers)


def appearance_mask(detections: Detections, frame_shape: tuple[int, ...],
                    config: AppearanceConfig = AppearanceConfig()) -> np.ndarray:
    """(N,) bool: which boxes give a clean crop of one whole person."""
    xyxy = detections.xyxy
    if len(xyxy) == 0:
        return np.zeros(0, bool)
    h, w = frame_shape[:2]
    bw, bh = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    m = config.edge_margin
    ok = (bh >= config.min_height) & (bw >= config.min_width)
    ok &= (xyxy[:, 0] > m) & (xyxy[:, 1] > m) & (xyxy[:, 2] < w - m) & (xyxy[:, 3] < h - m)
    occluders = detections.confidence >= config.occluder_conf
    if len(xyxy) > 1 and occluders.any():
        # inter[i, j] / area[i]: how much of box i box j covers (one pass, N is tens of boxes).
        lt = np.maximum(xyxy[:, None, :2], xyxy[None, occluders, :2])
        rb = np.minimum(xyxy[:, None, 2:], xyxy[None, occluders, 2:])
        inter = np.prod((rb - lt).clip(0), axis=2)
        cover = inter / np.maximum(bw * bh, 1e-6)[:, None]
        cover[np.flatnonzero(occluders), np.arange(occluders.sum())] = 0  # a box does not occlude itself
        ok &= cover.max(axis=1) <= config.max_overlap
    return ok


def crop(image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    """The box's pixels, clipped to the image (a view, no copy)."""
    h, w = image.shape[:2]
    x1, y1 = max(int(xyxy[0]), 0), max(int(xyxy[1]), 0)
    x2, y2 = min(int(np.ceil(xyxy[2])), w), min(int(np.ceil(xyxy[3])), h)
    return image[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)]


# tracklink's own keys beside ultralytics' YAML keys (see app/report_gate.py). report_thresh None: no gate,
# every track the tracker confirms is reported.
GATE_KEYS: dict[str, Any] = {"report_thresh": None, "report_motion": 0.5}

# Per detector family, the keys that differ from ultralytics' YAML, chosen by bench/tracking.py (README,
# "Tracking defaults", has the table and the commands). YOLOX-nano (rectangular input, app/detect.py) with
# BoT-SORT and our OSNet embeddings, coordinate descent on MOT17-02/04/05/09, TUD-Campus and a semi-synthetic
# scene, scored against ultralytics' ByteTrack and BoT-SORT with ByteTrack's published thresholds on the same
# detections (objective: worst plus mean margin over the better peer's MOTA and IDF1; chosen values: +0.0145):
# - gmc_method backgroundFlow (app/camera_motion.py; none: -0.020, ultralytics' sparseOptFlow: -0.615, as
#   it takes walking people on plain backgrounds for camera motion).
# - new_track_thresh 0.6 (ultralytics: 0.25): 0.25 gave -0.195, 0.35-0.55 -0.152 to -0.079, 0.65 -0.073.
#   At 0.25 a sign post that YOLOX scores about 0.5 became a track for a whole video.
# - track_high_thresh 0.25 (0.35: 0.0139, 0.45: 0.0125, 0.55: 0.0106): BoT-SORT's first association takes
#   the boxes down to 0.25, where the appearance cue settles contested matches; track_low_thresh 0.1
#   (0.05-0.2 the same: the detector's score threshold is 0.3); match_thresh 0.85 (0.7: -0.158, 0.8: -0.040,
#   0.9: -0.034); track_buffer 60 (30: 0.0138).
# - report_thresh 0.6 (app/report_gate.py; off or 0.5: 0.0122, 0.7: -0.164), report_motion 0.5 (0.25 and 1.0
#   the same): it keeps static false positives out, and a held track's boxes are written once it is
#   reported (`UnreportedHistory`).
# ultralytics' YOLO keeps ultralytics' own values: no ultralytics weights were at hand offline to measure,
# and its scores are the ones those values were tuned on.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "ultralytics": {},
    "yolox": {"track_high_thresh": 0.25, "track_low_thresh": 0.1, "new_track_thresh": 0.6, "match_thresh": 0.85,
              "track_buffer": 60, "gmc_method": BACKGROUND_FLOW, "report_thresh": 0.6, "report_motion": 0.5},
}


def detector_family(spec: str | None) -> str:
    """"yolox" for a `yolox:PATH` detector and for the default (the packaged YOLOX-nano), else "ultralytics"."""
    return "yolox" if not spec or spec.lower().startswith("yolox:") else "ultralytics"


@dataclass
class TrackerConfig:
    """`kind` picks the ultralytics tracker; `options` override keys of its YAML (e.g. track_buffer=60).

    Values come, in order of precedence, from `options` (a --tracker-config file), the detector family's
    measured defaults (`FAMILY_DEFAULTS`), and ultralytics' own bytetrack.yaml / botsort.yaml, so anything
    not measured here stays theirs and documented there.
    """

    kind: str = "bytetrack"
    options: dict[str, Any] = field(default_factory=dict)
    family: str = "ultralytics"

    def args(self) -> Any:
        from ultralytics.utils import IterableSimpleNamespace

        if self.family not in FAMILY_DEFAULTS:
            raise TracklinkError(f"unknown detector family {self.family!r}; one of {', '.join(FAMILY_DEFAULTS)}")
        cfg = {**ultralytics_tracker_yaml(self.kind), **GATE_KEYS}
        unknown = set(self.options) - set(cfg)
        if unknown:
            raise TracklinkError(f"unknown {self.kind} option(s) {sorted(unknown)}; known: {sorted(cfg)}")
        cfg.update({k: v for k, v in FAMILY_DEFAULTS[self.family].items() if k in cfg})  # gmc: BoT-SORT's
        cfg.update(self.options)
        if "gmc_method" in cfg and cfg["gmc_method"] not in GMC_METHODS:
            raise TracklinkError(f"unknown gmc_method {cfg['gmc_method']!r}; choose one of "
                                 f"{', '.join(m for m in GMC_METHODS if m)}")
        # BOTSORT would build its own re-ID encoder from these; we attach ours after construction.
        cfg["with_reid"], cfg["model"] = False, "tracklink"
        return IterableSimpleNamespace(**cfg)


def ultralytics_tracker_yaml(kind: str) -> dict[str, Any]:
    """ultralytics' own bytetrack.yaml or botsort.yaml, as a dict."""
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    if kind not in TRACKERS:
        raise TracklinkError(f"unknown tracker {kind!r}; choose one of {', '.join(TRACKERS)}")
    return dict(YAML.load(check_yaml(f"{kind}.yaml")))


def load_tracker_yaml(path: str | Path) -> dict[str, Any]:
    """A --tracker-config file: a mapping of tracker keys (checked against the tracker's YAML later)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise TracklinkError(f"--tracker-config {path} not found; pass a YAML file of tracker keys")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TracklinkError(f"--tracker-config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise TracklinkError(f"--tracker-config {path} must be a mapping of keys (e.g. track_buffer: 60), "
                             f"not a {type(data).__name__}")
    return data


class _Boxes:
    """The duck type ultralytics' trackers read (conf, cls, xywh, xyxy, boolean indexing), over Detections."""

    def __init__(self, det: Detections):
        self.xyxy = det.xyxy.astype(np.float32)
        self.xywh = det.xywh.astype(np.float32)
        self.conf = det.confidence.astype(np.float32)
        self.cls = det.class_id.astype(np.float32)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index) -> "_Boxes":
        out = object.__new__(_Boxes)
        out.xyxy, out.xywh, out.conf, out.cls = self.xyxy[index], self.xywh[index], self.conf[index], self.cls[index]
        return out


class FrameFeatures:
    """BOTSORT's encoder hook, answered from embeddings computed beforehand for this frame's detections.

    BOTSORT calls `encoder(img, boxes)` with a subset of the frame's boxes (high- or low-score); rows are
    matched back to our detections by their exact xywh, which come from the same float32 array.
    """

    def __init__(self) -> None:
        self.xywh = np.zeros((0, 4), np.float32)
        self.features: Sequence[np.ndarray | None] = []

    def set(self, xywh: np.ndarray, features: Sequence[np.ndarray | None]) -> None:
        self.xywh, self.features = xywh, features

    def __call__(self, img: Any, boxes: np.ndarray) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        for row in np.asarray(boxes)[:, :4]:
            hit = np.flatnonzero((self.xywh == row).all(axis=1))
            out.append(self.features[hit[0]] if len(hit) else None)
        return out


@dataclass
class TrackStep:
    """One camera's tracking result for one frame."""

    tracks: list[Track]
    detection_index: np.ndarray  # (len(tracks),) index into the frame's Detections
    ended: list[int]  # track ids that the tracker dropped in this step (their tracklets are complete)
    # Earlier boxes of the tracks first reported at this step (see `UnreportedHistory`), oldest first.
    backfill: list[Track] = field(default_factory=list)


class UnreportedHistory:
    """The boxes a track had before it was reported, given back when it is.

    A track is not reported at its first frame: ultralytics confirms a new track (after the video's first
    frame) only when a second frame matches it, and the report gate (app/report_gate.py) holds a track until
    it proves to be a person. Those first boxes are the person's all the same. An online display cannot go
    back, but the store and everything written from it (MOT files, videos, tracklet spans) can, so each
    held box is kept per track and released with the track's first reported box. A track that dies
    unreported takes its boxes with it.
    """

    def __init__(self) -> None:
        self._held: dict[int, list[Track]] = {}

    def hold(self, track: Track) -> None:
        self._held.setdefault(track.track_id, []).append(track)

    def release(self, track_ids: Sequence[int]) -> list[Track]:
        return [t for tid in track_ids for t in self._held.pop(tid, [])]

    def keep_only(self, track_ids: set[int]) -> None:
        for tid in [t for t in self._held if t not in track_ids]:
            del self._held[tid]


class CameraTracker:
    """One ultralytics tracker for one camera; ids are per camera and never reused."""

    def __init__(self, camera: str, config: TrackerConfig | None = None):
        from ultralytics.trackers import BOTSORT, BYTETracker

        self.camera = camera
        self.config = config or TrackerConfig()
        args = self.config.args()
        self.features: FrameFeatures | None = None
        # BOTSORT uses appearance only in its first association, over high-score boxes: embed no others.
        self.appearance_min_conf = float(args.track_high_thresh)
        # Older ultralytics releases number tracks with one process-wide counter that every new tracker
        # resets: a camera added while others run would hand out their ids again. Keep it going (newer
        # releases count per tracker and leave it alone).
        from ultralytics.trackers.basetrack import BaseTrack

        count = BaseTrack._count
        self.motion: BackgroundFlow | None = None
        if self.config.kind == "botsort":
            own_motion = args.gmc_method == BACKGROUND_FLOW
            if own_motion:
                args.gmc_method = "none"  # ultralytics does not know it; ours replaces its estimator below
            self._tracker = BOTSORT(args)
            if own_motion:
                self.motion = self._tracker.gmc = BackgroundFlow()
                args.gmc_method = BACKGROUND_FLOW
            self.features = FrameFeatures()
            self._tracker.encoder = self.features
            args.with_reid = True
        else:
            self._tracker = BYTETracker(args)
        BaseTrack._count = max(BaseTrack._count, count)
        self._alive: set[int] = set()
        self._history = UnreportedHistory()
        self.gate = (ReportGate(args.report_thresh, args.report_motion) if args.report_thresh is not None
                     else None)

    @property
    def uses_appearance(self) -> bool:
        """True when embeddings must exist before `update` (BOTSORT matches on them)."""
        return self.features is not None

    def ambiguous(self, detections: Detections, min_iou: float = AMBIGUITY_IOU) -> np.ndarray:
        """(N,) bool: the detections whose match BOTSORT's appearance cue could decide.

        BOTSORT lowers a track-detection cost by appearance only where their boxes overlap by at least
        proximity_thresh (IoU 0.5); such a pair already costs less than match_thresh by IoU alone. So
        appearance changes the assignment only where it is contested: a detection that overlaps two
        tracks, or one of two detections that overlap the same track. Elsewhere its embedding would
        be computed and ignored. Overlaps are measured against each track's box one constant-velocity
        step ahead, with a margin (`min_iou` below proximity_thresh) for what the Kalman filter and
        the camera-motion estimate add.
        """
        pool = [*self._tracker.tracked_stracks, *self._tracker.lost_stracks]
        if not pool or not len(detections):
            return np.zeros(len(detections), bool)
        state = np.array([t.mean[:4] + t.mean[4:8] for t in pool], np.float32)  # BOTrack: cx, cy, w, h
        predicted = np.concatenate([state[:, :2] - state[:, 2:] / 2, state[:, :2] + state[:, 2:] / 2], axis=1)
        near = box_iou(predicted, detections.xyxy) >= min_iou  # (tracks, detections)
        contested_tracks = near.sum(axis=1) >= 2
        return (near.sum(axis=0) >= 2) | near[contested_tracks].any(axis=0)

    def remember_appearance(self, track_id: int, embedding: np.ndarray) -> None:
        """Give BOTSORT's track an embedding computed after matching (for its later contested matches)."""
        for t in self._tracker.tracked_stracks:
            if t.track_id == track_id:
                t.update_features(np.asarray(embedding, np.float32))
                return

    def update(self, frame: Frame, detections: Detections,
               embeddings: Sequence[np.ndarray | None] | None = None) -> TrackStep:
        """Advance one frame; `embeddings[i]` belongs to detection i (None: unfit, no appearance)."""
        boxes = _Boxes(detections)
        if self.motion is not None:
            self.motion.boxes = boxes.xyxy  # corners are taken away from every box, not only confident ones
        if self.features is not None:
            self.features.set(boxes.xywh, embeddings if embeddings is not None else [None] * len(boxes))
        out = self._tracker.update(boxes, frame.image)
        admitted = [self.gate is None or self.gate.admit(int(r[4]), r[:4], float(r[5])) for r in out]

        def track(track_id: int, xyxy: np.ndarray, score: float, i: int) -> Track:
            emb = embeddings[i] if embeddings is not None else None
            return Track(frame.camera, frame.index, frame.timestamp, track_id, np.asarray(xyxy, np.float32)[:4],
                         float(score), emb)

        kept = [r for r, ok in zip(out, admitted) if ok]
        tracks = [track(int(r[4]), r[:4], r[5], int(r[7])) for r in kept]
        index = np.array([int(r[7]) for r in kept], np.int64)
        backfill = self._history.release([t.track_id for t in tracks])
        for r in (r for r, ok in zip(out, admitted) if not ok):
            self._history.hold(track(int(r[4]), r[:4], r[5], int(r[7])))
        unconfirmed = [t for t in self._tracker.tracked_stracks if not t.is_activated]
        for t in unconfirmed:
            if t.start_frame == self._tracker.frame_id:  # born now; confirmed (or dropped) at the next frame
                self._history.hold(track(t.track_id, t.xyxy, t.score, int(t.idx)))
        alive = {t.track_id for t in self._tracker.tracked_stracks if t.is_activated}
        alive |= {t.track_id for t in self._tracker.lost_stracks}
        ended = sorted(self._alive - alive)
        self._alive = alive
        self._history.keep_only(alive | {t.track_id for t in unconfirmed})
        if self.gate is not None:
            self.gate.forget(ended)
        return TrackStep(tracks, index, ended, backfill)

    def finish(self) -> list[int]:
        """End of the stream: every track still alive is complete."""
        ended, self._alive = sorted(self._alive), set()
        if self.gate is not None:
            self.gate.forget(ended)
        return ended


__all__ = ["AMBIGUITY_IOU", "AppearanceConfig", "CameraTracker", "box_iou", "FAMILY_DEFAULTS", "FrameFeatures", "GATE_KEYS", "TRACKERS",
           "TrackStep", "TrackerConfig", "UnreportedHistory", "appearance_mask", "crop", "detector_family", "load_tracker_yaml", "ultralytics_tracker_yaml"]
