"""Frame sources on real footage: MOT17-mini folders, a video written from its frames, corrupt files, and a
live source that reconnects (a file replayed as a stream) or cannot connect (a dead local port)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tracklink import TracklinkError
from tracklink.app.sources import (Backoff, ImageFolderSource, LiveSource, VideoFileSource, as_live, make_source,
                                   make_sources, parse_source, redact)


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened(), "this OpenCV cannot write mp4v"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


@pytest.fixture(scope="module")
def mot05_frames(mot17_dir: Path) -> list[np.ndarray]:
    files = sorted((mot17_dir / "MOT17-05-FRCNN" / "img1").glob("*.jpg"))
    return [cv2.resize(cv2.imread(str(f)), (320, 240)) for f in files]


def test_parse_specs(tmp_path: Path, mot17_dir: Path):
    video = tmp_path / "lobby.mp4"
    video.write_bytes(b"x")
    assert parse_source(str(video)) == parse_source(str(video))
    assert (parse_source(str(video)).name, parse_source(str(video)).kind) == ("lobby", "video")
    seq = parse_source(str(mot17_dir / "MOT17-05-FRCNN"))
    assert (seq.name, seq.kind) == ("MOT17-05-FRCNN", "images")
    assert parse_source(f"door={video}").name == "door"
    cam = parse_source("0")
    assert (cam.name, cam.kind, cam.live) == ("camera0", "camera", True)
    # '=' inside a URL's query is not a name separator; a name before the URL is.
    url = parse_source("rtsp://admin:pw@10.0.0.7:554/live?channel=1")
    assert url.kind == "stream" and url.target.endswith("channel=1") and "pw" not in url.name
    assert parse_source("gate=rtsp://10.0.0.7/s?x=1").name == "gate"
    with pytest.raises(TracklinkError, match="source not found"):
        parse_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(TracklinkError, match="both named"):
        make_sources([str(video), f"lobby={mot17_dir / 'MOT17-05-FRCNN'}"])


def test_redact_hides_credentials():
    assert redact("rtsp://admin:s3cret@10.0.0.7:554/live") == "rtsp://***@10.0.0.7:554/live"
    assert redact("http://user@cam/x and https://a:b@h/y") == "http://***@cam/x and https://***@h/y"
    assert redact("/videos/a@b.mp4") == "/videos/a@b.mp4"


def test_mot_folder_uses_seqinfo(mot17_dir: Path):
    source = make_source(str(mot17_dir / "MOT17-05-FRCNN"))
    assert isinstance(source, ImageFolderSource)
    with source:
        frames = list(source)
    assert source.fps == 14.0  # seqinfo.ini frameRate
    files = sorted((mot17_dir / "MOT17-05-FRCNN" / "img1").glob("*.jpg"))
    assert [f.index for f in frames] == [int(p.stem) for p in files]
    assert [f.timestamp for f in frames] == pytest.approx([(int(p.stem) - 1) / 14.0 for p in files])
    assert frames[0].image.shape == (480, 640, 3) and frames[0].camera == "MOT17-05-FRCNN"
    assert source.status.state == "ended"


def test_video_file_clock_and_frames(tmp_path: Path, mot05_frames):
    path = write_video(tmp_path / "clip.mp4", mot05_frames, fps=12.5)
    source = make_source(str(path))
    assert isinstance(source, VideoFileSource)
    with source:
        frames = list(source)
    assert len(frames) == len(mot05_frames)
    assert [f.index for f in frames] == list(range(1, len(frames) + 1))
    assert [f.timestamp for f in frames] == pytest.approx([i / 12.5 for i in range(len(frames))])
    # The decoded pixels are the frames we wrote (lossy codec: close, not equal).
    assert np.abs(frames[2].image.astype(int) - mot05_frames[2]).mean() < 12
    assert source.status.state == "ended" and source.status.frames == len(frames)


def test_corrupt_files_name_their_path(tmp_path: Path, mot17_dir: Path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    source = make_source(str(bad))
    with pytest.raises(TracklinkError, match="broken.mp4"):
        source.open()
    assert source.status.state == "error"

    folder = tmp_path / "seq" / "img1"
    folder.mkdir(parents=True)
    for f in sorted((mot17_dir / "MOT17-05-FRCNN" / "img1").glob("*.jpg"))[:2]:
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "000003.jpg").write_bytes(b"not a jpeg")
    source = make_source(str(tmp_path / "seq"))
    source.open()
    assert source.read() is not None and source.read() is not None
    with pytest.raises(TracklinkError, match="000003.jpg"):
        source.read()


def test_live_source_reconnects_after_the_stream_ends(tmp_path: Path, mot05_frames):
    """A file replayed as a stream ends after 6 frames; the source must reconnect and keep delivering."""
    path = write_video(tmp_path / "cam.mp4", mot05_frames)
    states: list[str] = []
    source = LiveSource(as_live(parse_source(f"door={path}")), Backoff(initial=0.05, maximum=0.2))
    source.on_status = lambda name, status: states.append(status.state)
    source.open()
    try:
        got, deadline = [], time.monotonic() + 20
        while len(got) < 3 * len(mot05_frames) and time.monotonic() < deadline:
            frame = source.read(timeout=0.5)
            if frame is not None:
                got.append(frame)
                time.sleep(0.005)  # a slow consumer: frames in between may be dropped, never repeated
        assert len(got) >= 3 * len(mot05_frames), f"only {len(got)} frames in 20 s; states {states}"
        assert all(b.index > a.index for a, b in zip(got, got[1:]))
        assert all(b.timestamp >= a.timestamp for a, b in zip(got, got[1:]))  # wall clock
        assert abs(got[-1].timestamp - time.time()) < 30
        # live -> reconnecting (end of file) -> live again, at least twice
        drops = [i for i, s in enumerate(states) if s == "reconnecting" and i > 0 and states[i - 1] == "live"]
        assert len(drops) >= 2 and "live" in states[drops[0]:]
    finally:
        source.close()
    assert source.status.state == "ended"


def test_dead_stream_backs_off_without_blocking_others(mot17_dir: Path, caplog):
    """A camera that refuses connections retries in its own thread; a file source reads meanwhile; the
    password in its URL appears in no log line or status."""
    caplog.set_level(logging.DEBUG, logger="tracklink")
    dead = LiveSource(parse_source("rtsp://admin:hunter2@127.0.0.1:9/stream"),
                      Backoff(initial=0.05, factor=2.0, maximum=0.1, attempts=4, open_timeout_s=1.0))
    file_source = make_source(str(mot17_dir / "MOT17-05-FRCNN"))
    t0 = time.monotonic()
    dead.open()
    with file_source:
        assert len(list(file_source)) == 6
    assert time.monotonic() - t0 < 5
    deadline = time.monotonic() + 20
    while dead.status.state != "error" and time.monotonic() < deadline:
        assert dead.read(timeout=0.05) is None
    assert dead.status.state == "error", dead.status
    assert "gave up after 4 attempts" in dead.status.reason
    dead.close()
    assert "hunter2" not in caplog.text and "hunter2" not in dead.status.reason
    assert "127.0.0.1" in caplog.text  # the camera is still identifiable


def test_redact_hides_passwords_with_at_signs_and_query_secrets() -> None:
    from tracklink.app.sources import redact

    assert redact("cannot open rtsp://admin:p@ss@10.0.0.5/live") == "cannot open rtsp://***@10.0.0.5/live"
    assert "s3cret" not in redact("http://cam.local/video.mjpg?user=admin&pwd=s3cret&res=hd")
    assert redact("http://cam.local/video.mjpg?res=hd") == "http://cam.local/video.mjpg?res=hd"


def test_stream_passwords_never_reach_stderr(tmp_path: Path):
    """A dead stream whose password holds an escaped character and whose query holds a token: nothing below
    us (OpenCV's image-sequence fallback, FFmpeg) may print the URL. A fresh process, so that stderr is
    exactly what a user would see."""
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG)\n"
        "from tracklink.app.sources import Backoff, LiveSource, parse_source\n"
        "s = LiveSource(parse_source(sys.argv[1]), Backoff(initial=0.01, attempts=2, open_timeout_s=2))\n"
        "s.open(); s._thread.join(30); print('state', s.status.state, file=sys.stderr)\n")
    for url in ("rtsp://user:pa%40ss@127.0.0.1:9/stream?token=T0KEN", "http://user:pa%40ss@127.0.0.1:9/x?apikey=T0KEN"):
        done = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True, timeout=120)
        err = done.stdout + done.stderr
        assert "state error" in err, err[-2000:]
        assert "pa%40ss" not in err and "T0KEN" not in err, err[-2000:]
        assert "127.0.0.1" in err  # the camera is still identifiable


def test_redact_hides_raw_slashes_and_secret_query_values() -> None:
    assert redact("rtsp://user:pa/ss@127.0.0.1:9/stream") == "rtsp://***@127.0.0.1:9/stream"
    assert redact("rtsp://u:a/b@c@host/live") == "rtsp://***@host/live"
    hidden = redact("https://cam/x.mjpg?apikey=K1&access_token=K2&X-Amz-Signature=K3&secret=K4&auth=K5&"
                    "password=K6&pass=K7&api%5Fkey=K8&res=hd")
    assert not any(f"K{i}" in hidden for i in range(1, 9)), hidden
    assert hidden.endswith("&res=hd")
    spec = parse_source("rtsp://user:pa/ss@127.0.0.1:9/stream?apikey=K1")
    assert "pa/ss" not in spec.display and "K1" not in spec.display and "pa" not in spec.name


def _noise_video(path: Path, fourcc: str, frames: int = 60) -> Path:
    """Frames that compress badly (so 64 KiB is a stretch of frames, not the whole file), each one distinct."""
    rng = np.random.default_rng(7)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (320, 240))
    for k in range(frames):
        image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        cv2.putText(image, str(k), (20, 120), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 6)
        writer.write(image)
    writer.release()
    return path


def test_damaged_stretch_is_skipped_and_counted(tmp_path: Path):
    """64 KiB of random bytes in the middle of an mp4: the frames after the damage are still read, at their
    true file time, and the lost ones are counted."""
    path = _noise_video(tmp_path / "clip.mp4", "mp4v")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 65536] = np.random.default_rng(1).integers(0, 256, 65536, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    source = make_source(str(path))
    source.open()
    frames = list(source)
    indices = [f.index for f in frames]
    assert source.status.state == "ended", source.status
    assert indices[-1] >= 59, f"reading stopped at frame {indices[-1]} of 60"
    assert source.skipped_frames > 0 and len(frames) + source.skipped_frames == indices[-1]
    assert all(b > a for a, b in zip(indices, indices[1:]))
    assert all(abs(f.timestamp - (f.index - 1) / 10.0) < 1e-9 for f in frames)


def test_recording_that_ends_early_is_an_error(tmp_path: Path):
    """An AVI cut in half ends long before its stated length: an error (so a re-run retries it), not an end."""
    path = _noise_video(tmp_path / "clip.avi", "MJPG")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    source = make_source(str(path))
    source.open()
    frames = list(source)
    assert 0 < len(frames) < 60
    assert source.status.state == "error" and "truncated or damaged" in source.status.reason


def test_every_reconnect_attempt_is_logged_at_a_bounded_rate(caplog):
    """Retries after the first change of state are logged too: each one when the interval allows it, and
    with a long interval only the first (no flood from a camera that is down for hours)."""
    caplog.set_level(logging.WARNING, logger="tracklink")
    for interval, expected in ((None, 1), (0.0, 5)):  # 5 retries, then it gives up; None: the default interval
        caplog.clear()
        rate = {} if interval is None else {"log_interval_s": interval}
        dead = LiveSource(parse_source("rtsp://admin:hunter2@127.0.0.1:9/stream"),
                          Backoff(initial=0.01, maximum=0.01, attempts=5, open_timeout_s=1.0, **rate))
        dead.open()
        dead._thread.join(60)
        retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
        assert len(retries) == expected, retries
        assert dead.status.state == "error" and "hunter2" not in caplog.text
        dead.close()


def test_live_camera_that_never_connected_is_an_error(caplog):
    """Stopped (Ctrl-C, end of run) before its first frame: 0 frames is not a finished camera."""
    dead = LiveSource(parse_source("cam=rtsp://127.0.0.1:9/stream"), Backoff(initial=0.01, maximum=0.05,
                                                                             open_timeout_s=1.0))
    dead.open()
    while dead.status.reason == "connecting":  # one connection attempt failed, retries go on
        time.sleep(0.01)
    dead.close()
    assert dead.status.state == "error" and "never connected" in dead.status.reason, dead.status


def test_skipped_dot_folders_are_reported(tmp_path: Path, caplog):
    from tracklink.app.match import read_crop_layout

    for cam, trk in (("cam1", "t1"), ("cam1", ".t2"), (".cam2", "t1")):
        (tmp_path / cam / trk).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / cam / trk / "0.png"), np.zeros((8, 4, 3), np.uint8))
    caplog.set_level(logging.WARNING, logger="tracklink")
    layout = read_crop_layout(tmp_path)
    assert [(c, t) for c, t, _ in layout] == [("cam1", "t1")]
    assert "skipped 2 folder(s)" in caplog.text and ".cam2" in caplog.text and ".t2" in caplog.text
