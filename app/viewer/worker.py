"""The viewer's pipeline thread: the same `Pipeline` as `tracklink batch`, stepped in a QThread.

The UI thread must only paint, so everything else happens here: loading the models (seconds), opening
sources, every pipeline step, shrinking frames to display size, cutting people crops, building the people
snapshots and running gallery searches. The UI talks to the worker through a command queue that the worker
drains between steps (so the pipeline is only ever touched from this thread, which SQLite also requires),
and the worker answers with Qt signals, which Qt queues onto the UI thread.

Frames are not sent in signals: the worker keeps the newest frame of each camera in a mailbox and signals
once; the UI takes whatever is newest when it gets round to it. A slow UI therefore drops frames instead
of building a backlog, and a fast pipeline never floods the event loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QThread, pyqtSignal

from tracklink import TracklinkError
from tracklink.app.viewer.crops import CropBook, crops_folder, to_qimage
from tracklink.app.viewer.messages import Box, Person, RunInfo, SearchResult, StageSnapshot, TileFrame
from tracklink.app.viewer.settings import ViewerOptions

log = logging.getLogger(__name__)

MAX_CAMERAS = 16
CROPS_PER_PERSON = 4
SNAPSHOT_INTERVAL_S = 0.5  # people panel and status bar refresh: often enough to feel live, cheap to build
STATS_WINDOW_S = 3.0
SEARCH_HITS = 5
# How often the people of cameras that other processes write into the same store are brought in (a shared
# PostgreSQL store, or a batch run writing the viewer's SQLite file): about as often as the panel refreshes.
SHARED_STORE_POLL_S = 1.0
WORKER_NICENESS = 10  # Linux nice value of the pipeline threads (0 normal, 19 lowest); see lower_thread_priority


def _reopen_text(spec) -> str:
    """The source text that reopens `spec` under the same camera name (for a restart with new settings)."""
    from tracklink.app.sources import parse_source

    try:
        if parse_source(spec.target).name == spec.name:
            return spec.target
    except TracklinkError:
        pass
    return f"{spec.name}={spec.target}"


def lower_thread_priority(niceness: int = WORKER_NICENESS) -> None:
    """Make the calling thread, and every thread it starts from now on, yield the CPU to the UI thread.

    On Linux each thread has its own nice value and new threads inherit their creator's; called first
    thing in the worker, it covers ONNX Runtime's and PyTorch's pools (created when the models load) and
    the live sources' reader threads. On our 2-core CPU (bench/viewer_responsiveness.py, two 640x480
    cameras) the worst event-loop stall was 121 ms without it and 27 ms with it; lowering only the
    inference pools, not the thread that holds the GIL between them, gave 41 ms. Elsewhere QThread's own
    priority does this, so failure here is not an error.
    """
    import os

    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
        except OSError as exc:
            log.debug("cannot lower the pipeline thread's priority: %s", exc)



class PipelineWorker(QThread):
    """Loads the models, runs the pipeline and answers the UI; see the module docstring."""

    started_ok = pyqtSignal(object)  # RunInfo
    failed = pyqtSignal(str)  # the pipeline could not start or stopped on an error: shown in a dialog
    notice = pyqtSignal(str)  # a user-fixable problem that leaves the pipeline running (a bad added source)
    frames_ready = pyqtSignal()  # new frames in the mailbox
    camera_added = pyqtSignal(str, str, str)  # name, what it reads (redacted), NAME=SOURCE to reopen it
    camera_removed = pyqtSignal(str)
    camera_status = pyqtSignal(str, str, str)  # name, state, reason
    people_changed = pyqtSignal(object)  # list[Person]
    stats_ready = pyqtSignal(object)  # StageSnapshot
    search_done = pyqtSignal(object)  # SearchResult
    steps_done = pyqtSignal(int)  # --frames reached, or every camera finished: the pipeline idles

    def __init__(self, options: ViewerOptions, parent=None):
        super().__init__(parent)
        self.options = options
        self._commands: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._mailbox: dict[str, TileFrame] = {}
        self._last_tiles: dict[str, TileFrame] = {}  # newest frame per camera, to relabel when it ends
        self._shown_status: dict[str, tuple[str, str]] = {}
        self._last_poll = 0.0
        self._last_sync = 0.0
        self._others: dict[str, tuple] = {}  # camera written elsewhere -> what its stored tracklets looked like
        self._mail_lock = threading.Lock()
        self._mail_signalled = False
        self.paused = False
        self.pipeline = None
        self.linker = None
        self.embedder = None
        self.threshold: float | None = None
        self._names: set[str] = set()  # every camera name this store knows or this run used
        self._recent: deque = deque()  # (wall time, seconds per stage, camera-frames) per step
        self._steps = 0
        self._idle_reported = False
        self._last_snapshot = 0.0
        self._people_key: tuple | None = None

    # UI-thread API: everything goes through the queue ------------------------------------------------

    def add_source(self, spec: str) -> None:
        self._commands.put(("add", spec))

    def remove_source(self, name: str) -> None:
        self._commands.put(("remove", name))

    def set_paused(self, paused: bool) -> None:
        self._commands.put(("pause", bool(paused)))

    def search(self, image: np.ndarray, label: str) -> None:
        self._commands.put(("search", (image, label)))

    def stop(self) -> None:
        self._stop.set()
        self._commands.put(("wake", None))

    def take_frames(self) -> dict[str, TileFrame]:
        """The newest frame of each camera since the last call (called by the UI thread)."""
        with self._mail_lock:
            frames, self._mailbox = self._mailbox, {}
            self._mail_signalled = False
        return frames

    # thread ------------------------------------------------------------------------------------------

    def run(self) -> None:
        lower_thread_priority()
        try:
            self._start()
        except TracklinkError as exc:
            self.failed.emit(str(exc))
            self._close()
            return
        except Exception as exc:  # a bug, not a user error: the log gets the traceback, the user a dialog
            log.exception("the viewer pipeline failed to start")
            self.failed.emit(f"the pipeline failed to start: {type(exc).__name__}: {exc}")
            self._close()
            return
        if self.pipeline is None:  # stopped while the models were loading
            self._close()
            return
        try:
            self._loop()
        except TracklinkError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:
            log.exception("the viewer pipeline stopped")
            self.failed.emit(f"the pipeline stopped: {type(exc).__name__}: {exc}")
        finally:
            self._close()

    def _start(self) -> None:
        from tracklink.app.session import build_pipeline, camera_fingerprints, load_models, open_gallery
        from tracklink.app.sources import make_source, redact
        from tracklink.app.store import is_server_url, open_store

        opts = self.options
        # The same session as batch mode: same defaults, same offline messages, same threshold rules.
        self.models = load_models(opts)
        self.embedder, self.threshold = self.models.embedder, self.models.threshold
        if self._stop.is_set():
            return
        self.store = open_store(opts.db if is_server_url(opts.db) else Path(opts.db).expanduser())
        self.crops = CropBook(crops_folder(opts.db))

        initial = self._parse_initial(opts.sources)
        restarting = {s.name for s in initial}
        self._names = {c.name for c in self.store.cameras()} | restarting
        # People found earlier in this store come back under their ids, so new sightings join them
        # (the session's one resume policy); cameras about to restart have their rows replaced.
        self.linker, restored = open_gallery(self.store, self.models.link, restarting)
        self.crops.load(restored)
        for name in restarting:
            self.crops.reset_camera(name)
        self._fingerprint = lambda specs: camera_fingerprints(opts, specs, self.models)

        sources = []
        for spec in initial:
            source = make_source(spec)
            source.on_status = self._on_status
            sources.append(source)
        self.pipeline = build_pipeline(sources, self.models, opts, self.store, self.linker, self._fingerprint(initial))
        self.started_ok.emit(RunInfo(self.embedder.backend, self.models.detector_spec, str(self.models.reid_path),
                                     self.threshold, redact(opts.db), len(self.linker.identities)))
        for spec in initial:
            self.camera_added.emit(spec.name, spec.display, _reopen_text(spec))
        for name, reason, text in self._bad_initial:
            self.camera_added.emit(name, reason, text)
            self.camera_status.emit(name, "error", reason)
        self.pipeline.open()
        for name, error in self.pipeline.errors.items():
            self.camera_status.emit(name, "error", error)
        self._publish_people(force=True)

    def _parse_initial(self, specs: list[str]):
        """Parse the command-line sources; one that cannot be parsed gets an error tile, not a failed start."""
        from tracklink.app.sources import parse_source, redact

        parsed, self._bad_initial = [], []
        taken: set[str] = set()
        for text in specs[:MAX_CAMERAS]:
            try:
                spec = parse_source(text)
            except TracklinkError as exc:
                head, sep, tail = str(text).partition("=")
                given = head if sep and head.replace("-", "").replace("_", "").replace(".", "").isalnum() else ""
                name = self._unique(given or Path(str(text)).name or "source", taken)
                taken.add(name)
                self._bad_initial.append((name, str(exc), text))
                continue
            spec = replace(spec, name=self._unique(spec.name, taken))
            taken.add(spec.name)
            parsed.append(spec)
        if len(specs) > MAX_CAMERAS:
            left_out = ", ".join(redact(s) for s in specs[MAX_CAMERAS:])
            self.notice.emit(f"the viewer shows at most {MAX_CAMERAS} cameras; left out: {left_out}")
        return parsed

    @staticmethod
    def _unique(name: str, taken: set[str]) -> str:
        if name not in taken:
            return name
        k = 2
        while f"{name}-{k}" in taken:
            k += 1
        return f"{name}-{k}"

    def _loop(self) -> None:
        """Step the pipeline through the same iteration as batch mode, answering the UI between steps."""
        pipeline, steps = self.pipeline, None
        while not self._stop.is_set():
            if time.monotonic() - self._last_poll >= SNAPSHOT_INTERVAL_S:
                self._poll_status()
            if time.monotonic() - self._last_sync >= SHARED_STORE_POLL_S:
                self._sync_other_writers()
            idle = self.paused or not pipeline.active or self._limit_reached()
            self._drain(block=idle)
            if self._stop.is_set() or self.paused or not pipeline.active or self._limit_reached():
                if not self._idle_reported and (self._limit_reached() or not pipeline.active):
                    self._idle_reported = True
                    self._publish_people(force=True)
                    self._publish_stats(force=True)
                    self.steps_done.emit(self._steps)
                continue
            self._idle_reported = False
            steps = steps or pipeline.steps()  # a new run of steps once a camera is added after all ended
            result = next(steps, StopIteration)
            if result is StopIteration:
                steps = None
            elif result is not None:
                self._steps += 1
                self._publish(result)

    def _sync_other_writers(self) -> None:
        """Bring in the people that other processes write into this store, as they write them.

        Cameras this viewer runs are its own; every other camera's stored tracklets that have a global id go
        into the gallery under that id (the session's resume policy, applied again whenever they change), so the
        panel shows identities written by other machines within a second or two.
        """
        self._last_sync = time.monotonic()
        mine = {s.name for s in self.pipeline.sources}
        stored: dict[str, list] = {}
        for camera in (c.name for c in self.store.cameras() if c.name not in mine):  # never our own rows
            stored[camera] = [t for t in self.store.tracklets(camera) if t.global_id is not None]
        changed = False
        for camera in set(self._others) | set(stored):
            tracklets = stored.get(camera, [])
            signature = tuple((t.track_id, t.global_id, t.num_embeddings, t.last_frame) for t in tracklets)
            if self._others.get(camera) == signature:
                continue
            self.linker.forget(camera)
            for t in tracklets:
                t.ended = True
            self.linker.restore(tracklets)
            self._others[camera] = signature
            changed = True
        if changed:
            self._publish_people()

    def _limit_reached(self) -> bool:
        return self.options.max_steps is not None and self._steps >= self.options.max_steps

    def _drain(self, block: bool) -> None:
        try:
            command, arg = self._commands.get(timeout=0.05) if block else self._commands.get_nowait()
        except queue.Empty:
            return
        while True:
            self._do(command, arg)
            try:
                command, arg = self._commands.get_nowait()
            except queue.Empty:
                return

    def _do(self, command: str, arg) -> None:
        if command == "add":
            self._add(arg)
        elif command == "remove":
            if arg in self.pipeline.active:
                self.pipeline.remove_source(arg)
            self.camera_removed.emit(arg)
            self._publish_people(force=True)
        elif command == "pause":
            self.paused = arg
            if arg:  # what the panel shows while paused is exactly what the gallery holds
                self._publish_people(force=True)
                self._publish_stats(force=True)
        elif command == "search":
            self.search_done.emit(self._search(*arg))

    def _add(self, text: str) -> None:
        from tracklink.app.sources import make_source, parse_source

        if len(self.pipeline.active) >= MAX_CAMERAS:
            self.notice.emit(f"the viewer shows at most {MAX_CAMERAS} cameras; remove one before adding another")
            return
        try:
            spec = parse_source(text)
        except TracklinkError as exc:
            self.notice.emit(str(exc))
            return
        # A source added while running never replaces stored rows: a taken name gets a suffix.
        spec = replace(spec, name=self._unique(spec.name, self._names))
        self._names.add(spec.name)
        source = make_source(spec)
        source.on_status = self._on_status
        self.crops.reset_camera(spec.name)
        self.camera_added.emit(spec.name, spec.display, _reopen_text(spec))
        error = self.pipeline.add_source(source, self._fingerprint([spec])[spec.name])
        if error:
            self.camera_status.emit(spec.name, "error", error)
        self._idle_reported = False

    def _on_status(self, name: str, status) -> None:
        # Called from the pipeline thread or a live source's reader thread; the signal queues to the UI.
        self._shown_status[name] = (status.state, status.reason)
        self.camera_status.emit(name, status.state, status.reason)

    def _poll_status(self) -> None:
        """Sources call back on a change of state only; a reconnecting stream's reason ("retrying in 8 s")
        changes within one state, so the live ones are also looked at now and then."""
        self._last_poll = time.monotonic()
        for source in self.pipeline.sources:
            if source.live and source.name in self.pipeline.active:
                status = source.status
                if self._shown_status.get(source.name) != (status.state, status.reason):
                    self._on_status(source.name, status)

    def _close(self) -> None:
        if self.pipeline is not None:
            try:
                self.pipeline.close()
            except Exception:
                log.exception("closing the pipeline")
        store = getattr(self, "store", None)
        if store is not None:
            store.close()

    # publishing --------------------------------------------------------------------------------------

    def _publish(self, result) -> None:
        import cv2

        tiles = {}
        for cam in result.cameras:
            image = cam.frame.image
            h, w = image.shape[:2]
            scale = min(1.0, self.options.display_max / max(h, w))
            small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) \
                if scale < 1.0 else image
            boxes = [Box(tuple(float(v) * scale for v in t.xyxy), t.track_id, cam.global_ids.get(t.track_id),
                         float(t.confidence)) for t in cam.tracks]
            tiles[cam.frame.camera] = TileFrame(cam.frame.camera, cam.frame.index, cam.frame.timestamp,
                                                to_qimage(small), boxes)
            for t in cam.tracks:
                if t.embedding is not None:  # fit for appearance: a whole, unoccluded person
                    self.crops.offer(t.camera, t.track_id, t.frame, t.timestamp, image, t.xyxy)
        self._last_tiles.update(tiles)
        for name, outcome in result.finished.items():
            state, _, reason = outcome.partition(": ")
            self.camera_status.emit(name, "error" if state == "error" else "ended", reason)
            if name in self._last_tiles:
                tiles[name] = self._relabelled(self._last_tiles.pop(name))
        with self._mail_lock:
            self._mailbox.update(tiles)
            signal = bool(tiles) and not self._mail_signalled
            self._mail_signalled = self._mail_signalled or signal
        if signal:
            self.frames_ready.emit()

        now = time.monotonic()
        self._recent.append((now, result.seconds, len(result.cameras)))
        while self._recent and now - self._recent[0][0] > STATS_WINDOW_S:
            self._recent.popleft()
        if now - self._last_snapshot >= SNAPSHOT_INTERVAL_S:
            self._last_snapshot = now
            self._publish_people()
            self._publish_stats()

    def _relabelled(self, tile: TileFrame) -> TileFrame:
        """A finished camera's last frame with the global ids its tracklets got when they ended.

        Its tracklets are linked at the end, after that frame was shown; without this the tile would
        keep showing them as unlinked for good.
        """
        ids = {m.track_id: i.global_id for i in self.linker.identities for m in i.members if m.camera == tile.camera}
        boxes = [replace(b, global_id=ids.get(b.track_id, b.global_id)) for b in tile.boxes]
        return replace(tile, boxes=boxes)

    def _publish_stats(self, force: bool = False) -> None:
        recent = list(self._recent)
        if not recent:
            if force:
                self.stats_ready.emit(StageSnapshot(None, {}, self.pipeline.stats.frames, self._steps))
            return
        stages = recent[0][1].keys()
        ms = {k: 1000.0 * sum(r[1].get(k, 0.0) for r in recent) / len(recent) for k in stages}
        span = recent[-1][0] - recent[0][0]
        # n steps span n-1 intervals; the first step's frames happened before the window opened.
        fps = sum(r[2] for r in recent[1:]) / span if span > 0 else None
        self.stats_ready.emit(StageSnapshot(fps, ms, self.pipeline.stats.frames, self._steps))

    def _publish_people(self, force: bool = False) -> None:
        identities = self.linker.identities if self.linker is not None else []
        people = []
        for identity in identities:
            members = identity.members
            boxes = sum(m.num_boxes for m in members)
            if not members or boxes < self.options.min_boxes:
                continue
            best_first = sorted(members, key=lambda m: -m.num_embeddings)
            people.append(Person(
                identity.global_id, identity.cameras, identity.first_seen, identity.last_seen, boxes,
                any(not m.ended for m in members),
                sorted(((m.camera, m.start_time, m.end_time) for m in members), key=lambda s: (s[1], s[0])),
                self.crops.images([m.key for m in best_first], CROPS_PER_PERSON)))
        people.sort(key=lambda p: p.global_id)
        key = tuple((p.global_id, p.boxes, len(p.crops), p.live, len(p.segments)) for p in people)
        if force or key != self._people_key:
            self._people_key = key
            self.people_changed.emit(people)

    # search ------------------------------------------------------------------------------------------

    def _search(self, image: np.ndarray, label: str) -> SearchResult:
        """The identities nearest to a dropped crop, by cosine similarity to their mean appearance.

        Not camera-centred like linking: a dropped image has no camera, so there is no camera mean to
        remove. Scores are therefore only comparable within one search.
        """
        if image is None or image.size == 0:
            return SearchResult(label, [], f"{label} is not an image")
        query = np.asarray(self.embedder.embed([image]), np.float32)[0]
        scored = [(i.global_id, float(query @ f)) for i in self.linker.identities if (f := i.feature) is not None]
        scored.sort(key=lambda s: -s[1])
        error = "" if scored else "nobody in the gallery yet"
        return SearchResult(label, scored[:SEARCH_HITS], error)


__all__ = ["PipelineWorker", "lower_thread_priority"]
