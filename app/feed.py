"""The head of the pipeline: read one frame from every camera and detect people in them, one step ahead.

A step's later stages (tracking, embedding, linking, storing) do not need the next frames, and detection
does not need this step's tracks. So while the pipeline tracks and embeds step n on the calling thread,
`FrameFeed` reads and detects step n+1 on one worker thread. Both halves spend most of their time in ONNX
Runtime, OpenCV or NumPy, which release the GIL, so on two or more cores they run at the same time: the
step costs about the larger half instead of the sum. Results are the same as reading in turn: the same
frames, in the same order, through the same detector.

The feed only reads and detects. What a read means (a frame, a camera that ended, an error) is decided on
the pipeline's thread, which owns the cameras, the trackers and the store.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from tracklink import TracklinkError
from tracklink.app.records import Detections, Frame
from tracklink.app.sources import Source

DetectFn = Callable[[Sequence[np.ndarray]], list[Detections]]


@dataclass
class Read:
    """What one camera gave for a step: a frame, or none (finished, or a live camera with nothing yet)."""

    camera: str
    frame: Frame | None
    error: str | None = None  # the source raised: the camera ends with this error
    finished: bool = False  # no frame, and the source says it will give no more


@dataclass
class Grab:
    """One step's reads and the detections of the frames among them (same order)."""

    reads: list[Read]
    detections: list[Detections]
    decode_s: float
    detect_s: float


def grab(sources: Sequence[Source], detect: DetectFn) -> Grab:
    """Read a frame from each source (never waiting on a live one) and detect people in those read."""
    t0 = time.perf_counter()
    reads = []
    for source in sources:
        try:
            frame = source.read(timeout=0.0)
        except TracklinkError as exc:
            reads.append(Read(source.name, None, error=str(exc), finished=True))
            continue
        reads.append(Read(source.name, frame, finished=frame is None and source.status.finished))
    decode_s = time.perf_counter() - t0
    images = [r.frame.image for r in reads if r.frame is not None]
    t0 = time.perf_counter()
    detections = detect(images) if images else []
    return Grab(reads, detections, decode_s, time.perf_counter() - t0)


class FrameFeed:
    """Grabs on demand, or (`ahead`) starts the next step's grab on a worker thread as soon as asked."""

    def __init__(self, detect: DetectFn, ahead: bool) -> None:
        self.detect = detect
        self.ahead = ahead
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracklink-feed") if ahead else None
        self._next: Future[Grab] | None = None

    def take(self, sources: Sequence[Source]) -> Grab:
        """This step's grab: the one read ahead (its errors re-raised here) or, with none, one read now."""
        if self._next is not None:
            future, self._next = self._next, None
            return future.result()
        return grab(sources, self.detect)

    def read_ahead(self, sources: Sequence[Source]) -> None:
        """Start grabbing the next step from `sources` (no-op unless `ahead`, or one is already under way)."""
        if self._pool is not None and self._next is None and sources:
            self._next = self._pool.submit(grab, list(sources), self.detect)

    def wait(self) -> None:
        """Let a grab under way finish (before sources are added, closed or removed); `take` still gets it."""
        if self._next is not None:
            self._next.exception()

    def close(self) -> None:
        self.wait()
        self._next = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


__all__ = ["FrameFeed", "Grab", "Read", "grab"]
