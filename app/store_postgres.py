"""The store on a PostgreSQL server, for many machines writing one site's cameras into one place.

Same tables and guarantees as `SqliteStore` (natural keys, upserts, a camera restart replaces its rows, a
commit at least every `commit_interval` seconds). What a server adds:
- one writer per camera across machines: a claims row with the owner, its server connection and a heartbeat
  that a background thread refreshes; a killed writer's connection closes, so its camera resumes at once;
- global ids minted once across processes, from a counter row updated in its own short transaction;
- versioned schema migrations, applied under an advisory lock so that nodes starting together agree.
Embeddings are `bytea` (float32 sums): Debian's PostgreSQL has no pgvector, and search runs in-process.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Iterable, Iterator, Sequence

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from tracklink import TracklinkError
from tracklink.app.records import Identity, Track, Tracklet
from tracklink.app.sources import redact
from tracklink.app.store import (Appearance, CameraRecord, Store, appearance_from_row, appearances_query, embedding_rows,
                                 global_id_rows, tracklet_from_row, tracklet_rows, tracklets_query)
from tracklink.app.store_claims import DEFAULT_CLAIM_TIMEOUT_S, check_takeover, default_owner, lost_claims_error

log = logging.getLogger(__name__)

# Advisory lock keys (any fixed 64-bit numbers, unique to tracklink within a database).
_MIGRATION_LOCK = 0x7472_6B6C_0001
_IDENTITIES_LOCK = 0x7472_6B6C_0002  # writers replace the identities table one at a time: no deadlock between them
_RELINK_LOCK = 0x7472_6B6C_0003  # one re-link of the whole store at a time
_MAX_PENDING_ROWS = 50_000  # appearance rows held in memory at most before they are sent anyway

_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE cameras (
    name TEXT PRIMARY KEY, source TEXT NOT NULL, fingerprint TEXT NOT NULL, status TEXT NOT NULL,
    frames INTEGER NOT NULL DEFAULT 0, fps DOUBLE PRECISION, width INTEGER, height INTEGER,
    error TEXT NOT NULL DEFAULT '', updated TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE TABLE tracklets (
    camera TEXT NOT NULL REFERENCES cameras(name) ON DELETE CASCADE, track_id INTEGER NOT NULL,
    first_frame INTEGER NOT NULL, last_frame INTEGER NOT NULL, start_time DOUBLE PRECISION NOT NULL,
    end_time DOUBLE PRECISION NOT NULL, num_boxes INTEGER NOT NULL, num_embeddings INTEGER NOT NULL,
    global_id BIGINT, ended BOOLEAN NOT NULL, PRIMARY KEY (camera, track_id));
CREATE TABLE embeddings (
    camera TEXT NOT NULL, track_id INTEGER NOT NULL, dim INTEGER NOT NULL,
    feature_sum BYTEA NOT NULL,  -- float32 sum of the normalised frame embeddings (the mean is its direction)
    PRIMARY KEY (camera, track_id),
    FOREIGN KEY (camera, track_id) REFERENCES tracklets(camera, track_id) ON DELETE CASCADE);
CREATE TABLE identities (
    global_id BIGINT PRIMARY KEY, num_tracklets INTEGER NOT NULL, cameras TEXT NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL);
CREATE TABLE appearances (
    camera TEXT NOT NULL REFERENCES cameras(name) ON DELETE CASCADE, frame INTEGER NOT NULL,
    track_id INTEGER NOT NULL, timestamp DOUBLE PRECISION NOT NULL,
    x1 DOUBLE PRECISION NOT NULL, y1 DOUBLE PRECISION NOT NULL, x2 DOUBLE PRECISION NOT NULL,
    y2 DOUBLE PRECISION NOT NULL, confidence DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (camera, frame, track_id));
CREATE INDEX appearances_track ON appearances (camera, track_id);
CREATE INDEX tracklets_global ON tracklets (global_id);
-- The writer of each camera: its server connection (pid + start) tells whether it still lives.
CREATE TABLE claims (
    camera TEXT PRIMARY KEY, owner TEXT NOT NULL, backend_pid INTEGER NOT NULL,
    backend_start TIMESTAMPTZ NOT NULL, heartbeat TIMESTAMPTZ NOT NULL);
CREATE TABLE id_counter (singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton), next BIGINT NOT NULL);
INSERT INTO id_counter VALUES (TRUE, 1);
"""

# (version, what it does, SQL): applied in order, each recorded in schema_migrations. Append; never edit.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "cameras, tracklets, embeddings, identities, appearances, claims, global id counter", _V1),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def migrate(conn: psycopg.Connection) -> int:
    """Apply the migrations this database lacks; returns its version. Safe when many nodes start at once."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                     "description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise TracklinkError(f"the store has schema {current}, this tracklink writes {SCHEMA_VERSION}; "
                                 "upgrade tracklink on this machine")
        for version, description, sql in MIGRATIONS:
            if version > current:
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations (version, description) VALUES (%s, %s)",
                             (version, description))
    return SCHEMA_VERSION


class PostgresStore(Store):
    """A store on a PostgreSQL server; one writing process per camera, any number of readers and nodes."""

    def __init__(self, url: str, commit_interval: float = 1.0, owner: str | None = None,
                 claim_timeout: float = DEFAULT_CLAIM_TIMEOUT_S, connect_timeout: float = 10.0):
        self.url = url
        self.commit_interval, self.claim_timeout = commit_interval, claim_timeout
        self.owner = owner or default_owner()
        self.pool = ConnectionPool(url, min_size=1, max_size=3, open=False, name="tracklink-store")
        try:
            # One direct attempt first: it fails at once and in the server's words, where the pool would
            # retry in the background until its timeout and then say only that it timed out.
            psycopg.connect(url, connect_timeout=max(1, round(connect_timeout))).close()
            self.pool.open(wait=True, timeout=connect_timeout)
            self.db = self.pool.getconn()  # the writer's: its transaction spans calls until `commit`
            migrate(self.db)
        except (PoolTimeout, psycopg.Error) as exc:
            self.pool.close()
            reason = redact(" ".join(str(exc).split())) or type(exc).__name__
            raise TracklinkError(f"cannot open the store {redact(url)}: {reason}; "
                                 "check the server, the database name and the user") from None
        self._claimed: set[str] = set()
        self._lost: set[str] = set()  # cameras another process took over while this one was silent
        self._claims_lock = threading.Lock()  # the heartbeat thread reads both sets while the writer changes them
        self._pending: dict[tuple[str, int, int], tuple[float, ...]] = {}  # appearance rows not yet sent
        self._last_commit = time.monotonic()
        self._stop = threading.Event()
        self._beater = threading.Thread(target=self._beat_forever, name="tracklink-store-heartbeat", daemon=True)
        self._beater.start()

    # cameras ---------------------------------------------------------------------------------------------

    _CAMERA_COLUMNS = "name, source, fingerprint, status, frames, fps, width, height, error"

    def camera(self, name: str) -> CameraRecord | None:
        row = self.db.execute(f"SELECT {self._CAMERA_COLUMNS} FROM cameras WHERE name=%s", (name,)).fetchone()
        return CameraRecord(*row) if row else None

    def cameras(self) -> list[CameraRecord]:
        rows = self.db.execute(f"SELECT {self._CAMERA_COLUMNS} FROM cameras ORDER BY name").fetchall()
        return [CameraRecord(*r) for r in rows]

    def start_camera(self, record: CameraRecord) -> None:
        self._send_appearances()  # rows added before a restart are removed by it, as in one SQLite transaction
        with self.db.transaction():  # the claim is taken, the old rows vanish and the camera restarts together
            self._claim(record.name, self.owner, self.claim_timeout)
            for table in ("appearances", "embeddings", "tracklets"):
                self.db.execute(f"DELETE FROM {table} WHERE camera=%s", (record.name,))
            self.db.execute(
                "INSERT INTO cameras (name, source, fingerprint, status, frames, fps, width, height, error, updated) "
                "VALUES (%s, %s, %s, 'running', 0, %s, %s, %s, '', now()) ON CONFLICT (name) DO UPDATE SET "
                "source=excluded.source, fingerprint=excluded.fingerprint, status='running', frames=0, "
                "fps=excluded.fps, width=excluded.width, height=excluded.height, error='', updated=now()",
                (record.name, record.source, record.fingerprint, record.fps, record.width, record.height))
        self.commit()

    def finish_camera(self, name: str, status: str, frames: int, error: str = "") -> None:
        self.db.execute("UPDATE cameras SET status=%s, frames=%s, error=%s, updated=now() WHERE name=%s",
                        (status, frames, error, name))
        self._release(name)
        self.commit()

    # one writer per camera -------------------------------------------------------------------------------

    def claim_camera(self, name: str, owner: str | None = None, timeout_s: float | None = None) -> None:
        with self.db.transaction():
            self._claim(name, owner or self.owner, self.claim_timeout if timeout_s is None else timeout_s)
        self.commit()

    def _claim(self, name: str, owner: str, timeout_s: float) -> None:
        # Insert-or-lock: the row lock serialises two claimers; the loser sees the winner's committed row.
        # pg_stat_activity is a snapshot taken once per transaction: drop it, so a writer that died since is seen.
        self.db.execute("SELECT pg_stat_clear_snapshot()")
        self.db.execute(
            "INSERT INTO claims SELECT %s, %s, pid, backend_start, clock_timestamp() FROM pg_stat_activity "
            "WHERE pid = pg_backend_pid() ON CONFLICT (camera) DO NOTHING", (name, owner))
        # A session of another role shows its pid but a NULL start: then it counts as alive (the heartbeat decides).
        holder, age, alive = self.db.execute(
            "SELECT owner, EXTRACT(EPOCH FROM clock_timestamp() - heartbeat)::float8, EXISTS (SELECT 1 FROM "
            "pg_stat_activity a WHERE a.pid = c.backend_pid AND (a.backend_start = c.backend_start OR "
            "a.backend_start IS NULL)) FROM claims c WHERE camera=%s FOR UPDATE", (name,)).fetchone()
        if holder != owner:
            check_takeover(name, holder, age, timeout_s, holder_gone=not alive)
        self.db.execute(
            "UPDATE claims SET owner=%s, backend_pid=a.pid, backend_start=a.backend_start, "
            "heartbeat=clock_timestamp() FROM pg_stat_activity a WHERE a.pid = pg_backend_pid() AND camera=%s",
            (owner, name))
        if owner == self.owner:
            with self._claims_lock:
                self._claimed.add(name)
                self._lost.discard(name)

    def heartbeat(self) -> None:
        with self._claims_lock:
            claimed = sorted(self._claimed)
        if not claimed:
            return
        with self.pool.connection() as conn:  # its own connection: the writer's open transaction does not delay it
            kept = conn.execute("UPDATE claims SET heartbeat=clock_timestamp() WHERE owner=%s AND camera = ANY(%s) "
                                "RETURNING camera", (self.owner, claimed)).fetchall()
        with self._claims_lock:
            self._lost.update(set(claimed) & self._claimed - {row[0] for row in kept})

    def _beat_forever(self) -> None:
        while not self._stop.wait(self.claim_timeout / 3):
            try:
                self.heartbeat()
            except Exception as exc:  # noqa: BLE001  the next beat retries; a claim ages out only if all fail
                log.warning("store heartbeat failed: %s", redact(str(exc)))

    def release_camera(self, name: str) -> None:
        self._release(name)
        self.commit()

    def _release(self, name: str) -> None:
        self.db.execute("DELETE FROM claims WHERE camera=%s AND owner=%s", (name, self.owner))
        with self._claims_lock:
            self._claimed.discard(name)

    def allocate_global_ids(self, n: int) -> list[int]:
        if n < 1:
            return []
        # Its own short transaction: the counter row is locked for one statement, and the ids stay spent
        # even if the writer's transaction is later rolled back (a gap, never a duplicate).
        with self.pool.connection() as conn:
            first = conn.execute("UPDATE id_counter SET next = next + %s RETURNING next - %s", (n, n)).fetchone()[0]
        return list(range(first, first + n))

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=%s", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                        (key, str(value)))

    # rows ------------------------------------------------------------------------------------------------

    def add_appearances(self, tracks: Sequence[Track]) -> None:
        # Held until the next commit (or read), then sent at once by COPY: 52k rows/s on our 2-core machine
        # against 23k with one executemany per frame (bench/store_backends.py). A later row with the same key
        # replaces an earlier one, as the upsert does.
        for t in tracks:
            self._pending[(t.camera, t.frame, t.track_id)] = (t.timestamp, *map(float, t.xyxy), float(t.confidence))
        if len(self._pending) >= _MAX_PENDING_ROWS:
            self._send_appearances()

    def _send_appearances(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, {}
        # COPY into a per-session staging table, then one upsert: COPY is the protocol's bulk path.
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS appearances_in (LIKE appearances) ON COMMIT DELETE ROWS")
        with self.db.cursor() as cur:
            with cur.copy("COPY appearances_in FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text", "int4", "int4", "float8", "float8", "float8", "float8", "float8", "float8"])
                for key, value in rows.items():
                    copy.write_row(key + value)
            cur.execute(
                "INSERT INTO appearances SELECT * FROM appearances_in ON CONFLICT (camera, frame, track_id) DO UPDATE "
                "SET timestamp=excluded.timestamp, x1=excluded.x1, y1=excluded.y1, x2=excluded.x2, y2=excluded.y2, "
                "confidence=excluded.confidence")
            cur.execute("TRUNCATE appearances_in")

    def put_tracklets(self, tracklets: Iterable[Tracklet]) -> None:
        tracklets = list(tracklets)
        if not tracklets:
            return
        with self.db.cursor() as cur:
            cur.executemany(
                "INSERT INTO tracklets VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (camera, track_id) DO UPDATE SET first_frame=excluded.first_frame, "
                "last_frame=excluded.last_frame, start_time=excluded.start_time, end_time=excluded.end_time, "
                "num_boxes=excluded.num_boxes, num_embeddings=excluded.num_embeddings, "
                "global_id=excluded.global_id, ended=excluded.ended",
                tracklet_rows(tracklets))
            cur.executemany(
                "INSERT INTO embeddings VALUES (%s, %s, %s, %s) ON CONFLICT (camera, track_id) DO UPDATE SET "
                "dim=excluded.dim, feature_sum=excluded.feature_sum", embedding_rows(tracklets))

    def tracklets(self, camera: str | None = None) -> list[Tracklet]:
        return [tracklet_from_row(r) for r in self.db.execute(*tracklets_query("%s", camera)).fetchall()]

    def set_global_ids(self, mapping: dict[str, int]) -> None:
        rows = global_id_rows(mapping)
        if not rows:
            return
        with self.db.cursor() as cur:
            cur.executemany("UPDATE tracklets SET global_id=%s WHERE camera=%s AND track_id=%s", rows)
        with self.pool.connection() as conn:  # ids handed out here are never allocated again
            conn.execute("UPDATE id_counter SET next = GREATEST(next, %s)", (max(r[0] for r in rows) + 1,))

    def begin_relink(self) -> None:
        # Its own lock, held until this commit: writers wait for the identities lock below only while the
        # re-link writes, not while it clusters.
        self.db.execute("SELECT pg_advisory_xact_lock(%s)", (_RELINK_LOCK,))

    def put_identities(self, identities: Iterable[Identity], replace_all: bool = False) -> None:
        self.db.execute("SELECT pg_advisory_xact_lock(%s)", (_IDENTITIES_LOCK,))  # held until this commit
        if replace_all:
            self.db.execute("DELETE FROM identities")
        rows = [(i.global_id, len(i.members), json.dumps(i.cameras), i.first_seen, i.last_seen)
                for i in identities if i.members]
        if rows:
            with self.db.cursor() as cur:
                cur.executemany(
                    "INSERT INTO identities VALUES (%s, %s, %s, %s, %s) ON CONFLICT (global_id) DO UPDATE SET "
                    "num_tracklets=excluded.num_tracklets, cameras=excluded.cameras, "
                    "first_seen=excluded.first_seen, last_seen=excluded.last_seen", rows)

    def identities(self) -> list[dict]:
        rows = self.db.execute("SELECT global_id, num_tracklets, cameras, first_seen, last_seen FROM identities "
                               "ORDER BY global_id").fetchall()
        return [{"global_id": g, "tracklets": n, "cameras": json.loads(c), "first_seen": a, "last_seen": b}
                for g, n, c, a, b in rows]

    def appearances(self, camera: str) -> Iterator[Appearance]:
        self._send_appearances()
        # A server-side cursor: a camera of a few million boxes streams instead of loading at once.
        with self.db.cursor(name=f"appearances_{id(self)}_{time.monotonic_ns()}") as cur:
            cur.itersize = 20_000
            cur.execute(appearances_query("%s"), (camera,))
            for row in cur:
                yield appearance_from_row(row)

    # transactions ----------------------------------------------------------------------------------------

    def commit(self) -> None:
        if self._lost:
            self._pending.clear()
            self.db.rollback()
            raise lost_claims_error(self._lost)
        try:
            self._send_appearances()
            self.db.commit()
        except psycopg.OperationalError as exc:
            raise TracklinkError(f"lost the store {redact(self.url)}: {exc}; run again to resume") from None
        self._last_commit = time.monotonic()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        try:
            if self._lost:  # another process writes those cameras now: nothing pending may land
                self._pending.clear()
                self.db.rollback()
            elif not self.db.closed:
                for name in list(self._claimed):  # an unfinished camera resumes on the next run, from any node
                    self._release(name)
                self._send_appearances()
                self.db.commit()
        finally:
            self.pool.putconn(self.db)
            self.pool.close()


__all__ = ["MIGRATIONS", "PostgresStore", "SCHEMA_VERSION", "migrate"]
