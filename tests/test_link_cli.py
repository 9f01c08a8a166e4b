"""`tracklink link`: one clustering over every finished camera in a store, whichever runs wrote them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fixtures_postgres import postgres_server, store_url  # noqa: F401  (pytest fixtures)
from test_store import make_track, tracklet_of
from tracklink.app.link import LinkConfig, cluster_tracklets
from tracklink.app.store import CameraRecord, open_store
from tracklink.cli import main


def write_run(url: str, cameras: list[str], people: np.ndarray, owner: str) -> None:
    """One run's cameras: each sees every person once, one after another; online ids 1, 2, ... per run."""
    with open_store(url, owner=owner) as store:
        store.start_camera(CameraRecord(cameras[0], "x", "fp", "running"))
        for c, name in enumerate(cameras):
            if c:
                store.start_camera(CameraRecord(name, "x", "fp", "running"))
            tracklets = []
            for p, person in enumerate(people):
                frames = range(10 * p + 1, 10 * p + 6)
                noise = np.random.default_rng(100 * c + p).normal(scale=0.05, size=(5, person.size))
                tracks = [make_track(name, f, p + 1, (e := person + n) / np.linalg.norm(e))
                          for f, n in zip(frames, noise)]
                store.add_appearances(tracks)
                t = tracklet_of(tracks)
                t.global_id, t.ended = p + 1, True  # collides with the other run's ids on purpose
                tracklets.append(t)
            store.put_tracklets(tracklets)
            store.finish_camera(name, "done", 10 * len(people))
        store.start_camera(CameraRecord("broken", "x", "fp", "running"))
        store.finish_camera("broken", "error", 0, "decode failed")


def test_link_rewrites_all_cameras_of_all_runs(store_url: str, tmp_path: Path, capsys):
    people = np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32)
    write_run(store_url, ["a", "b"], people, "node-1:1")
    write_run(store_url, ["c", "d"], people, "node-2:2")
    with open_store(store_url) as store:
        store.set_meta("link_threshold", "0.5")
        store.commit()
        expected = cluster_tracklets([t for c in "abcd" for t in store.tracklets(c)], LinkConfig(threshold=0.5))

    assert main(["link", "--db", store_url, "--out", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cameras"] == ["a", "b", "c", "d"] and summary["left_out"] == {"broken": "error"}
    assert summary["identities"] == 4 and summary["tracklets"] == 16 and summary["link_threshold"] == 0.5
    with open_store(store_url) as store:
        got = {t.key: t.global_id for t in store.tracklets() if t.camera != "broken"}
        assert got == expected
        # one person, one id, in all four cameras
        assert {frozenset(k for k, g in got.items() if g == gid) for gid in set(got.values())} == \
               {frozenset(f"{c}/{p}" for c in "abcd") for p in range(1, 5)}
        assert [i["cameras"] for i in store.identities()] == [["a", "b", "c", "d"]] * 4
        assert store.allocate_global_ids(1)[0] > max(got.values())
        for name in "abcd":
            world = (tmp_path / "out" / f"{name}.global.txt").read_text().splitlines()
            local = (tmp_path / "out" / f"{name}.txt").read_text().splitlines()
            assert len(world) == len(local) == summary["rows"][name] == 20
            by_track = {int(r.split(",")[1]): r.split(",", 2)[2] for r in local}
            assert {int(r.split(",")[1]) for r in world} == {got[f"{name}/{tid}"] for tid in by_track}
    assert not (tmp_path / "out" / "broken.txt").exists()

    # A threshold on the command line wins over the stored one.
    with open_store(store_url) as store:
        strict = cluster_tracklets([t for c in "abcd" for t in store.tracklets(c)], LinkConfig(threshold=1.0))
    assert len(set(strict.values())) > 4
    assert main(["link", "--db", store_url, "--link-threshold", "1.0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["link_threshold"] == 1.0 and summary["identities"] == len(set(strict.values()))


def test_link_without_a_threshold_or_a_store_says_what_to_pass(store_url: str, tmp_path: Path, capsys):
    write_run(store_url, ["a"], np.eye(2, 8, dtype=np.float32), "node-1:1")
    assert main(["link", "--db", store_url]) == 2
    assert "pass --link-threshold" in capsys.readouterr().err
    assert main(["link", "--db", str(tmp_path / "nowhere.db"), "--link-threshold", "0.5"]) == 2
    assert "no store at" in capsys.readouterr().err and not (tmp_path / "nowhere.db").exists()


def test_link_refuses_embeddings_of_two_models(tmp_path: Path, capsys):
    url = str(tmp_path / "t.db")
    write_run(url, ["a"], np.eye(2, 8, dtype=np.float32), "node-1:1")
    write_run(url, ["b"], np.eye(2, 16, dtype=np.float32), "node-2:2")  # another re-ID model's size
    assert main(["link", "--db", url, "--link-threshold", "0.5"]) == 2
    assert "embeddings of different sizes: 8 (e.g. camera a), 16 (e.g. camera b)" in capsys.readouterr().err
