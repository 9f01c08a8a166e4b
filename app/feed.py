"""The head of the pipeline: read one frame from every camera and detect people in them, two steps ahead.

A step's later stages (tracking, embedding, linking, storing) do not need the next frames, and detection
does not need this step's tracks. So while the pipeline tracks and embeds step n on the calling thread,
`FrameFeed` reads and detects steps n+1 and n+2 on one worker thread. Both halves spend most of their time
in ONNX Runtime, OpenCV or NumPy, which release the GIL, so on two or more cores they run at the same time:
a run costs about the larger half instead of the sum. Two steps rather than one, because the halves vary
from step to step (a crowded frame embeds eight crops, the next one none): with one step in hand, each step
costs the larger of its two halves and the shorter one waits; with two, the worker works through a long
step of the pipeline's and the pipeline through a long detection. MOT17-04 at 480x360, one camera, BoT-SORT
with re-ID: the pipeline waited 1.3 ms a frame for detections with one step in hand and 0.2 ms with two;
`bench/pipeline_speed.py --per-sequence --tracker botsort`: 80.9 -> 91.3 fps, 0.84 -> 0.94x ultralytics'
ByteTrack on the same detector. The price is one more step of frames held in memory (6 MB a 1080p
camera) and, for a live camera, one step more between reading a frame and showing its tracks. A camera that
ends or fails while the next step is already queued is not read again by it. Results are the same as
reading in turn: the same frames, in the same order, through the same detector.

The feed only reads and detects. What a read means (a frame, a camera that ended, an error) is decided on
the pipeline's thread, which owns the cameras, the trackers and the store.
"""

from __future__ import annotations

import time
from collections import deque
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
        if source.status.finished:  # it ended or failed at an earlier step's read (one still queued): leave it
            reads.append(Read(source.name, None, finished=True))
            continue
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
    """Grabs on demand, or (`ahead`) keeps the next `depth` steps' grabs under way on a worker thread."""

    def __init__(self, detect: DetectFn, ahead: bool, depth: int = 2) -> None:
        self.detect = detect
        self.ahead = ahead
        self.depth = max(1, depth)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracklink-feed") if ahead else None
        self._pending: deque[Future[Grab]] = deque()  # in step order: one worker runs them one after another

    def take(self, sources: Sequence[Source]) -> Grab:
        """This step's grab: the oldest one read ahead (its errors re-raised here) or, with none, one read now."""
        if self._pending:
            return self._pending.popleft().result()
        return grab(sources, self.detect)

    def read_ahead(self, sources: Sequence[Source]) -> None:
        """Keep `depth` grabs of `sources` under way (no-op unless `ahead`)."""
        while self._pool is not None and sources and len(self._pending) < self.depth:
            self._pending.append(self._pool.submit(grab, list(sources), self.detect))

    def wait(self) -> None:
        """Let the grabs under way finish (before sources are added, closed or removed); `take` still gets them."""
        for future in self._pending:
            future.exception()

    def close(self) -> None:
        self.wait()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


__all__ = ["FrameFeed", "Grab", "Read", "grab"]
