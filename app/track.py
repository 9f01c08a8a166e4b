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
from typing import Any, Sequence

import numpy as np

from tracklink import TracklinkError
from tracklink.app.records import Detections, Frame, Track

TRACKERS = ("bytetrack", "botsort")


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


@dataclass
class TrackerConfig:
    """`kind` picks the ultralytics tracker; `options` override keys of its YAML (e.g. track_buffer=60).

    Everything not overridden is ultralytics' own default from its bytetrack.yaml / botsort.yaml, so the
    numbers stay theirs and documented there.
    """

    kind: str = "bytetrack"
    options: dict[str, Any] = field(default_factory=dict)

    def args(self) -> Any:
        from ultralytics.utils import YAML, IterableSimpleNamespace
        from ultralytics.utils.checks import check_yaml

        if self.kind not in TRACKERS:
            raise TracklinkError(f"unknown tracker {self.kind!r}; choose one of {', '.join(TRACKERS)}")
        cfg = dict(YAML.load(check_yaml(f"{self.kind}.yaml")))
        unknown = set(self.options) - set(cfg)
        if unknown:
            raise TracklinkError(f"unknown {self.kind} option(s) {sorted(unknown)}; known: {sorted(cfg)}")
        cfg.update(self.options)
        # BOTSORT would build its own re-ID encoder from these; we attach ours after construction.
        cfg["with_reid"], cfg["model"] = False, "tracklink"
        return IterableSimpleNamespace(**cfg)


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
        if self.config.kind == "botsort":
            self._tracker = BOTSORT(args)
            self.features = FrameFeatures()
            self._tracker.encoder = self.features
            args.with_reid = True
        else:
            self._tracker = BYTETracker(args)
        BaseTrack._count = max(BaseTrack._count, count)
        self._alive: set[int] = set()

    @property
    def uses_appearance(self) -> bool:
        """True when embeddings must exist before `update` (BOTSORT matches on them)."""
        return self.features is not None

    def update(self, frame: Frame, detections: Detections,
               embeddings: Sequence[np.ndarray | None] | None = None) -> TrackStep:
        """Advance one frame; `embeddings[i]` belongs to detection i (None: unfit, no appearance)."""
        boxes = _Boxes(detections)
        if self.features is not None:
            self.features.set(boxes.xywh, embeddings if embeddings is not None else [None] * len(boxes))
        out = self._tracker.update(boxes, frame.image)
        tracks, index = [], np.zeros(len(out), np.int64)
        for k, row in enumerate(out):
            i = int(row[7])
            index[k] = i
            emb = embeddings[i] if embeddings is not None else None
            tracks.append(Track(frame.camera, frame.index, frame.timestamp, int(row[4]), row[:4].astype(np.float32),
                                float(row[5]), emb))
        alive = {t.track_id for t in self._tracker.tracked_stracks if t.is_activated}
        alive |= {t.track_id for t in self._tracker.lost_stracks}
        ended = sorted(self._alive - alive)
        self._alive = alive
        return TrackStep(tracks, index, ended)

    def finish(self) -> list[int]:
        """End of the stream: every track still alive is complete."""
        ended, self._alive = sorted(self._alive), set()
        return ended


__all__ = ["AppearanceConfig", "CameraTracker", "FrameFeatures", "TRACKERS", "TrackStep", "TrackerConfig",
           "appearance_mask", "crop"]
