"""The pipeline every front end shares: source -> detect -> track -> embed -> pool -> link -> store.

`Pipeline` steps all cameras together: each step takes one frame from every active camera, detects, tracks
each camera, embeds the crops of *all* cameras in one batched embedder call, pools frame embeddings into
tracklets, links tracklets to global identities when they mature and when they end, writes to the store, and
yields a `StepResult` (frames, tracks, global ids, per-stage seconds) to the front end: the batch writer or
the viewer. Front ends differ only in what they do with the results.

A camera that fails (a file that cannot be decoded) is reported and dropped; the others go on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from tracklink import TracklinkError
from tracklink.app.feed import FrameFeed, Grab
from tracklink.app.records import Detections, Frame, Track, Tracklet
from tracklink.app.sources import Source
from tracklink.app.store import CameraRecord, Store
from tracklink.app.step_strategies import CropJobs, EmbedSchedule, strategy_for
from tracklink.app.track import AppearanceConfig, CameraTracker, TrackerConfig, appearance_mask, crop

log = logging.getLogger(__name__)

STAGES = ("decode", "detect", "track", "embed", "link", "store")


class Embedder(Protocol):
    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray: ...


class Linker(Protocol):
    def mature(self, tracklet: Tracklet) -> bool: ...

    def link_many(self, tracklets: Sequence[Tracklet]) -> list[int]: ...

    def forget(self, camera: str) -> None: ...

    @property
    def identities(self) -> list: ...


@dataclass
class PipelineConfig:
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    embed: EmbedSchedule = field(default_factory=EmbedSchedule)
    pooling: str = "mean"  # tracklet features from frame embeddings (tracklink.models.pooling)
    # With only live cameras and no frame ready, wait this long before looking again (no busy loop).
    idle_wait_s: float = 0.01
    # Read and detect the next two steps' frames while this step tracks and embeds (app/feed.py); off, the
    # stages run in turn on the calling thread. Results are the same either way.
    read_ahead: bool = True


@dataclass
class CameraResult:
    """One camera's share of a step."""

    frame: Frame
    detections: Detections
    tracks: list[Track]
    global_ids: dict[int, int | None]  # track id -> global id (None until its tracklet is linked)
    ended: list[Tracklet]  # tracklets that ended at this step
    backfill: list[Track] = field(default_factory=list)  # earlier boxes of tracks first reported now


@dataclass
class StepResult:
    index: int
    cameras: list[CameraResult]
    seconds: dict[str, float]  # per stage, for this step (all cameras together)
    finished: dict[str, str] = field(default_factory=dict)  # camera -> "done" | "error: reason", at this step
    ended: list[Tracklet] = field(default_factory=list)  # every tracklet that ended (and was linked) at this step


@dataclass
class StageStats:
    """Per-stage fps: camera-frames processed / seconds spent in the stage."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    frames: int = 0
    wall_s: float = 0.0

    def add(self, step: StepResult) -> None:
        for k, v in step.seconds.items():
            self.seconds[k] += v
        self.frames += len(step.cameras)

    def fps(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {k: (self.frames / s if s > 0 else None) for k, s in self.seconds.items()}
        busy = sum(self.seconds.values())
        out["pipeline"] = self.frames / busy if busy > 0 else None
        out["overall"] = self.frames / self.wall_s if self.wall_s > 0 else None
        return out


class TrackletPool:
    """Live tracklets of one camera, built from its tracks; a tracklet leaves when its track ends."""

    def __init__(self, camera: str, pooling: str = "mean"):
        self.camera = camera
        self.pooling = pooling
        self.live: dict[int, Tracklet] = {}
        self.frames = 0
        self._embedded_at: dict[int, int] = {}  # track id -> this camera's frame count at its last embedding

    def due(self, track_id: int, schedule: EmbedSchedule) -> bool:
        """Whether the track's crop in the current frame should be embedded (see `EmbedSchedule`)."""
        tracklet = self.live.get(track_id)
        if tracklet is None or tracklet.num_embeddings < schedule.warmup:
            return True
        return self.frames - self._embedded_at.get(track_id, -schedule.every) >= schedule.every

    def update(self, tracks: Sequence[Track]) -> list[Tracklet]:
        """Add this frame's tracks; returns the tracklets they touched."""
        touched = []
        for track in tracks:
            tracklet = self.live.get(track.track_id)
            if tracklet is None:
                tracklet = self.live[track.track_id] = Tracklet.start(track, self.pooling)
            else:
                tracklet.add(track)
            if track.embedding is not None:
                self._embedded_at[track.track_id] = self.frames
            touched.append(tracklet)
        return touched

    def end(self, track_ids: Sequence[int]) -> list[Tracklet]:
        ended = []
        for tid in track_ids:
            tracklet = self.live.pop(tid, None)
            self._embedded_at.pop(tid, None)
            if tracklet is not None:  # tracks the tracker never confirmed have no tracklet
                tracklet.ended = True
                ended.append(tracklet)
        return ended


@dataclass
class _Camera:
    source: Source
    tracker: CameraTracker
    pool: TrackletPool
    linked: set[int] = field(default_factory=set)  # track ids linked at maturity


class Pipeline:
    """N sources through one detector, one embedder, one linker and one store."""

    def __init__(self, sources: Sequence[Source], detector: Callable[[Sequence[np.ndarray]], list[Detections]],
                 embedder: Embedder | None, config: PipelineConfig | None = None, store: Store | None = None,
                 linker: Linker | None = None, fingerprints: Mapping[str, str] | None = None):
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise TracklinkError(f"camera names must be unique, got {names}")
        self.sources = list(sources)
        self.detector, self.embedder = detector, embedder
        self.config = config or PipelineConfig()
        self.store, self.linker = store, linker
        self.fingerprints = dict(fingerprints or {})
        self.stats = StageStats()
        self.errors: dict[str, str] = {}
        self.done: list[str] = []
        self._cameras: dict[str, _Camera] = {}
        self._dirty: dict[str, Tracklet] = {}
        # camera -> (status, frames): marked done (or stopped) in the store at the next flush
        self._finished: dict[str, tuple[str, int]] = {}
        self._stopped = False
        self._opened = False
        self._step = 0
        self._feed = FrameFeed(detector, ahead=self.config.read_ahead)

    # lifecycle -------------------------------------------------------------------------------------------

    def open(self) -> dict[str, str]:
        """Open every source; those that fail are recorded in `errors` (and the store) and left out."""
        for source in self.sources:
            self._open_source(source)
        self._opened = True
        return dict(self.errors)

    def _open_source(self, source: Source) -> None:
        try:
            source.open()
        except TracklinkError as exc:
            self._fail(source, str(exc), started=False)
            return
        self._cameras[source.name] = _Camera(source, CameraTracker(source.name, self.config.tracker),
                                             TrackletPool(source.name, self.config.pooling))
        if self.store is not None:
            size = source.size or (None, None)
            self.store.start_camera(CameraRecord(source.name, source.spec.display,
                                                 self.fingerprints.get(source.name, ""), "running",
                                                 fps=source.fps, width=size[0], height=size[1]))

    def add_source(self, source: Source, fingerprint: str = "") -> str | None:
        """Open one more camera while the others run (the viewer); returns its error, None when it opened."""
        if any(s.name == source.name for s in self.sources):
            raise TracklinkError(f"camera name {source.name!r} is taken in this run; name the source NAME=SOURCE")
        self._feed.wait()
        self.sources.append(source)
        if fingerprint:
            self.fingerprints[source.name] = fingerprint
        self._open_source(source)
        return self.errors.get(source.name)

    def remove_source(self, name: str) -> list[Tracklet]:
        """Stop one camera while the others run: its live tracklets end and are linked.

        A live camera is complete up to now and is marked done. A recording stopped before its end is marked
        "stopped", not done, so a later `tracklink batch` over the same file processes it again.
        """
        if name not in self._cameras:
            return []
        self._feed.wait()  # its source may be being read ahead; what was read is dropped at the next step
        ended = self._end_camera(name, stopped=not self._cameras[name].source.live)
        self._link_and_store([], {name: ended})
        return ended

    def stop(self) -> None:
        """Ask the loop to end after the current step (from a signal handler or the viewer)."""
        self._stopped = True

    def close(self) -> None:
        self._feed.close()
        for cam in self._cameras.values():
            cam.source.close()
        if self.store is not None:
            self._flush()

    def __enter__(self) -> "Pipeline":
        if not self._opened:
            self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def active(self) -> list[str]:
        return list(self._cameras)

    def __iter__(self) -> Iterator[StepResult]:
        """Step until every camera has ended (or `stop`); yields each step that had frames or endings."""
        return (result for result in self.steps() if result is not None)

    def steps(self) -> Iterator[StepResult | None]:
        """The one way to drive the pipeline: like iterating it, but also yields None when no camera had a
        frame, so a front end that must stay responsive (the viewer) gets control back between steps.
        Statistics are kept here, for every front end alike; pending rows are flushed when it ends."""
        if not self._opened:
            self.open()
        start = time.perf_counter()
        try:
            while self._cameras and not self._stopped:
                result = self.step()
                if result is not None:
                    self.stats.add(result)
                yield result
        finally:
            self.stats.wall_s += time.perf_counter() - start
            if self.store is not None:
                self._flush()

    def run(self, on_step: Callable[[StepResult], None] | None = None) -> StageStats:
        for result in self:
            if on_step is not None:
                on_step(result)
        return self.stats

    # one step --------------------------------------------------------------------------------------------

    def step(self) -> StepResult | None:
        """One frame from every camera that has one; None when no camera had a frame (and none ended)."""
        clock = time.perf_counter
        seconds = dict.fromkeys(STAGES, 0.0)
        grab = self._feed.take([c.source for c in self._cameras.values()])
        frames, detections, finished, ended_at_step = self._settle(grab)
        seconds["decode"], seconds["detect"] = grab.decode_s, grab.detect_s
        if not self._stopped:
            self._feed.read_ahead([c.source for c in self._cameras.values()])
        if not frames:
            if ended_at_step:
                seconds["link"], seconds["store"] = self._link_and_store([], ended_at_step)
                return StepResult(self._next(), [], seconds, finished, _flat(ended_at_step))
            if self._cameras:
                time.sleep(self.config.idle_wait_s)
            return None

        fit = [appearance_mask(d, f.image.shape, self.config.appearance) for f, d in zip(frames, detections)]
        cams = [self._cameras[f.camera] for f in frames]
        steps, timing = strategy_for([c.tracker for c in cams]).run(
            [c.tracker for c in cams], frames, detections, fit, self._embed,
            lambda camera, track_id: self._cameras[camera].pool.due(track_id, self.config.embed))
        seconds["embed"], seconds["track"] = timing.embed_s, timing.track_s

        t0 = clock()
        results, mature = self._pool(cams, frames, detections, steps, ended_at_step)
        seconds["track"] += clock() - t0  # pooling is bookkeeping of the tracker's output

        seconds["link"], seconds["store"] = self._link_and_store(mature, ended_at_step,
                                                                 [s.backfill + s.tracks for s in steps])
        for r, cam in zip(results, cams):
            r.global_ids = {t.track_id: cam.pool.live[t.track_id].global_id if t.track_id in cam.pool.live
                            else None for t in r.tracks}
        return StepResult(self._next(), results, seconds, finished, _flat(ended_at_step))

    def _settle(self, grab: Grab) -> tuple[list[Frame], list[Detections], dict[str, str], dict[str, list[Tracklet]]]:
        """This step's frames of the cameras still open, with their detections, and the cameras that ended
        (done or failed). Reads of a camera removed since they were made are dropped."""
        frames: list[Frame] = []
        detections: list[Detections] = []
        finished: dict[str, str] = {}
        ended: dict[str, list[Tracklet]] = {}
        found = iter(grab.detections)
        for read in grab.reads:
            det = next(found) if read.frame is not None else None
            if read.camera not in self._cameras:
                continue
            if read.frame is not None:
                frames.append(read.frame)
                detections.append(det)
            elif read.finished:
                status = self._cameras[read.camera].source.status
                error = read.error or (status.reason if status.state == "error" else "")
                ended[read.camera] = self._end_camera(read.camera, error=error)
                finished[read.camera] = f"error: {error}" if error else "done"
        return frames, detections, finished, ended

    def _pool(self, cams: list["_Camera"], frames: list[Frame], detections: list[Detections], steps,
              ended_at_step: dict[str, list[Tracklet]]) -> tuple[list[CameraResult], list[Tracklet]]:
        """Tracks into tracklets; returns each camera's result and the tracklets that matured at this step."""
        results: list[CameraResult] = []
        mature: list[Tracklet] = []
        for cam, frame, det, s in zip(cams, frames, detections, steps):
            touched = cam.pool.update(s.backfill + s.tracks)
            cam.pool.frames += 1
            for t in touched:
                self._dirty[t.key] = t
                if self.linker is not None and t.track_id not in cam.linked and self.linker.mature(t):
                    cam.linked.add(t.track_id)
                    mature.append(t)
            ended = cam.pool.end(s.ended)
            ended_at_step.setdefault(frame.camera, []).extend(ended)
            results.append(CameraResult(frame, det, s.tracks, {}, ended, s.backfill))
        return results, mature

    # stages ----------------------------------------------------------------------------------------------

    def _embed(self, jobs: CropJobs) -> list[list[tuple[np.ndarray, float]]]:
        """Crops of all frames in one embedder call; returns (embedding, CAA attention) pairs split per frame."""
        crops = [crop(image, box) for frame_jobs in jobs for image, box in frame_jobs]
        if not crops or self.embedder is None:
            return [[] for _ in jobs]
        if self.config.pooling == "caa":
            emb, attention = self.embedder.embed_with_attention(crops)
        else:
            emb, attention = self.embedder.embed(crops), None
        emb = np.asarray(emb, dtype=np.float32)
        weights = np.ones(len(emb), np.float32) if attention is None else np.asarray(attention, np.float32)
        out, k = [], 0
        for frame_jobs in jobs:
            n = len(frame_jobs)
            out.append([(emb[i], float(weights[i])) for i in range(k, k + n)])
            k += n
        return out

    def _link_and_store(self, mature: list[Tracklet], ended: dict[str, list[Tracklet]],
                        tracks: list[list[Track]] | None = None) -> tuple[float, float]:
        clock = time.perf_counter
        t0 = clock()
        ended_all = [t for ts in ended.values() for t in ts]
        if self.linker is not None:
            # A tracklet that matures and ends in one step is linked once, as ended.
            ending = {id(t) for t in ended_all}
            batch = [t for t in mature if id(t) not in ending] + ended_all
            if batch:
                self.linker.link_many(batch)
        for t in ended_all:
            self._dirty[t.key] = t
        link_s = clock() - t0

        t0 = clock()
        if self.store is not None:
            if tracks:
                self.store.add_appearances([t for ts in tracks for t in ts])
            if self._finished or self.store.commit_due():
                self._flush()
        return link_s, clock() - t0

    def _flush(self) -> None:
        """Write dirty tracklets and identities, then commit: the at-most-one-second loss bound."""
        assert self.store is not None
        if self._dirty:
            self.store.put_tracklets(list(self._dirty.values()))
            self._dirty.clear()
        if self.linker is not None:
            self.store.put_identities(self.linker.identities, replace_all=True)
        # "done" goes in the same commit as the camera's last rows: a done camera is always complete.
        for name, (status, frames) in self._finished.items():
            self.store.finish_camera(name, status, frames)
        self._finished.clear()
        self.store.commit()

    def _end_camera(self, name: str, error: str = "", stopped: bool = False) -> list[Tracklet]:
        """Close a camera; its live tracklets end. A failed camera's tracklets are dropped, not linked:
        its results are incomplete, and a re-run replaces its rows."""
        cam = self._cameras.pop(name)
        ended = cam.pool.end(cam.tracker.finish())
        cam.source.close()
        if not error and cam.source.status.state == "error":  # found on closing: a live camera never connected
            error = cam.source.status.reason
        if error:
            # Its tracklets leave the gallery and are not written: the re-run replaces the camera's rows.
            if self.linker is not None:
                self.linker.forget(name)
            for key in [k for k, t in self._dirty.items() if t.camera == name]:
                del self._dirty[key]
            self._fail(cam.source, error, started=True, frames=cam.pool.frames)
            return []
        self.done.append(name)
        self._finished[name] = ("stopped" if stopped else "done", cam.pool.frames)
        return ended

    def _fail(self, source: Source, error: str, started: bool, frames: int = 0) -> None:
        self.errors[source.name] = error
        log.error("%s: %s", source.name, error)
        if self.store is not None:
            if not started:
                self.store.start_camera(CameraRecord(source.name, source.spec.display,
                                                     self.fingerprints.get(source.name, ""), "running"))
            self.store.finish_camera(source.name, "error", frames, error)

    def _next(self) -> int:
        self._step += 1
        return self._step


def _flat(by_camera: dict[str, list[Tracklet]]) -> list[Tracklet]:
    return [t for ts in by_camera.values() for t in ts]


__all__ = ["CameraResult", "EmbedSchedule", "Embedder", "Pipeline", "PipelineConfig", "STAGES", "StageStats",
           "StepResult", "TrackletPool"]
