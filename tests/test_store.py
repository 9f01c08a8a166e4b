"""The store contract on both backends (round trips, upserts, restarting a camera), and SQLite's own: WAL and the
one-second loss bound under kill -9."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fixtures_postgres import postgres_server, store_url  # noqa: F401  (pytest fixtures)
from tracklink.app.records import Identity, Track, Tracklet
from tracklink.app.store import CameraRecord, SqliteStore, open_store


def make_track(camera: str, frame: int, tid: int, emb: np.ndarray | None = None) -> Track:
    return Track(camera, frame, frame / 10, tid, np.array([10 * tid, frame, 10 * tid + 40, frame + 90], np.float32),
                 0.5 + tid / 100, emb)


def tracklet_of(tracks: list[Track]) -> Tracklet:
    t = Tracklet.start(tracks[0])
    for track in tracks[1:]:
        t.add(track)
    return t


def test_round_trip_and_global_ids(store_url: str):
    rng = np.random.default_rng(0)
    store = open_store(store_url)
    store.start_camera(CameraRecord("a", "a.mp4", "fp1", "running", fps=10.0, width=640, height=480))
    tracks = [make_track("a", f, tid, (e := rng.normal(size=8).astype(np.float32)) / np.linalg.norm(e))
              for f in range(1, 6) for tid in (1, 2)]
    store.add_appearances(tracks)
    t1 = tracklet_of([t for t in tracks if t.track_id == 1])
    t2 = tracklet_of([t for t in tracks if t.track_id == 2])
    t1.global_id, t2.global_id, t2.ended = 7, 8, True
    store.put_tracklets([t1, t2])
    store.put_identities([Identity(7, [t1]), Identity(8, [t2])])
    store.finish_camera("a", "done", 5)
    store.close()

    store = open_store(store_url)
    assert store.camera("a").status == "done" and store.camera("a").frames == 5 and store.camera("a").width == 640
    back = {t.track_id: t for t in store.tracklets("a")}
    for orig in (t1, t2):
        got = back[orig.track_id]
        assert (got.first_frame, got.last_frame, got.num_boxes, got.num_embeddings, got.global_id, got.ended) == \
               (orig.first_frame, orig.last_frame, orig.num_boxes, orig.num_embeddings, orig.global_id, orig.ended)
        np.testing.assert_array_equal(got.feature, orig.feature)
    rows = list(store.appearances("a"))
    assert len(rows) == 10 and [(r.frame, r.track_id) for r in rows] == sorted((r.frame, r.track_id) for r in rows)
    assert {r.track_id: r.global_id for r in rows} == {1: 7, 2: 8}
    store.set_global_ids({"a/1": 3, "a/2": 3})
    store.put_identities([Identity(3, [t1, t2])], replace_all=True)
    assert {r.global_id for r in store.appearances("a")} == {3}
    assert [i["global_id"] for i in store.identities()] == [3] and store.identities()[0]["tracklets"] == 2
    if isinstance(store, SqliteStore):
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_upserts_and_restart_replace_rows(store_url: str):
    store = open_store(store_url)
    store.start_camera(CameraRecord("a", "a.mp4", "fp1", "running"))
    store.start_camera(CameraRecord("b", "b.mp4", "fp1", "running"))
    first = [make_track("a", f, 1) for f in range(1, 4)] + [make_track("b", 1, 1)]
    store.add_appearances(first)
    moved = make_track("a", 2, 1)
    moved.xyxy = moved.xyxy + 5
    store.add_appearances([moved])  # the same (camera, frame, track) again: updated, not duplicated
    store.put_tracklets([tracklet_of(first[:3]), tracklet_of(first[:2])])
    assert len(list(store.appearances("a"))) == 3
    assert next(r for r in store.appearances("a") if r.frame == 2).xyxy[0] == pytest.approx(moved.xyxy[0])
    assert len(store.tracklets("a")) == 1 and store.tracklets("a")[0].num_boxes == 2

    # A re-run of camera a: its partial rows go; camera b's stay.
    store.start_camera(CameraRecord("a", "a.mp4", "fp2", "running"))
    assert list(store.appearances("a")) == [] and store.tracklets("a") == []
    assert len(list(store.appearances("b"))) == 1
    assert store.camera("a").fingerprint == "fp2" and store.camera("a").status == "running"
    store.close()


def test_commits_at_most_one_interval_late(tmp_path: Path):
    """A second connection (a viewer, or the next run after a crash) sees rows once the interval passed."""
    path = tmp_path / "t.db"
    store = SqliteStore(path, commit_interval=0.3)
    store.start_camera(CameraRecord("a", "a.mp4", "fp", "running"))
    reader = sqlite3.connect(str(path))
    count = lambda: reader.execute("SELECT COUNT(*) FROM appearances").fetchone()[0]  # noqa: E731
    store.add_appearances([make_track("a", 1, 1)])
    store.maybe_commit()
    assert count() == 0  # within the interval: not yet
    time.sleep(0.35)
    store.add_appearances([make_track("a", 2, 1)])
    store.maybe_commit()
    assert count() == 2
    store.close()


WRITER = r"""
import sys, time
import numpy as np
from tracklink.app.records import Track
from tracklink.app.store import CameraRecord, SqliteStore
store = SqliteStore(sys.argv[1], commit_interval=1.0)
store.start_camera(CameraRecord("a", "a.mp4", "fp", "running"))
frame = 0
while True:
    frame += 1
    store.add_appearances([Track("a", frame, frame / 30, 1, np.zeros(4, np.float32), 0.9)])
    store.maybe_commit()
    print(frame, time.time(), flush=True)
    time.sleep(0.01)
"""


def test_kill_loses_at_most_the_last_second(tmp_path: Path):
    path = tmp_path / "t.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    written: list[tuple[int, float]] = []
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            frame, stamp = line.split()
            written.append((int(frame), float(stamp)))
            if written[-1][1] - written[0][1] > 2.5:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = written[-1][1]
    assert killed_at - written[0][1] > 2.5, "the writer did not run long enough"
    stored = sqlite3.connect(str(path)).execute("SELECT COUNT(*), MAX(frame) FROM appearances").fetchone()
    # Everything written more than one second (plus scheduling slack) before the kill survived.
    safe = max(f for f, t in written if t <= killed_at - 1.2)
    assert stored[0] == stored[1] >= safe, (stored, safe, written[-1])
