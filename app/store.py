"""Where a run's results live while it runs: cameras, tracklets with their embeddings, identities, boxes.

`Store` is the small interface the pipeline writes through; `SqliteStore` is the default, one file in the
output folder, and `PostgresStore` (app/store_postgres.py) is one server shared by many machines. Writes are
batched and committed at least once per `commit_interval` seconds, so a killed job loses at most that much,
and WAL lets a viewer read while a batch writes. Every table has a natural key (camera, track id, frame) with
UNIQUE constraints and upserts: re-running over the same footage replaces a camera's partial rows instead of
duplicating them, and a camera marked done with the same fingerprint (source + settings) is skipped. Starting
a camera claims it for this process (app/store_claims.py): two processes never write one camera at once, in
either backend.
"""

from __future__ import annotations

import json
import sqlite3
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

import numpy as np

from tracklink import TracklinkError
from tracklink.app.records import Identity, Track, Tracklet
from tracklink.app.store_claims import (DEFAULT_CLAIM_TIMEOUT_S, check_takeover, default_owner, local_owner_gone,
                                        lost_claims_error)

SCHEMA_VERSION = 2
LINK_THRESHOLD_KEY = "link_threshold"  # meta: the threshold batch last linked with; `tracklink link` reuses it


@dataclass(frozen=True)
class CameraRecord:
    name: str
    source: str  # redacted: never holds credentials
    fingerprint: str  # source identity + settings; a change means the stored rows are stale
    status: str  # "running" | "done" | "error"
    frames: int = 0
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    error: str = ""


@dataclass(frozen=True)
class Appearance:
    """One stored box, with the global id of its tracklet (None until linked)."""

    camera: str
    frame: int
    timestamp: float
    track_id: int
    xyxy: tuple[float, float, float, float]
    confidence: float
    global_id: int | None


class Store(ABC):
    """What the pipeline and the front ends need from storage; keyed by camera name and track id."""

    @abstractmethod
    def camera(self, name: str) -> CameraRecord | None: ...

    @abstractmethod
    def cameras(self) -> list[CameraRecord]: ...

    @abstractmethod
    def start_camera(self, record: CameraRecord) -> None:
        """Claim the camera for this process, then begin (or restart) it: its earlier rows, if any, are removed."""

    @abstractmethod
    def finish_camera(self, name: str, status: str, frames: int, error: str = "") -> None:
        """Record the camera's end and release this process's claim on it."""

    # one writer per camera -------------------------------------------------------------------------------

    @abstractmethod
    def claim_camera(self, name: str, owner: str | None = None, timeout_s: float | None = None) -> None:
        """Make `owner` (default: this store's) the camera's only writer; raises TracklinkError naming the
        current owner while that one is alive and its heartbeat younger than `timeout_s`."""

    @abstractmethod
    def heartbeat(self) -> None:
        """Tell other processes that this store's claims are alive."""

    @abstractmethod
    def release_camera(self, name: str) -> None: ...

    @abstractmethod
    def allocate_global_ids(self, n: int) -> list[int]:
        """`n` global ids that no process using this store has had or will get again."""

    # small settings shared by the runs on one store (e.g. the link threshold batch used) -----------------

    @abstractmethod
    def meta(self, key: str) -> str | None: ...

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    @abstractmethod
    def add_appearances(self, tracks: Sequence[Track]) -> None: ...

    @abstractmethod
    def put_tracklets(self, tracklets: Iterable[Tracklet]) -> None:
        """Insert or update tracklets with their pooled embedding and current global id."""

    @abstractmethod
    def tracklets(self, camera: str | None = None) -> list[Tracklet]: ...

    @abstractmethod
    def set_global_ids(self, mapping: dict[str, int]) -> None:
        """Relabel tracklets ({tracklet.key: global id}), e.g. after batch clustering; later
        `allocate_global_ids` calls return only ids above these."""

    @abstractmethod
    def put_identities(self, identities: Iterable[Identity], replace_all: bool = False) -> None: ...

    @abstractmethod
    def begin_relink(self) -> None:
        """Until the next commit, be the only process re-linking this store: a re-link reads every tracklet
        and rewrites the global ids as one step, so the last of two concurrent ones sees all of the first.
        Other writers are not held up while it clusters."""

    @abstractmethod
    def identities(self) -> list[dict]: ...

    @abstractmethod
    def appearances(self, camera: str) -> Iterator[Appearance]:
        """A camera's boxes, ordered by frame then track id."""

    def commit_due(self) -> bool:
        """Whether the last commit is older than the commit interval: the one clock that bounds what a kill
        can lose (the pipeline flushes its pending rows when this says so). Backends keep `_last_commit`
        (monotonic seconds) and `commit_interval`."""
        return time.monotonic() - self._last_commit >= self.commit_interval

    def maybe_commit(self) -> None:
        """Commit if the last commit is older than the interval."""
        if self.commit_due():
            self.commit()

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cameras (
    name TEXT PRIMARY KEY, source TEXT NOT NULL, fingerprint TEXT NOT NULL, status TEXT NOT NULL,
    frames INTEGER NOT NULL DEFAULT 0, fps REAL, width INTEGER, height INTEGER, error TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tracklets (
    camera TEXT NOT NULL REFERENCES cameras(name) ON DELETE CASCADE, track_id INTEGER NOT NULL,
    first_frame INTEGER NOT NULL, last_frame INTEGER NOT NULL, start_time REAL NOT NULL, end_time REAL NOT NULL,
    num_boxes INTEGER NOT NULL, num_embeddings INTEGER NOT NULL, global_id INTEGER, ended INTEGER NOT NULL,
    PRIMARY KEY (camera, track_id));
CREATE TABLE IF NOT EXISTS embeddings (
    camera TEXT NOT NULL, track_id INTEGER NOT NULL, dim INTEGER NOT NULL,
    feature_sum BLOB NOT NULL,  -- float32 sum of the normalised frame embeddings (the mean is its direction)
    PRIMARY KEY (camera, track_id),
    FOREIGN KEY (camera, track_id) REFERENCES tracklets(camera, track_id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS identities (
    global_id INTEGER PRIMARY KEY, num_tracklets INTEGER NOT NULL, cameras TEXT NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS appearances (
    camera TEXT NOT NULL REFERENCES cameras(name) ON DELETE CASCADE, frame INTEGER NOT NULL,
    track_id INTEGER NOT NULL, timestamp REAL NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL, confidence REAL NOT NULL,
    PRIMARY KEY (camera, frame, track_id));
CREATE INDEX IF NOT EXISTS appearances_track ON appearances (camera, track_id);
CREATE INDEX IF NOT EXISTS tracklets_global ON tracklets (global_id);
"""

# Schema version -> what it adds to the one before; a store records its version in meta('schema').
_MIGRATIONS: dict[int, str] = {
    2: """
CREATE TABLE IF NOT EXISTS claims (camera TEXT PRIMARY KEY, owner TEXT NOT NULL, heartbeat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS id_counter (singleton INTEGER PRIMARY KEY CHECK (singleton = 1), next INTEGER NOT NULL);
INSERT OR IGNORE INTO id_counter VALUES (1, 1 + MAX((SELECT COALESCE(MAX(global_id), 0) FROM tracklets),
                                                   (SELECT COALESCE(MAX(global_id), 0) FROM identities)));
""",
}


class SqliteStore(Store):
    """SQLite in WAL mode; one writer (the pipeline), any number of readers."""

    def __init__(self, path: str | Path, commit_interval: float = 1.0, owner: str | None = None,
                 claim_timeout: float = DEFAULT_CLAIM_TIMEOUT_S):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = self._open(self.path)
        except sqlite3.DatabaseError as exc:
            raise TracklinkError(f"cannot open the store {self.path}: {exc}; delete it or choose another --out") \
                from None
        self.commit_interval = commit_interval
        self._last_commit = time.monotonic()
        self.owner, self.claim_timeout = owner or default_owner(), claim_timeout
        self._claimed: set[str] = set()
        self._lost: set[str] = set()  # cameras another process took over while this one was silent
        self._relink_lock: IO | None = None  # held from `begin_relink` to the next commit
        self._last_heartbeat = time.monotonic()

    def _open(self, path: Path, wait_s: float = 30.0) -> sqlite3.Connection:
        """Connect, switch to WAL and migrate. Two processes creating one new store at once: switching the
        journal mode takes the file exclusively and does not wait for SQLite's busy timeout, so the later
        process waits for the earlier one here instead of failing with "database is locked"."""
        deadline = time.monotonic() + wait_s
        while True:
            db = sqlite3.connect(str(path), timeout=10.0)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at each checkpoint, fast commits
                db.execute("PRAGMA foreign_keys=ON")
                self.db = db
                self._migrate()
                return db
            except sqlite3.OperationalError as exc:
                db.close()
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION, one recorded step at a time (version 1 is `_SCHEMA`)."""
        self.db.executescript(_SCHEMA)
        row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        version = int(row[0]) if row else 1
        if version > SCHEMA_VERSION:
            raise TracklinkError(f"{self.path} has store schema {version}, this tracklink writes {SCHEMA_VERSION}; "
                                 "upgrade tracklink or use a new output folder")
        for step in sorted(v for v in _MIGRATIONS if v > version):
            self.db.executescript(_MIGRATIONS[step])
        self.db.execute("INSERT INTO meta VALUES ('schema', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (str(SCHEMA_VERSION),))
        self.db.commit()

    # cameras ---------------------------------------------------------------------------------------------

    def camera(self, name: str) -> CameraRecord | None:
        row = self.db.execute("SELECT name, source, fingerprint, status, frames, fps, width, height, error "
                              "FROM cameras WHERE name=?", (name,)).fetchone()
        return CameraRecord(*row) if row else None

    def cameras(self) -> list[CameraRecord]:
        rows = self.db.execute("SELECT name, source, fingerprint, status, frames, fps, width, height, error "
                               "FROM cameras ORDER BY name").fetchall()
        return [CameraRecord(*r) for r in rows]

    def start_camera(self, record: CameraRecord) -> None:
        with self.db:  # one transaction: the claim is taken, the old rows vanish and the camera restarts together
            self._claim(record.name, self.owner, self.claim_timeout)
            self.db.execute("DELETE FROM appearances WHERE camera=?", (record.name,))
            self.db.execute("DELETE FROM embeddings WHERE camera=?", (record.name,))
            self.db.execute("DELETE FROM tracklets WHERE camera=?", (record.name,))
            self.db.execute(
                "INSERT INTO cameras (name, source, fingerprint, status, frames, fps, width, height, error, updated) "
                "VALUES (?, ?, ?, 'running', 0, ?, ?, ?, '', ?) ON CONFLICT(name) DO UPDATE SET "
                "source=excluded.source, fingerprint=excluded.fingerprint, status='running', frames=0, "
                "fps=excluded.fps, width=excluded.width, height=excluded.height, error='', updated=excluded.updated",
                (record.name, record.source, record.fingerprint, record.fps, record.width, record.height, time.time()))
        self._last_commit = time.monotonic()

    def finish_camera(self, name: str, status: str, frames: int, error: str = "") -> None:
        self.db.execute("UPDATE cameras SET status=?, frames=?, error=?, updated=? WHERE name=?",
                        (status, frames, error, time.time(), name))
        self.release_camera(name)
        self.commit()

    # one writer per camera -------------------------------------------------------------------------------

    def claim_camera(self, name: str, owner: str | None = None, timeout_s: float | None = None) -> None:
        with self.db:
            self._claim(name, owner or self.owner, self.claim_timeout if timeout_s is None else timeout_s)

    def _claim(self, name: str, owner: str, timeout_s: float) -> None:
        # A write first: it takes SQLite's write lock, so the read and the decision below are not raced.
        self.db.execute("INSERT OR IGNORE INTO claims VALUES (?, ?, ?)", (name, owner, time.time()))
        holder, beat = self.db.execute("SELECT owner, heartbeat FROM claims WHERE camera=?", (name,)).fetchone()
        if holder != owner:
            check_takeover(name, holder, time.time() - beat, timeout_s, local_owner_gone(holder))
        self.db.execute("UPDATE claims SET owner=?, heartbeat=? WHERE camera=?", (owner, time.time(), name))
        if owner == self.owner:
            self._claimed.add(name)
            self._lost.discard(name)

    def heartbeat(self) -> None:
        self._beat()
        if not self._lost:  # with a camera lost, its pending rows must not land: the next commit refuses them
            self.commit()

    def _beat(self) -> None:
        for name in self._claimed - self._lost:
            if self.db.execute("UPDATE claims SET heartbeat=? WHERE camera=? AND owner=?",
                               (time.time(), name, self.owner)).rowcount == 0:
                self._lost.add(name)
        self._last_heartbeat = time.monotonic()

    def release_camera(self, name: str) -> None:
        self.db.execute("DELETE FROM claims WHERE camera=? AND owner=?", (name, self.owner))
        self._claimed.discard(name)

    def allocate_global_ids(self, n: int) -> list[int]:
        if n < 1:
            return []
        # The counter row stays write-locked until this connection commits: no other process reads it before.
        first = self.db.execute("UPDATE id_counter SET next = next + ? RETURNING next - ?", (n, n)).fetchall()[0][0]
        return list(range(first, first + n))

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (key, str(value)))

    # rows ------------------------------------------------------------------------------------------------

    def add_appearances(self, tracks: Sequence[Track]) -> None:
        self.db.executemany(
            "INSERT INTO appearances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(camera, frame, track_id) DO "
            "UPDATE SET timestamp=excluded.timestamp, x1=excluded.x1, y1=excluded.y1, x2=excluded.x2, "
            "y2=excluded.y2, confidence=excluded.confidence",
            [(t.camera, t.frame, t.track_id, t.timestamp, *map(float, t.xyxy), float(t.confidence)) for t in tracks])

    def put_tracklets(self, tracklets: Iterable[Tracklet]) -> None:
        tracklets = list(tracklets)
        self.db.executemany(
            "INSERT INTO tracklets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(camera, track_id) DO UPDATE SET "
            "first_frame=excluded.first_frame, last_frame=excluded.last_frame, start_time=excluded.start_time, "
            "end_time=excluded.end_time, num_boxes=excluded.num_boxes, num_embeddings=excluded.num_embeddings, "
            "global_id=excluded.global_id, ended=excluded.ended",
            tracklet_rows(tracklets))
        self.db.executemany(
            "INSERT INTO embeddings VALUES (?, ?, ?, ?) ON CONFLICT(camera, track_id) DO UPDATE SET "
            "dim=excluded.dim, feature_sum=excluded.feature_sum", embedding_rows(tracklets))

    def tracklets(self, camera: str | None = None) -> list[Tracklet]:
        return [tracklet_from_row(r) for r in self.db.execute(*tracklets_query("?", camera)).fetchall()]

    def set_global_ids(self, mapping: dict[str, int]) -> None:
        rows = global_id_rows(mapping)
        self.db.executemany("UPDATE tracklets SET global_id=? WHERE camera=? AND track_id=?", rows)
        if rows:
            self.db.execute("UPDATE id_counter SET next = MAX(next, ?)", (max(r[0] for r in rows) + 1,))

    def put_identities(self, identities: Iterable[Identity], replace_all: bool = False) -> None:
        if replace_all:
            self.db.execute("DELETE FROM identities")
        self.db.executemany(
            "INSERT INTO identities VALUES (?, ?, ?, ?, ?) ON CONFLICT(global_id) DO UPDATE SET "
            "num_tracklets=excluded.num_tracklets, cameras=excluded.cameras, first_seen=excluded.first_seen, "
            "last_seen=excluded.last_seen",
            [(i.global_id, len(i.members), json.dumps(i.cameras), i.first_seen, i.last_seen)
             for i in identities if i.members])

    def begin_relink(self) -> None:
        # A lock file, not SQLite's one write lock: held through a long clustering, that would stall every
        # other writer of the file (a viewer) past its busy timeout.
        import fcntl

        if self._relink_lock is None:
            self._relink_lock = open(self.path.with_name(self.path.name + ".relink.lock"), "a")
            fcntl.flock(self._relink_lock, fcntl.LOCK_EX)

    def _end_relink(self) -> None:
        if self._relink_lock is not None:
            self._relink_lock.close()  # closing the file releases its lock
            self._relink_lock = None

    def identities(self) -> list[dict]:
        rows = self.db.execute("SELECT global_id, num_tracklets, cameras, first_seen, last_seen FROM identities "
                               "ORDER BY global_id").fetchall()
        return [{"global_id": g, "tracklets": n, "cameras": json.loads(c), "first_seen": a, "last_seen": b}
                for g, n, c, a, b in rows]

    def appearances(self, camera: str) -> Iterator[Appearance]:
        for row in self.db.execute(appearances_query("?"), (camera,)):
            yield appearance_from_row(row)

    # transactions ----------------------------------------------------------------------------------------

    def commit(self) -> None:
        if self._claimed and time.monotonic() - self._last_heartbeat >= self.claim_timeout / 3:
            self._beat()
        if self._lost:
            self.db.rollback()
            self._end_relink()
            raise lost_claims_error(self._lost)
        self.db.commit()
        self._end_relink()
        self._last_commit = time.monotonic()

    def close(self) -> None:
        try:
            if self._lost:  # another process writes those cameras now: nothing pending may land
                self.db.rollback()
            else:
                for name in list(self._claimed):  # an unfinished camera resumes on the next run, from any process
                    self.release_camera(name)
                self.db.commit()
        finally:
            self._end_relink()
            self.db.close()



# Rows of the tables both backends share, built and read in one place (the SQL differs only in placeholders).

def tracklet_rows(tracklets: Sequence[Tracklet]) -> list[tuple]:
    return [(t.camera, t.track_id, t.first_frame, t.last_frame, t.start_time, t.end_time, t.num_boxes,
             t.num_embeddings, t.global_id, bool(t.ended)) for t in tracklets]


def embedding_rows(tracklets: Sequence[Tracklet]) -> list[tuple]:
    return [(t.camera, t.track_id, int(t.feature_sum.size), np.asarray(t.feature_sum, np.float32).tobytes())
            for t in tracklets if t.feature_sum is not None]


def tracklets_query(placeholder: str, camera: str | None) -> tuple[str, tuple]:
    """The SELECT of `Store.tracklets` for a backend's parameter placeholder ("?" or "%s")."""
    sql = ("SELECT t.camera, t.track_id, t.first_frame, t.last_frame, t.start_time, t.end_time, t.num_boxes, "
           "t.num_embeddings, t.global_id, t.ended, e.feature_sum FROM tracklets t LEFT JOIN embeddings e "
           "ON e.camera=t.camera AND e.track_id=t.track_id")
    sql += (f" WHERE t.camera={placeholder}" if camera else "") + " ORDER BY t.camera, t.track_id"
    return sql, ((camera,) if camera else ())


def tracklet_from_row(row: Sequence) -> Tracklet:
    cam, tid, f0, f1, t0, t1, boxes, n_emb, gid, ended, blob = row
    feature = np.frombuffer(blob, np.float32).copy() if blob is not None else None
    return Tracklet(cam, tid, f0, f1, t0, t1, feature, n_emb if feature is not None else 0, boxes, gid, bool(ended))


def appearances_query(placeholder: str) -> str:
    """The SELECT of `Store.appearances` (one camera's boxes with their global ids, by frame)."""
    return ("SELECT a.camera, a.frame, a.timestamp, a.track_id, a.x1, a.y1, a.x2, a.y2, a.confidence, t.global_id "
            "FROM appearances a LEFT JOIN tracklets t ON t.camera=a.camera AND t.track_id=a.track_id "
            f"WHERE a.camera={placeholder} ORDER BY a.frame, a.track_id")


def appearance_from_row(row: Sequence) -> Appearance:
    cam, frame, ts, tid, x1, y1, x2, y2, conf, gid = row
    return Appearance(cam, frame, ts, tid, (x1, y1, x2, y2), conf, gid)


def global_id_rows(mapping: dict[str, int]) -> list[tuple[int, str, int]]:
    """(global id, camera, track id) per tracklet key, for the UPDATE of `Store.set_global_ids`."""
    rows = []
    for key, gid in mapping.items():
        camera, _, track_id = key.rpartition("/")
        rows.append((int(gid), camera, int(track_id)))
    return rows


def is_server_url(url: str | Path) -> bool:
    return str(url).startswith(("postgres://", "postgresql://"))


def open_store(url: str | Path, **options) -> Store:
    """A store from a path (SQLite) or a `postgresql://user@host:port/db` URL; `options` go to its constructor."""
    if is_server_url(url):
        from tracklink.app.store_postgres import PostgresStore  # psycopg only where a server is used

        return PostgresStore(str(url), **options)
    return SqliteStore(str(url), **options)


__all__ = ["Appearance", "CameraRecord", "LINK_THRESHOLD_KEY", "SqliteStore", "Store", "appearance_from_row",
           "appearances_query", "embedding_rows", "global_id_rows",
           "is_server_url", "tracklet_from_row", "tracklet_rows", "tracklets_query",
           "open_store"]
