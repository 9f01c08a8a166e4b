"""The records that flow through the pipeline, one small typed dataclass per stage.

source -> Frame; detect -> Detections; track -> Track (one box of one tracked person in one frame);
pool -> Tracklet (a per-camera track over time, with its pooled appearance); link -> Identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tracklink.models.pooling import accumulate, direction


@dataclass
class Frame:
    camera: str
    index: int  # 1-based frame number, as in MOTChallenge files
    timestamp: float  # seconds: file time from fps for recordings, wall clock for live sources
    image: np.ndarray  # BGR uint8 (H, W, 3)


@dataclass
class Detections:
    """Boxes of one frame, as parallel arrays (supervision's layout)."""

    xyxy: np.ndarray  # (N, 4) float32, pixels
    confidence: np.ndarray  # (N,) float32
    class_id: np.ndarray  # (N,) int64

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index) -> "Detections":
        return Detections(self.xyxy[index], self.confidence[index], self.class_id[index])

    @property
    def xywh(self) -> np.ndarray:
        """Centre x, centre y, width, height: what ultralytics' trackers read."""
        xy = (self.xyxy[:, :2] + self.xyxy[:, 2:]) / 2
        wh = self.xyxy[:, 2:] - self.xyxy[:, :2]
        return np.concatenate([xy, wh], axis=1)


@dataclass
class Track:
    """One tracked person in one frame of one camera."""

    camera: str
    frame: int
    timestamp: float
    track_id: int  # per-camera id from the tracker
    xyxy: np.ndarray  # (4,)
    confidence: float
    embedding: np.ndarray | None = None  # L2-normalised; None when the crop was unfit for appearance
    attention: float = 1.0  # the crop's weight in CAA pooling (class-aware attention); 1 otherwise


@dataclass
class Tracklet:
    """A per-camera track over time and its pooled appearance.

    `feature_sum` accumulates the normalised frame embeddings by the tracklet's `pooling` rule (a sum for
    mean and caa, an element-wise maximum for max; see `tracklink.models.pooling`), and `feature` is its
    direction. This is the one tracklet record of the pipeline, the store, `match` and `calibrate`.

    >>> t = Tracklet.start(Track("lobby", 1, 0.0, 7, np.zeros(4), 0.9, np.array([1.0, 0.0], np.float32)))
    >>> t.key, t.feature.tolist(), t.num_embeddings
    ('lobby/7', [1.0, 0.0], 1)
    """

    camera: str
    track_id: int
    first_frame: int
    last_frame: int
    start_time: float
    end_time: float
    feature_sum: np.ndarray | None = None
    num_embeddings: int = 0
    num_boxes: int = 0
    global_id: int | None = None
    ended: bool = False
    pooling: str = "mean"

    @property
    def key(self) -> str:
        return f"{self.camera}/{self.track_id}"

    @property
    def feature(self) -> np.ndarray | None:
        if self.num_embeddings == 0:
            return None
        return direction(self.feature_sum)

    def overlaps(self, other: "Tracklet") -> bool:
        """Same camera and overlapping in time: then they can never be the same person."""
        return (self.camera == other.camera and self.start_time <= other.end_time
                and other.start_time <= self.end_time)

    def add(self, track: Track) -> None:
        self.first_frame, self.last_frame = min(self.first_frame, track.frame), max(self.last_frame, track.frame)
        self.start_time, self.end_time = min(self.start_time, track.timestamp), max(self.end_time, track.timestamp)
        self.num_boxes += 1
        if track.embedding is not None:
            self.add_embeddings(track.embedding[None], np.array([track.attention], np.float32))

    def add_embeddings(self, frames: np.ndarray, attention: np.ndarray | None = None) -> None:
        """Pool L2-normalised frame embeddings (N, D) into the feature (`attention` (N,) for caa pooling)."""
        self.feature_sum = accumulate(self.feature_sum, frames, self.pooling, attention)
        self.num_embeddings += len(frames)

    @classmethod
    def start(cls, track: Track, pooling: str = "mean") -> "Tracklet":
        tracklet = cls(track.camera, track.track_id, track.frame, track.frame, track.timestamp, track.timestamp,
                       pooling=pooling)
        tracklet.add(track)
        return tracklet


@dataclass
class Identity:
    """A global person: the tracklets linked to it across cameras."""

    global_id: int
    members: list[Tracklet] = field(default_factory=list)

    @property
    def cameras(self) -> list[str]:
        return sorted({t.camera for t in self.members})

    @property
    def first_seen(self) -> float:
        return min(t.start_time for t in self.members)

    @property
    def last_seen(self) -> float:
        return max(t.end_time for t in self.members)

    @property
    def feature(self) -> np.ndarray | None:
        feats = [t.feature for t in self.members if t.feature is not None]
        if not feats:
            return None
        total = np.sum(feats, axis=0)
        return total / max(float(np.linalg.norm(total)), 1e-12)
