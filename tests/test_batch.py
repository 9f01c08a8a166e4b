"""`tracklink batch` end to end on real footage with the shared YOLOX and OSNet, fully offline, and its faults:
kill and re-run, a corrupt video among good ones, an unreadable model, Ctrl-C on a live camera."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tracklink.models import weights
from tracklink.app.batch import BatchOptions, run_batch
from tracklink.app.store import SqliteStore
from tracklink.cli import main


def read_mot(path: Path) -> np.ndarray:
    rows = [list(map(float, line.split(","))) for line in path.read_text().splitlines()]
    assert all(len(r) == 10 for r in rows)
    return np.array(rows).reshape(-1, 10)


def write_video(path: Path, files: list[Path], size: tuple[int, int], order: list[int], fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    images = [cv2.resize(cv2.imread(str(f)), size, interpolation=cv2.INTER_AREA) for f in files]
    for i in order:
        writer.write(images[i])
    writer.release()
    return path


def ping_pong(n: int, length: int) -> list[int]:
    """0, 1, ..., n-1, n-2, ..., 1, 0, 1, ...: smooth motion back and forth, `length` frames."""
    cycle = list(range(n)) + list(range(n - 2, 0, -1))
    return [cycle[i % len(cycle)] for i in range(length)]


def model_args(yolox_onnx: Path, osnet_onnx: Path) -> list[str]:
    return ["--detector", f"yolox:{yolox_onnx}", "--reid", str(osnet_onnx), "--no-progress"]


def test_batch_on_two_mot17_sequences_offline(tmp_path: Path, mot17_dir: Path, yolox_onnx: Path, osnet_onnx: Path,
                                             no_network, capsys):
    seqs = ["MOT17-05-FRCNN", "MOT17-09-FRCNN"]
    out = tmp_path / "out"
    rc = main(["batch", *[str(mot17_dir / s) for s in seqs], *model_args(yolox_onnx, osnet_onnx), "--out", str(out),
               "--save-video"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    store = SqliteStore(out / "tracklink.db")
    for seq in seqs:
        frames = len(list((mot17_dir / seq / "img1").glob("*.jpg")))
        local, world = read_mot(out / f"{seq}.txt"), read_mot(out / f"{seq}.global.txt")
        assert len(local) > 0 and summary["cameras"][seq] == {
            "status": "done", "frames": frames, "rows": len(local),
            "tracklets": len(store.tracklets(seq))}
        assert set(local[:, 0].astype(int)) <= set(range(1, frames + 1))
        assert (local[:, 4:6] > 0).all() and (local[:, 7:] == -1).all()
        # the global file has the same boxes; its ids are the store's global ids of those tracklets
        key = lambda a: sorted(map(tuple, np.round(a[:, [0, 2, 3, 4, 5]], 2)))  # noqa: E731
        assert key(local) == key(world)
        gid_of = {t.track_id: t.global_id for t in store.tracklets(seq)}
        by_box = {tuple(np.round(r[[0, 2, 3]], 2)): int(r[1]) for r in world}
        for r in local:
            assert by_box[tuple(np.round(r[[0, 2, 3]], 2))] == gid_of[int(r[1])]
        video = cv2.VideoCapture(str(out / f"{seq}.mp4"))
        assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
        rate = next(line.split("=")[1] for line in (mot17_dir / seq / "seqinfo.ini").read_text().splitlines()
                    if line.startswith("frameRate"))
        assert video.get(cv2.CAP_PROP_FPS) == pytest.approx(float(rate))  # plays at the footage's speed
    assert summary["frames"] == summary["frames_processed"] == 10
    assert summary["tracklets"] == len(store.tracklets())
    assert summary["identities"] == len(store.identities()) == len({t.global_id for t in store.tracklets()})
    assert set(summary["fps"]) >= {"decode", "detect", "track", "embed", "link", "overall"}
    assert all(summary["fps"][k] > 0 for k in ("decode", "detect", "track", "embed", "overall"))
    assert summary["link_threshold"] == weights.CATALOGUE["osnet_x0_25_msmt17"].link_threshold
    assert summary["errors"] == {}


def _clips(tmp_path: Path, mot17_dir: Path) -> tuple[Path, Path]:
    """A 14-frame camera and a 4-frame one, so the short one is done while the long one still runs."""
    seq5 = sorted((mot17_dir / "MOT17-05-FRCNN" / "img1").glob("*.jpg"))
    seq9 = sorted((mot17_dir / "MOT17-09-FRCNN" / "img1").glob("*.jpg"))
    long = write_video(tmp_path / "hall.mp4", seq5, (640, 480), ping_pong(len(seq5), 14), 14)
    short = write_video(tmp_path / "gate.mp4", seq9, (640, 360), ping_pong(len(seq9), 4), 30)
    return long, short


def _state(db: Path) -> dict[str, tuple[str, int]]:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5)
        rows = con.execute("SELECT c.name, c.status, (SELECT COUNT(*) FROM appearances a WHERE a.camera=c.name) "
                           "FROM cameras c").fetchall()
        con.close()
        return {name: (status, n) for name, status, n in rows}
    except sqlite3.Error:
        return {}


def test_kill_midway_then_rerun_gives_complete_rows(tmp_path: Path, mot17_dir: Path, yolox_onnx: Path,
                                                     osnet_onnx: Path):
    long, short = _clips(tmp_path, mot17_dir)
    options = dict(detector=f"yolox:{yolox_onnx}", reid=str(osnet_onnx), progress=False)
    reference = tmp_path / "reference"
    run_batch(BatchOptions([str(long), str(short)], out=str(reference), **options))

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tracklink", "batch", str(long), str(short), *model_args(yolox_onnx, osnet_onnx),
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state: dict = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            state = _state(out / "tracklink.db")
            if state.get("gate", ("",))[0] == "done" and state.get("hall", ("", 0))[1] > 0:
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert state.get("gate", ("",))[0] == "done" and state["hall"][0] == "running", \
        f"not killed midway: {state}; {proc.stderr.read().decode()[-2000:]}"

    summary = run_batch(BatchOptions([str(long), str(short)], out=str(out), **options))
    assert summary["cameras"]["gate"]["status"] == "skipped" and summary["cameras"]["hall"]["status"] == "done"
    assert summary["frames_processed"] == 14  # only the unfinished camera ran again
    for name in ("hall", "gate"):
        assert (out / f"{name}.txt").read_text() == (reference / f"{name}.txt").read_text()
        assert (out / f"{name}.global.txt").read_text() == (reference / f"{name}.global.txt").read_text()
    def count(db: Path, table: str) -> int:
        return sqlite3.connect(str(db)).execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    for table in ("appearances", "tracklets", "embeddings", "identities", "cameras"):
        assert count(out / "tracklink.db", table) == count(reference / "tracklink.db", table), table


def test_corrupt_video_among_good_ones(tmp_path: Path, mot17_dir: Path, yolox_onnx: Path, osnet_onnx: Path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    rc = main(["batch", str(mot17_dir / "MOT17-05-FRCNN"), str(bad), *model_args(yolox_onnx, osnet_onnx),
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "broken" in err and str(bad) in err and "cannot decode" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cameras"]["broken"]["status"] == "error" and str(bad) in summary["errors"]["broken"]
    good = summary["cameras"]["MOT17-05-FRCNN"]
    assert good["status"] == "done" and good["frames"] == 6
    assert len(read_mot(out / "MOT17-05-FRCNN.txt")) == good["rows"] > 0
    assert (out / "MOT17-05-FRCNN.global.txt").is_file() and not (out / "broken.txt").exists()


@pytest.mark.parametrize("which", ["detector", "reid"])
def test_unreadable_model_fails_before_any_video_is_opened(tmp_path: Path, mot17_dir: Path, yolox_onnx: Path,
                                                           osnet_onnx: Path, which: str, capsys):
    garbage = tmp_path / "truncated.onnx"
    garbage.write_bytes(osnet_onnx.read_bytes()[:5000])
    bad_video = tmp_path / "broken.mp4"
    bad_video.write_bytes(b"\x00" * 1000)  # would fail if it were opened
    args = {"detector": f"yolox:{yolox_onnx}", "reid": str(osnet_onnx)}
    args[which] = f"yolox:{garbage}" if which == "detector" else str(garbage)
    out = tmp_path / "out"
    rc = main(["batch", str(bad_video), "--detector", args["detector"], "--reid", args["reid"], "--out", str(out),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "truncated.onnx" in err and "broken.mp4" not in err
    assert "Traceback" not in err
    assert not (out / "tracklink.db").exists()


def test_pipeline_embeds_all_cameras_in_one_call_per_step(mot17_dir: Path, yolox_onnx: Path, osnet_onnx: Path):
    """The pipeline, as the viewer drives it: one embedder call per step carries every camera's crops."""
    from tracklink.app.detect import make_detector
    from tracklink.app.link import LinkConfig, OnlineLinker
    from tracklink.app.pipeline import STAGES, Pipeline
    from tracklink.app.sources import make_sources
    from tracklink.export.runtime import open_embedder

    class CountingEmbedder:
        """The real embedder, with a record of each call's batch size."""

        def __init__(self, inner):
            self.inner, self.calls = inner, []

        def embed(self, crops):
            self.calls.append(len(crops))
            return self.inner.embed(crops)

    embedder = CountingEmbedder(open_embedder(osnet_onnx))
    sources = make_sources([str(mot17_dir / "MOT17-05-FRCNN"), str(mot17_dir / "MOT17-09-FRCNN")])
    pipeline = Pipeline(sources, make_detector(f"yolox:{yolox_onnx}"), embedder,
                        linker=OnlineLinker(LinkConfig(threshold=0.7, min_embeddings=2)))
    steps = list(pipeline)
    two_camera_steps = [s for s in steps if len(s.cameras) == 2]
    assert len(two_camera_steps) == 4 and pipeline.done == ["MOT17-09-FRCNN", "MOT17-05-FRCNN"]
    # exactly one call per step that had fit crops, carrying the crops of all its cameras
    per_step = [[sum(t.embedding is not None for t in c.tracks) for c in s.cameras] for s in steps]
    assert embedder.calls == [sum(n) for n in per_step if sum(n)]
    assert any(all(n) and len(n) == 2 for n in per_step)  # some call mixed both cameras
    embedded = [t.embedding for s in steps for c in s.cameras for t in c.tracks if t.embedding is not None]
    assert embedded and np.allclose([np.linalg.norm(e) for e in embedded], 1, atol=1e-4)
    assert set(steps[0].seconds) == set(STAGES)
    # tracklets that matured got a global id during the run; every ended tracklet has one
    ended = [t for s in steps for t in s.ended]
    linked = [gid for s in steps for c in s.cameras for gid in c.global_ids.values() if gid is not None]
    assert linked and ended and all(t.global_id is not None and t.ended for t in ended)
    # every tracklet ends exactly once, by the end of its camera at the latest
    tracked = {f"{c.frame.camera}/{t.track_id}" for s in steps for c in s.cameras for t in c.tracks}
    assert sorted(t.key for t in ended) == sorted(tracked)
    assert pipeline.stats.frames == 10 and pipeline.stats.fps()["overall"] > 0


def test_reading_ahead_gives_the_same_results_as_reading_in_turn(mot17_dir: Path, yolox_onnx: Path,
                                                                  osnet_onnx: Path):
    """Detection of the next step runs on the feed's thread while this step tracks and embeds; every step's
    frames, tracks, boxes, endings and ids are the same as with the stages in turn, cameras ending midway."""
    import threading

    from tracklink.app.detect import make_detector
    from tracklink.app.link import LinkConfig, OnlineLinker
    from tracklink.app.pipeline import Pipeline, PipelineConfig
    from tracklink.app.sources import make_sources
    from tracklink.export.runtime import open_embedder

    detector, embedder = make_detector(f"yolox:{yolox_onnx}"), open_embedder(osnet_onnx)

    def run(read_ahead: bool) -> tuple[list, set[str]]:
        threads: set[str] = set()

        def detect(images):
            threads.add(threading.current_thread().name)
            return detector(images)

        sources = make_sources([str(mot17_dir / n) for n in ("MOT17-05-FRCNN", "MOT17-09-FRCNN", "MOT17-13-FRCNN")])
        pipeline = Pipeline(sources, detect, embedder, PipelineConfig(read_ahead=read_ahead),
                            linker=OnlineLinker(LinkConfig(threshold=0.7, min_embeddings=2)))
        with pipeline:
            steps = [(s.index, [(c.frame.camera, c.frame.index, [(t.track_id, t.xyxy.round(3).tolist(),
                                                                  c.global_ids[t.track_id]) for t in c.tracks])
                                for c in s.cameras], sorted(t.key for t in s.ended), s.finished) for s in pipeline]
        return steps, threads

    in_turn, turn_threads = run(read_ahead=False)
    ahead, ahead_threads = run(read_ahead=True)
    assert turn_threads == {threading.current_thread().name}
    assert any(name.startswith("tracklink-feed") for name in ahead_threads), "detection ran on the feed's thread"
    assert ahead == in_turn and any(s[3] for s in in_turn[:-1]), "same results; a camera ended before the last"


class MjpegCamera:
    """A real HTTP MJPEG camera on localhost, streaming MOT17 frames until stopped."""

    def __init__(self, files: list[Path], fps: float = 20.0):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        jpegs = [cv2.imencode(".jpg", cv2.imread(str(f)))[1].tobytes() for f in files]
        stop = self.stop_event = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not stop.is_set():
                        jpg = jpegs[i % len(jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpg)).encode() + b"\r\n\r\n" + jpg + b"\r\n")
                        i += 1
                        time.sleep(1 / fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://viewer:s3cret@127.0.0.1:{self.server.server_address[1]}/stream.mjpg"

    def close(self):
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()


def test_ctrl_c_finishes_a_live_camera(tmp_path: Path, mot17_dir: Path, yolox_onnx: Path, osnet_onnx: Path):
    """A live HTTP camera runs until Ctrl-C; then it is complete up to that moment and gets its outputs."""
    camera = MjpegCamera(sorted((mot17_dir / "MOT17-05-FRCNN" / "img1").glob("*.jpg")))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tracklink", "batch", f"door={camera.url}", str(mot17_dir / "MOT17-09-FRCNN"),
           *model_args(yolox_onnx, osnet_onnx), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        state: dict = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            state = _state(out / "tracklink.db")
            if state.get("MOT17-09-FRCNN", ("",))[0] == "done" and state.get("door", ("", 0))[1] >= 5:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
        err = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        camera.close()
    assert rc == 130, err[-2000:]
    assert "interrupted" in err and "s3cret" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["errors"] == {}
    assert summary["cameras"]["door"]["status"] == "done" and summary["cameras"]["MOT17-09-FRCNN"]["status"] == "done"
    rows = read_mot(out / "door.txt")
    assert len(rows) == summary["cameras"]["door"]["rows"] > 0 and len(read_mot(out / "door.global.txt")) == len(rows)
    store = SqliteStore(out / "tracklink.db")
    assert "s3cret" not in store.camera("door").source and store.camera("door").status == "done"
    assert all(t.ended and t.global_id is not None for t in store.tracklets("door"))
