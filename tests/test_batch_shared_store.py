"""Many `tracklink batch` processes, one PostgreSQL store: the same people as one process with all cameras in
SQLite, and a writer killed midway that resumes on rerun with nothing lost or doubled. Real footage, real
models, a real server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from fixtures_postgres import postgres_server  # noqa: F401  (pytest fixture)
from fixtures_video import write_camera
from tracklink.app.store import CameraRecord, open_store

pytestmark = [pytest.mark.slow, pytest.mark.assets]

# Three processes of two cameras each. (Pairs chosen clear of a known OnlineLinker fault that stops a
# batch when a tracklet leaves an identity another one joins in the same step: 02 with 04 trips it.)
GROUPS = [("MOT17-02-FRCNN", "MOT17-05-FRCNN"), ("MOT17-09-FRCNN", "MOT17-10-FRCNN"),
          ("MOT17-11-FRCNN", "MOT17-13-FRCNN")]
FRAMES = 40
TABLES = ("cameras", "tracklets", "embeddings", "appearances", "identities", "claims")


@pytest.fixture(scope="module")
def clips(mot17_dir: Path, tmp_path_factory) -> list[list[Path]]:
    """Each sequence played forth and back for 40 frames: long enough to kill a run midway."""
    folder = tmp_path_factory.mktemp("clips")
    return [[write_camera(mot17_dir / seq, folder / f"cam{seq[6:8]}.avi", FRAMES) for seq in group]
            for group in GROUPS]


def batch_command(videos: list[Path], yolox_onnx: Path, osnet_onnx: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tracklink", "batch", *map(str, videos), "--detector", f"yolox:{yolox_onnx}",
            "--reid", str(osnet_onnx), "--no-progress", "--threads", "1", *extra]


def tracklink(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "tracklink", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout) if done.stdout.strip() else {}


def partition(url: str) -> set[frozenset[str]]:
    """The people found: sets of tracklet keys, whatever the ids are."""
    with open_store(url) as store:
        tracklets = store.tracklets()
    assert tracklets and all(t.global_id is not None for t in tracklets)
    groups: dict[int, set[str]] = {}
    for t in tracklets:
        groups.setdefault(t.global_id, set()).add(t.key)
    return {frozenset(g) for g in groups.values()}


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in TABLES}


def run_all_at_once(url: str, clips, tmp_path: Path, yolox_onnx: Path, osnet_onnx: Path, victim: int | None = None):
    """The three batch processes started together; with `victim`, that one is SIGKILLed midway, then rerun."""
    procs = [subprocess.Popen(batch_command(videos, yolox_onnx, osnet_onnx, "--db", url, "--out",
                                            str(tmp_path / f"node{i}")), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i, videos in enumerate(clips)]
    if victim is not None:
        names = [v.stem for v in clips[victim]]
        state: dict = {}
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and procs[victim].poll() is None:
                state = camera_state(url, names)
                if any(n > 0 for _, n in state.values()):
                    break
                time.sleep(0.05)
        finally:
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
        assert state and all(status == "running" for status, _ in state.values()) and \
            any(n > 0 for _, n in state.values()), f"not killed midway: {state}"
    for i, proc in enumerate(procs):
        if i != victim:
            assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    if victim is not None:  # the rerun: the killed camera's claim is free at once, its partial rows replaced
        rerun = subprocess.run(batch_command(clips[victim], yolox_onnx, osnet_onnx, "--db", url, "--out",
                                             str(tmp_path / f"node{victim}")), capture_output=True, text=True,
                               timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-3000:]


def camera_state(url: str, names: list[str]) -> dict[str, tuple[str, int]]:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            rows = conn.execute("SELECT c.name, c.status, (SELECT COUNT(*) FROM appearances a WHERE a.camera=c.name) "
                                "FROM cameras c WHERE c.name = ANY(%s)", (names,)).fetchall()
    except psycopg.Error:  # the schema is not there yet
        return {}
    return {name: (status, n) for name, status, n in rows}


def test_three_nodes_into_one_postgres_store_equal_one_sqlite_run(postgres_server, clips, tmp_path: Path,  # noqa: F811
                                                                  yolox_onnx: Path, osnet_onnx: Path):
    reference = tmp_path / "reference"
    everything = [v for group in clips for v in group]
    subprocess.run(batch_command(everything, yolox_onnx, osnet_onnx, "--out", str(reference)), check=True,
                   capture_output=True, timeout=600)
    tracklink("link", "--db", str(reference / "tracklink.db"))
    expected = partition(str(reference / "tracklink.db"))

    shared = postgres_server.new_database()
    run_all_at_once(shared, clips, tmp_path / "shared", yolox_onnx, osnet_onnx)
    summary = tracklink("link", "--db", shared, "--out", str(tmp_path / "linked"))
    assert sorted(summary["cameras"]) == sorted(v.stem for v in everything) and summary["left_out"] == {}
    assert partition(shared) == expected
    for video in everything:  # every camera's boxes and track ids are the single run's
        assert (tmp_path / "linked" / f"{video.stem}.txt").read_text() == \
               (reference / f"{video.stem}.txt").read_text()
    uninterrupted = counts(shared)
    assert uninterrupted["claims"] == 0 and uninterrupted["appearances"] > 0

    killed = postgres_server.new_database()
    run_all_at_once(killed, clips, tmp_path / "killed", yolox_onnx, osnet_onnx, victim=2)
    tracklink("link", "--db", killed)
    assert counts(killed) == uninterrupted  # nothing lost, nothing doubled
    assert partition(killed) == expected


def test_a_camera_another_node_writes_is_refused_by_name(postgres_server, clips, yolox_onnx: Path,  # noqa: F811
                                                         osnet_onnx: Path, tmp_path: Path):
    url = postgres_server.new_database()
    video = clips[0][0]
    with open_store(url, owner="edge-7:4242") as other_node:
        other_node.start_camera(CameraRecord(video.stem, str(video), "fp", "running"))
        refused = subprocess.run(batch_command([video], yolox_onnx, osnet_onnx, "--db", url, "--out",
                                               str(tmp_path / "out")), capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2
        assert f"camera '{video.stem}' is being written by edge-7:4242" in refused.stderr.splitlines()[-1]
