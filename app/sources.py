"""Frame sources: video files, MOTChallenge image folders, camera indices and network streams.

Every source has a camera name and a clock. Recordings keep file time (frame index / fps), so results are
the same however fast we run; live sources stamp the wall clock. A live source reads in its own thread and
reconnects with exponential backoff when the stream drops, so a dead camera never stalls the others; the
pipeline always gets that camera's newest frame (older ones are dropped, as live video must be).
"""

from __future__ import annotations

import configparser
import logging
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence
from urllib.parse import unquote

import numpy as np

from tracklink import TracklinkError
from tracklink.app.records import Frame
from tracklink.utils.suffixes import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

# FFmpeg's own log (read once, when OpenCV first opens something with FFmpeg) can quote stream addresses;
# errors reach users through our redacted messages instead. Set it to debug a camera (e.g. 32, "info").
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
DEFAULT_FPS = 30.0  # for a recording that does not say its rate; logged when used
# Failed reads in a row before a recording counts as ended: at most the frames its container says remain,
# and never more than this (a damaged stretch of 64 KiB in a 320x240 mp4 cost 12 reads).
MAX_UNDECODABLE_RUN = 250
UNKNOWN_LENGTH_RETRIES = 25  # when the container does not state its length

# Up to the last "@" of the URL: a password may itself hold an unencoded "@" or "/" (FFmpeg accepts an "@").
# Hiding a host along with it (an "@" in a path or query) is the safe way to be wrong.
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s]*@")
_QUERY_PARAM = re.compile(r"(?P<key>[?&;][^=&;#\s?]+=)(?P<value>[^&;#\s'\"]*)")
_SECRET_KEY = re.compile(r"token|key|pass|pwd|secret|sig|auth|cred|session|user|login|jwt|otp", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def redact(text: str) -> str:
    """Hide `user:pass@` and secret-looking query values (token, apikey, signature...) in URLs: camera
    credentials must never reach logs, the store or error messages."""
    def hide_secret(m: re.Match) -> str:
        key = unquote(m.group("key"))
        return m.group("key") + ("***" if _SECRET_KEY.search(key) and m.group("value") else m.group("value"))

    return _QUERY_PARAM.sub(hide_secret, _CREDENTIALS.sub(r"\g<scheme>***@", str(text)))


_opencv_quiet_lock = threading.Lock()
_opencv_quiet_users = 0
_opencv_saved_level: int | None = None


@contextmanager
def quiet_opencv():
    """Silence OpenCV's own log (process-wide, so counted across threads) while it handles a stream URL:
    its messages quote the URL verbatim, and we cannot redact what it prints itself."""
    import cv2

    global _opencv_quiet_users, _opencv_saved_level
    with _opencv_quiet_lock:
        if _opencv_quiet_users == 0:
            _opencv_saved_level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        _opencv_quiet_users += 1
    try:
        yield
    finally:
        with _opencv_quiet_lock:
            _opencv_quiet_users -= 1
            if _opencv_quiet_users == 0 and _opencv_saved_level is not None:
                cv2.utils.logging.setLogLevel(_opencv_saved_level)


# ---------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class SourceSpec:
    """What the user asked for, before anything is opened."""

    name: str  # camera name: file stem, folder name, or given as NAME=SPEC
    target: str  # path, camera index or URL (may hold credentials: print `display` instead)
    kind: str  # "video" | "images" | "camera" | "stream"

    @property
    def live(self) -> bool:
        return self.kind in ("camera", "stream")

    @property
    def display(self) -> str:
        return redact(self.target)


def parse_source(spec: str) -> SourceSpec:
    """`NAME=SPEC` or `SPEC`, where SPEC is a video file, an image folder, a camera index or a stream URL."""
    spec = str(spec).strip()
    name: str | None = None
    head, sep, tail = spec.partition("=")
    # A URL's query string has '=' too: only a plain word before the first '=' is a camera name.
    if sep and _NAME.match(head) and not Path(spec).exists():
        name, spec = head, tail
    if not spec:
        raise TracklinkError(f"empty source in {name}=: give a video file, an image folder, a camera index or a URL")
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ""
    if spec.isdigit():
        return SourceSpec(name or f"camera{spec}", spec, "camera")
    if scheme in STREAM_SCHEMES:
        return SourceSpec(name or _stream_name(spec), spec, "stream")
    if scheme:
        raise TracklinkError(f"unsupported source scheme {scheme!r} in {redact(spec)}; "
                             f"use one of {', '.join(STREAM_SCHEMES)}, a file, a folder or a camera index")
    path = Path(spec).expanduser()
    if path.is_dir():
        return SourceSpec(name or path.resolve().name, str(path), "images")
    if path.is_file():
        return SourceSpec(name or path.stem, str(path), "video")
    raise TracklinkError(f"source not found: {spec} (expected a video file, an image folder, a camera index or a URL)")


def _stream_name(url: str) -> str:
    """A readable camera name from a URL: host plus last path part, without credentials or query."""
    rest = redact(url).split("://", 1)[1].split("?", 1)[0]
    host = rest.split("/", 1)[0].split("@")[-1].split(":")[0]
    last = rest.rstrip("/").rsplit("/", 1)[-1] if "/" in rest else ""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{host}_{last}" if last else host)


def parse_sources(specs: Iterable[str | SourceSpec]) -> list[SourceSpec]:
    """Parse several specs; camera names must be unique because every output file is named after one."""
    parsed = [parse_source(s) if isinstance(s, str) else s for s in specs]
    seen: dict[str, SourceSpec] = {}
    for spec in parsed:
        if spec.name in seen:
            raise TracklinkError(f"two sources are both named {spec.name!r} ({seen[spec.name].display} and "
                                 f"{spec.display}); name them with NAME=SOURCE")
        seen[spec.name] = spec
    return parsed


# ---------------------------------------------------------------------------------------------- status


@dataclass(frozen=True)
class SourceStatus:
    state: str  # "idle" | "live" | "reconnecting" | "ended" | "error"
    reason: str = ""
    frames: int = 0  # frames delivered so far
    since: float = field(default_factory=time.time)

    @property
    def finished(self) -> bool:
        return self.state in ("ended", "error")


class Source(ABC):
    """One camera. `read` returns the next frame, or None when there is none (yet, or any more: see status)."""

    def __init__(self, spec: SourceSpec):
        self.spec = spec
        self.name = spec.name
        self._status = SourceStatus("idle")
        self._status_lock = threading.Lock()
        self.on_status: Callable[[str, SourceStatus], None] | None = None

    live: bool = False
    fps: float | None = None
    frame_count: int | None = None  # known length of a recording, for progress bars
    size: tuple[int, int] | None = None  # (width, height) once known

    @property
    def status(self) -> SourceStatus:
        with self._status_lock:
            return self._status

    def _set_status(self, state: str, reason: str = "", frames: int | None = None) -> None:
        with self._status_lock:
            old = self._status
            if old.state == state and old.reason == reason and (frames is None or frames == old.frames):
                return
            self._status = SourceStatus(state, redact(reason), old.frames if frames is None else frames,
                                        old.since if old.state == state else time.time())
            status = self._status
        if state != old.state:
            level = logging.WARNING if state in ("reconnecting", "error") else logging.DEBUG
            log.log(level, "%s: %s%s", self.name, state, f" ({status.reason})" if status.reason else "")
        if self.on_status is not None and state != old.state:
            self.on_status(self.name, status)

    @abstractmethod
    def open(self) -> None:
        """Raise TracklinkError (naming the source) if it cannot be read at all."""

    @abstractmethod
    def read(self, timeout: float = 0.0) -> Frame | None: ...

    def close(self) -> None:
        if not self.status.finished:
            self._set_status("ended", "closed")

    def __enter__(self) -> "Source":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self):
        while (frame := self.read(timeout=1.0)) is not None or not self.status.finished:
            if frame is not None:
                yield frame


class VideoFileSource(Source):
    """A recording decoded with OpenCV; timestamps are file time."""

    def __init__(self, spec: SourceSpec):
        super().__init__(spec)
        self._cap = None
        self._index = 0
        self.skipped_frames = 0  # undecodable frames stepped over (a damaged stretch mid-file)

    def open(self) -> None:
        import cv2

        path = Path(self.spec.target)
        cap = cv2.VideoCapture(str(path))
        ok, first = cap.read() if cap.isOpened() else (False, None)
        if not ok or first is None:
            cap.release()
            self._set_status("error", f"cannot decode video {path}")
            raise TracklinkError(f"cannot decode video {path}: OpenCV read no frame from it (corrupt, empty, "
                                 "or a codec this OpenCV build lacks)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        if not fps or not np.isfinite(fps) or fps <= 0 or fps > 1000:
            log.warning("%s: %s does not state its frame rate; assuming %.0f fps", self.name, path, DEFAULT_FPS)
            fps = DEFAULT_FPS
        self.fps = float(fps)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None
        self.size = (first.shape[1], first.shape[0])
        self._cap, self._pending, self._index, self.skipped_frames = cap, first, 0, 0
        self._set_status("live")

    def read(self, timeout: float = 0.0) -> Frame | None:
        if self._cap is None:
            return None
        if self._pending is not None:
            image, self._pending = self._pending, None
            self._index += 1
        else:
            image = self._read_past_damage()
            if image is None:
                self._finish()
                return None
        self._set_status("live", frames=self._index)
        return Frame(self.name, self._index, (self._index - 1) / self.fps, image)

    def _read_past_damage(self) -> np.ndarray | None:
        """The next decodable frame, stepping over a damaged stretch; sets its index in the file.

        FFmpeg drops one bad packet per failed read, so retrying gets past the damage; the bound is the
        frames the container says remain (none for a clean end), at most MAX_UNDECODABLE_RUN. After a gap
        the index comes from the frame's timestamp, so file time stays true.
        """
        import cv2

        remaining = (self.frame_count - self._index) if self.frame_count else UNKNOWN_LENGTH_RETRIES
        failures = 0
        while True:
            ok, image = self._cap.read()
            if ok and image is not None:
                break
            failures += 1
            if failures > min(remaining, MAX_UNDECODABLE_RUN):
                return None
        index = self._index + 1
        if failures:
            msec = self._cap.get(cv2.CAP_PROP_POS_MSEC)
            if msec and msec > 0:
                index = max(index, int(round(msec * self.fps / 1000.0)) + 1)
            self.skipped_frames += index - self._index - 1
            log.warning("%s: frames %d-%d of %s could not be decoded; skipped", self.name, self._index + 1,
                        index - 1, self.spec.target)
        self._index = index
        return image

    def _finish(self) -> None:
        self._cap.release()
        self._cap = None
        if self.frame_count and self._index < self.frame_count - 1:
            # Containers often over-count by one; a real shortfall is a truncated or damaged file. An error,
            # not an end: its results are incomplete, and a re-run must not take it for finished.
            self._set_status("error", f"decoding stopped at frame {self._index} of {self.frame_count}: "
                                      f"{self.spec.target} may be truncated or damaged")
        else:
            self._set_status("ended")

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        super().close()


class ImageFolderSource(Source):
    """A MOTChallenge sequence (`seqinfo.ini` + `img1/`) or any folder of numbered images."""

    def __init__(self, spec: SourceSpec):
        super().__init__(spec)
        self._files: list[tuple[int, Path]] = []
        self._pos = 0

    def open(self) -> None:
        root = Path(self.spec.target)
        image_dir, fps = root, None
        ini = root / "seqinfo.ini"
        if ini.is_file():
            cfg = configparser.ConfigParser()
            try:
                cfg.read(ini)
                seq = cfg["Sequence"]
                image_dir = root / seq.get("imDir", "img1")
                fps = seq.getfloat("frameRate", fallback=None)
                if seq.get("imWidth") and seq.get("imHeight"):
                    self.size = (seq.getint("imWidth"), seq.getint("imHeight"))
            except (configparser.Error, KeyError, ValueError) as exc:
                raise TracklinkError(f"cannot read {ini}: {exc}") from None
        elif (root / "img1").is_dir():
            image_dir = root / "img1"
        files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
            if image_dir.is_dir() else []
        if not files:
            self._set_status("error", f"no images in {image_dir}")
            raise TracklinkError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
        # MOTChallenge names files by frame number (000001.jpg); keep those numbers so outputs match gt.txt.
        numbered = all(p.stem.isdigit() for p in files)
        self._files = sorted((int(p.stem), p) for p in files) if numbered else list(enumerate(files, 1))
        if fps is None:
            log.warning("%s: %s has no seqinfo.ini frameRate; assuming %.0f fps", self.name, root, DEFAULT_FPS)
        self.fps = float(fps or DEFAULT_FPS)
        self.frame_count = len(self._files)
        self._pos = 0
        self._set_status("live")

    def read(self, timeout: float = 0.0) -> Frame | None:
        import cv2

        if self._pos >= len(self._files):
            if not self.status.finished:
                self._set_status("ended")
            return None
        index, path = self._files[self._pos]
        self._pos += 1
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            self._set_status("error", f"cannot decode image {path}")
            raise TracklinkError(f"cannot decode image {path} of camera {self.name}: corrupt or not an image")
        self.size = (image.shape[1], image.shape[0])
        self._set_status("live", frames=self._pos)
        return Frame(self.name, index, (index - 1) / self.fps, image)


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays for live sources: initial, doubling up to `maximum`; `attempts` None retries forever."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    attempts: int | None = None
    open_timeout_s: float = 10.0  # FFmpeg's own default can block for far longer on a dead host
    # A camera down for hours retries thousands of times: one log line per retry at most this often (the
    # first retry is always logged, and each line counts the attempts since the previous one).
    log_interval_s: float = 60.0

    def delays(self):
        delay, n = self.initial, 0
        while self.attempts is None or n < self.attempts:
            yield delay
            delay, n = min(delay * self.factor, self.maximum), n + 1


class LiveSource(Source):
    """A camera index or a stream URL, read in a background thread that reconnects with backoff."""

    live = True

    def __init__(self, spec: SourceSpec, backoff: Backoff = Backoff()):
        super().__init__(spec)
        self.backoff = backoff
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._delivered = 0  # index of the last frame handed out
        self._index = 0
        self.dropped = 0  # frames overwritten before the pipeline took them
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_retry_log: float | None = None
        self._retries_unlogged = 0

    def open(self) -> None:
        """Start the reader thread; a camera that is down now is retried, not an error."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"source-{self.name}", daemon=True)
            self._set_status("reconnecting", "connecting")
            self._thread.start()

    def _capture(self):
        import cv2

        target = self.spec.target
        if self.spec.kind == "camera":
            return cv2.VideoCapture(int(target))
        ms = int(self.backoff.open_timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        # FFmpeg only: with CAP_ANY a failed open falls through to OpenCV's image-sequence reader, which
        # takes a "%" in the URL for a pattern and prints the whole URL, password included, to stderr.
        with quiet_opencv():
            return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)

    def _run(self) -> None:
        import cv2

        delays = self.backoff.delays()
        attempt = 0  # failed connection attempts in a row
        while not self._stop.is_set():
            cap = self._capture()
            got_frame = False
            try:
                while cap.isOpened() and not self._stop.is_set():
                    ok, image = cap.read()
                    if not ok or image is None:
                        break
                    if not got_frame:
                        got_frame, delays = True, self.backoff.delays()  # a good connection resets the backoff
                        fps = cap.get(cv2.CAP_PROP_FPS)
                        self.fps = float(fps) if fps and 0 < fps < 1000 else None
                        self.size = (image.shape[1], image.shape[0])
                    with self._cond:
                        self._index += 1
                        if self._latest is not None and self._latest.index > self._delivered:
                            self.dropped += 1
                        self._latest = Frame(self.name, self._index, time.time(), image)
                        self._cond.notify_all()
                    self._set_status("live", frames=self._index)
            finally:
                cap.release()
            if self._stop.is_set():
                break
            attempt = 0 if got_frame else attempt + 1
            delay = next(delays, None)
            what = "stream dropped" if got_frame else f"cannot open {self.spec.display}"
            if delay is None:
                self._set_status("error", f"{what}; gave up after {self.backoff.attempts} attempts")
                break
            announced = self.status.state != "reconnecting"  # a change of state is logged by _set_status
            self._set_status("reconnecting", f"{what}; retrying in {delay:.1f}s")
            self._log_retry(what, attempt, delay, announced)
            self._stop.wait(delay)
        with self._cond:
            if not self.status.finished:
                if self._index == 0:  # stopped before the first frame: 0 frames is not a result
                    self._set_status("error", f"never connected to {self.spec.display}")
                else:
                    self._set_status("ended")
            self._cond.notify_all()

    def _log_retry(self, what: str, attempt: int, delay: float, announced: bool) -> None:
        """A line per retry, not only per change of state, at most one per backoff.log_interval_s."""
        now = time.monotonic()
        self._retries_unlogged += 1
        if announced:
            self._last_retry_log, self._retries_unlogged = now, 0
            return
        if self._last_retry_log is not None and now - self._last_retry_log < self.backoff.log_interval_s:
            return
        log.warning("%s: %s; attempt %d failed (%d since the last line), retrying in %.1fs", self.name, what,
                    max(attempt, 1), self._retries_unlogged, delay)
        self._last_retry_log, self._retries_unlogged = now, 0

    def read(self, timeout: float = 0.0) -> Frame | None:
        """The newest frame not yet handed out, waiting up to `timeout` seconds for one."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._latest is None or self._latest.index <= self._delivered:
                left = deadline - time.monotonic()
                if left <= 0 or self.status.finished:
                    return None
                self._cond.wait(left)
            self._delivered = self._latest.index
            return self._latest

    def close(self) -> None:
        """Stop reading. A camera that never delivered a frame ends as an error: 0 frames is not a result."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.backoff.open_timeout_s + 1)
        if self._index == 0 and not self.status.finished:  # the thread is still stuck in its first open
            self._set_status("error", f"never connected to {self.spec.display}")
        super().close()


def make_source(spec: str | SourceSpec, backoff: Backoff = Backoff()) -> Source:
    """A Source for a spec, not yet opened (so errors can be collected per camera)."""
    spec = parse_source(spec) if isinstance(spec, str) else spec
    if spec.kind == "video":
        return VideoFileSource(spec)
    if spec.kind == "images":
        return ImageFolderSource(spec)
    return LiveSource(spec, backoff)


def make_sources(specs: Sequence[str | SourceSpec], backoff: Backoff = Backoff()) -> list[Source]:
    return [make_source(s, backoff) for s in parse_sources(specs)]


def as_live(spec: SourceSpec) -> SourceSpec:
    """Treat a file like a stream (wall clock, reconnect on end): for tests and replaying recordings live."""
    return replace(spec, kind="stream")


__all__ = ["Backoff", "ImageFolderSource", "LiveSource", "Source", "SourceSpec", "SourceStatus", "VideoFileSource",
           "as_live", "make_source", "make_sources", "parse_source", "parse_sources", "redact"]
