"""Many writers, one truth, on a real PostgreSQL server (and the same guarantees from SQLite): one writer per
camera with takeover, global ids minted once across processes, a killed writer's camera resuming, migrations."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

from fixtures_postgres import postgres_server, postgres_url, store_url  # noqa: F401  (pytest fixtures)
from test_store import make_track, tracklet_of
from tracklink import TracklinkError
from tracklink.app.store import CameraRecord, open_store
from tracklink.app.store_postgres import SCHEMA_VERSION, PostgresStore


def camera(name: str) -> CameraRecord:
    return CameraRecord(name, f"{name}.mp4", "fp", "running")


def test_second_writer_is_refused_then_takes_over_a_silent_one(store_url: str):
    first = open_store(store_url, owner="node-a:101")
    first.start_camera(camera("hall"))
    first.add_appearances([make_track("hall", 1, 1)])
    first.commit()
    second = open_store(store_url, owner="node-b:202")
    with pytest.raises(TracklinkError, match=r"camera 'hall' is being written by node-a:101 \(last heartbeat"):
        second.start_camera(camera("hall"))
    assert len(list(second.appearances("hall"))) == 1  # the refused start removed nothing
    second.start_camera(camera("gate"))  # other cameras are free

    time.sleep(0.3)  # node-a stays silent longer than the timeout below
    second.claim_camera("hall", timeout_s=0.2)
    second.start_camera(camera("hall"))
    assert list(second.appearances("hall")) == []  # the restart replaced node-a's partial rows

    # node-a comes back: it hears that it lost the camera, and its pending rows never land.
    first.add_appearances([make_track("hall", 2, 1)])
    first.heartbeat()
    with pytest.raises(TracklinkError, match="camera hall was taken over by another process"):
        first.commit()
    first.close()
    second.add_appearances([make_track("hall", 5, 3)])
    second.commit()
    assert [(a.frame, a.track_id) for a in second.appearances("hall")] == [(5, 3)]

    # Finishing releases the claim: a third node may redo the camera at once.
    second.finish_camera("hall", "done", 5)
    second.close()
    third = open_store(store_url, owner="node-c:303")
    third.start_camera(camera("hall"))
    third.close()


def test_meta_and_ids_survive_a_reopen(store_url: str):
    with open_store(store_url) as store:
        assert store.meta("link_threshold") is None
        store.set_meta("link_threshold", "0.55")
        assert store.allocate_global_ids(3) == [1, 2, 3]
        store.start_camera(camera("a"))
        store.put_tracklets([tracklet_of([make_track("a", 1, 1)])])
        store.set_global_ids({"a/1": 10})  # ids given by relabelling are never allocated later
        store.commit()
    with open_store(store_url) as store:
        assert store.meta("link_threshold") == "0.55"
        assert store.allocate_global_ids(2) == [11, 12] and store.allocate_global_ids(0) == []


ALLOCATOR = r"""
import sys, time
from pathlib import Path
import numpy as np
from tracklink.app.records import Track, Tracklet
from tracklink.app.store import CameraRecord, open_store

url, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
store = open_store(url)
store.start_camera(CameraRecord(name, name, "fp", "running"))
while not go.exists():
    time.sleep(0.005)
ids, tracklets = [], []
for k in range(150):
    got = store.allocate_global_ids(1 + k % 3)
    ids += got
    for gid in got:
        t = Tracklet.start(Track(name, len(ids), 0.0, len(tracklets) + 1, np.zeros(4, np.float32), 0.5))
        t.global_id = gid
        tracklets.append(t)
    if k % 10 == 0:
        store.put_tracklets(tracklets[-10:])
        store.commit()
store.put_tracklets(tracklets)
store.finish_camera(name, "done", 0)
store.close()
print(" ".join(map(str, ids)))
"""


def test_processes_allocating_at_once_never_share_an_id(store_url: str, tmp_path: Path):
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", ALLOCATOR, store_url, f"cam{i}", str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    time.sleep(1.0)  # all three are past their imports before any starts allocating
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    minted = [int(v) for out, _ in outputs for v in out.split()]
    assert len(minted) == 3 * sum(1 + k % 3 for k in range(150))
    assert len(set(minted)) == len(minted)  # no id minted twice
    with open_store(store_url) as store:
        tracklets = store.tracklets()
    assert len(tracklets) == len(minted)
    assert sorted(t.global_id for t in tracklets) == sorted(minted)  # one id per tracklet, none shared


WRITER = r"""
import sys, time
import numpy as np
from tracklink.app.records import Track
from tracklink.app.store import CameraRecord, open_store
store = open_store(sys.argv[1], commit_interval=0.2)
store.start_camera(CameraRecord("hall", "hall.mp4", "fp", "running"))
frame = 0
while True:
    frame += 1
    store.add_appearances([Track("hall", frame, frame / 30, 1, np.zeros(4, np.float32), 0.9)])
    store.maybe_commit()
    print(frame, flush=True)
    time.sleep(0.01)
"""


def test_killed_writer_camera_resumes_at_once(postgres_url: str):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, postgres_url], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(100):  # about a second of frames: some commits have landed
            assert proc.stdout.readline(), "the writer ended early"
        other = open_store(postgres_url, claim_timeout=600)
        with pytest.raises(TracklinkError, match=r"camera 'hall' is being written by .*:%d" % proc.pid):
            other.start_camera(camera("hall"))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(list(other.appearances("hall"))) > 0
    # Its server connection closed with it: the claim is free long before the 600 s timeout.
    deadline = time.monotonic() + 30
    while True:
        try:
            other.start_camera(camera("hall"))
            break
        except TracklinkError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # the server may take a moment to notice the closed connection
    assert list(other.appearances("hall")) == [] and other.camera("hall").status == "running"
    other.finish_camera("hall", "done", 0)
    other.close()


def test_migrations_are_recorded_applied_once_and_guard_newer_stores(postgres_url: str):
    errors: list[BaseException] = []

    def open_close():
        try:
            PostgresStore(postgres_url).close()
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=open_close) for _ in range(4)]  # nodes starting together on a new store
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")] == \
               list(range(1, SCHEMA_VERSION + 1))
        conn.execute("INSERT INTO schema_migrations (version, description) VALUES (%s, 'from the future')",
                     (SCHEMA_VERSION + 1,))
    with pytest.raises(TracklinkError, match="upgrade tracklink"):
        PostgresStore(postgres_url)


def test_unreachable_server_is_one_clear_line_without_the_password(postgres_server):  # noqa: F811
    url = f"postgresql://someone:s3cret@127.0.0.1:{postgres_server.port}/no_such_db"
    with pytest.raises(TracklinkError) as caught:
        PostgresStore(url, connect_timeout=2)
    message = str(caught.value)
    assert "s3cret" not in message and "no_such_db" in message and "\n" not in message


def test_embeddings_are_bytea_float32(postgres_url: str):
    rng = np.random.default_rng(1)
    feature = rng.normal(size=512).astype(np.float32)
    with open_store(postgres_url) as store:
        store.start_camera(camera("a"))
        t = tracklet_of([make_track("a", 1, 1, feature)])
        store.put_tracklets([t])
        store.commit()
        np.testing.assert_array_equal(store.tracklets("a")[0].feature_sum, t.feature_sum)
    with psycopg.connect(postgres_url) as conn:
        kind, size = conn.execute("SELECT pg_typeof(feature_sum)::text, length(feature_sum) FROM embeddings").fetchone()
    assert (kind, size) == ("bytea", 512 * 4)


def test_one_relink_at_a_time_without_holding_up_writers(store_url: str):
    first, second, writer = (open_store(store_url, owner=f"node-{i}:{i}") for i in (1, 2, 3))
    writer.start_camera(camera("live"))
    first.begin_relink()
    acquired = threading.Event()
    waiter = threading.Thread(target=lambda: (second.begin_relink(), acquired.set()))
    waiter.start()
    # While the first re-link runs, another node's flush (rows, tracklets, identities) goes through.
    writer.add_appearances([make_track("live", 1, 1)])
    writer.put_tracklets([tracklet_of([make_track("live", 1, 1)])])
    writer.put_identities([], replace_all=True)
    writer.commit()
    assert not acquired.wait(0.3)  # the second re-link waits for the first one's commit
    first.commit()
    waiter.join(timeout=30)
    assert acquired.is_set()
    second.commit()
    for store in (first, second, writer):
        store.close()


def test_a_live_writer_heartbeats_on_its_own(postgres_url: str):
    """The claim stays fresh while the writer is busy elsewhere (a long step, a slow camera): a thread beats."""
    writer = PostgresStore(postgres_url, owner="node-a:1", claim_timeout=1.5)
    writer.start_camera(camera("hall"))

    def beat() -> float:
        with psycopg.connect(postgres_url) as conn:
            return conn.execute("SELECT EXTRACT(EPOCH FROM heartbeat)::float8 FROM claims").fetchone()[0]

    first, deadline = beat(), time.monotonic() + 60
    while beat() == first and time.monotonic() < deadline:
        time.sleep(0.1)
    assert beat() > first  # no call into the store in between: the heartbeat thread did it
    writer.close()
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0  # closing released the claim


ONLINE_LINKER = """
import sys, time
from pathlib import Path
import numpy as np
from tracklink.app.link import LinkConfig
from tracklink.app.records import Track
from tracklink.app.session import open_gallery
from tracklink.app.pipeline import TrackletPool
from tracklink.app.store import CameraRecord, open_store

url, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
store = open_store(url)
store.start_camera(CameraRecord(name, name, "fp", "running"))
linker, _ = open_gallery(store, LinkConfig(threshold=0.5), restarting=[name])
rng = np.random.default_rng(abs(hash(name)) % 1000)
pool = TrackletPool(name)
while not go.exists():
    time.sleep(0.005)
for k in range(1, 121):  # 120 people, each seen once: every tracklet needs a new id, minted at once by both
    feature = rng.standard_normal(512).astype(np.float32)  # unrelated people: cosine near 0, far below 0.5
    track = Track(name, k, float(k), k, np.zeros(4, np.float32), 0.9, feature / np.linalg.norm(feature))
    ended = pool.update([track])
    linker.link_many(pool.end([k]))
    store.put_tracklets(ended)
    store.commit()
store.finish_camera(name, "done", 120)
store.close()
"""


def test_online_linking_from_two_processes_mints_each_id_once(store_url: str, tmp_path: Path):
    """Two nodes link online against one store at the same moment: no global id is minted for two tracklets
    (of different people), and no tracklet holds two ids."""
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", ONLINE_LINKER, store_url, f"node{i}", str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    time.sleep(1.0)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]
    with open_store(store_url) as store:
        tracklets = store.tracklets()
    assert len(tracklets) == 240 and len({t.key for t in tracklets}) == 240  # one row, so one id, per tracklet
    ids = {node: {t.global_id for t in tracklets if t.camera == node} for node in ("node0", "node1")}
    assert None not in ids["node0"] | ids["node1"]
    assert not ids["node0"] & ids["node1"], "one id was minted for people of two nodes"
    assert len(ids["node0"] | ids["node1"]) == 240, "an id was minted twice"
