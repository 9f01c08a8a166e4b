"""Faults an unlucky operator meets, end to end through `tracklink`: models that cannot work, damaged
recordings, colliding names, read-only or full output folders, kills and SIGTERM. Each must end in a clear
one-line error or an honest status, never a traceback or outputs that look finished when they are not."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tracklink.cli import main


def _one_channel_reid(path: Path) -> Path:
    """A re-ID-shaped ONNX whose input has 1 channel instead of 3 (loads fine, fails on a real crop)."""
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [8, 1, 256, 128], np.zeros(8 * 256 * 128, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["c"]), helper.make_node("Flatten", ["c"], ["out"])], "reid",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 256, 128])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 8])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("case", ["garbage_detector", "one_channel_reid", "detector_as_reid"])
def test_unusable_models_fail_before_any_video_opens(case: str, tmp_path: Path, yolox_onnx: Path, osnet_onnx: Path,
                                                     capsys):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a model" * 200)
    models = {"garbage_detector": (str(garbage), str(osnet_onnx), "garbage.onnx"),
              "one_channel_reid": (f"yolox:{yolox_onnx}", str(_one_channel_reid(tmp_path / "gray.onnx")), "gray.onnx"),
              "detector_as_reid": (f"yolox:{yolox_onnx}", str(yolox_onnx), yolox_onnx.name)}
    detector, reid, named = models[case]
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"\x00" * 1000)  # opening it would be an error of its own
    out = tmp_path / "out"
    rc = main(["batch", str(video), "--detector", detector, "--reid", reid, "--out", str(out), "--no-progress",
               "--link-threshold", "0.5"])  # a threshold given, so that only the model itself can fail
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    message = [line for line in err.splitlines() if "error:" in line]
    assert len(message) == 1 and named in message[0] and "broken.mp4" not in err, err[-2000:]
    assert "Traceback" not in err
    assert not (out / "tracklink.db").exists()


def test_yolox_without_its_prefix_is_recognised(tmp_path: Path, yolox_onnx: Path, osnet_onnx: Path, mot17_dir: Path,
                                                capsys, caplog):
    out = tmp_path / "out"
    rc = main(["batch", str(mot17_dir / "MOT17-05-FRCNN"), "--detector", str(yolox_onnx), "--reid", str(osnet_onnx),
               "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err[-2000:]
    assert "YOLOX" in caplog.text and f"yolox:{yolox_onnx}" in caplog.text  # what it assumed, how to say so
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cameras"]["MOT17-05-FRCNN"]["status"] == "done" and summary["cameras"]["MOT17-05-FRCNN"]["rows"] > 0
    status = sqlite3.connect(str(out / "tracklink.db")).execute("SELECT status FROM cameras").fetchall()
    assert status == [("done",)]


# ---------------------------------------------------------------------------------------------- helpers


def _models(yolox_onnx: Path, osnet_onnx: Path) -> list[str]:
    return ["--detector", f"yolox:{yolox_onnx}", "--reid", str(osnet_onnx), "--no-progress"]


def _clip(mot17_dir: Path, path: Path, frames: int) -> Path:
    from tests.fixtures_video import write_camera

    return write_camera(mot17_dir / "MOT17-05-FRCNN", path, frames, size=(320, 240))


def _cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen([sys.executable, "-m", "tracklink", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _camera_status(db: Path, camera: str) -> str | None:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0) as con:
            row = con.execute("SELECT status FROM cameras WHERE name=?", (camera,)).fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def _wait_until_running(proc: subprocess.Popen, db: Path, camera: str) -> None:
    """Until the store says `camera` is being processed (no timing: it polls the run's own state)."""
    while proc.poll() is None and _camera_status(db, camera) != "running":
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be stopped: {proc.communicate()[1][-2000:]}"


# ---------------------------------------------------------------------------------------------- cases


def test_damaged_recording_is_counted_and_a_short_one_is_an_error(tmp_path: Path, yolox_onnx: Path,
                                                                  osnet_onnx: Path, capsys):
    """A damaged stretch mid-file is stepped over and counted (done, exit 0); a recording cut in half is an
    error (exit 1) that a re-run retries instead of skipping as finished."""
    from tests.test_sources import _noise_video

    damaged = _noise_video(tmp_path / "damaged.mp4", "mp4v")
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2:len(data) // 2 + 65536] = np.random.default_rng(1).integers(0, 256, 65536, np.uint8).tobytes()
    damaged.write_bytes(bytes(data))
    half = _noise_video(tmp_path / "half.avi", "MJPG")
    half.write_bytes(half.read_bytes()[:half.stat().st_size // 2])
    out = tmp_path / "out"
    argv = ["batch", str(damaged), str(half), "--out", str(out), *_models(yolox_onnx, osnet_onnx)]
    assert main(argv) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cameras"]["damaged"]["status"] == "done"
    assert summary["cameras"]["damaged"]["undecodable_frames"] > 0
    assert summary["cameras"]["half"]["status"] == "error" and "truncated" in summary["cameras"]["half"]["error"]
    assert _camera_status(out / "tracklink.db", "half") == "error"
    capsys.readouterr()
    assert main(argv) == 1  # retried, not skipped as finished
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cameras"]["damaged"]["status"] == "skipped" and summary["cameras"]["half"]["status"] == "error"


def test_colliding_output_names_are_refused(tmp_path: Path, mot17_dir: Path, capsys):
    clip = _clip(mot17_dir, tmp_path / "cam.avi", 4)
    other = tmp_path / "cam.global.avi"
    other.write_bytes(clip.read_bytes())
    out = tmp_path / "out"
    rc = main(["batch", str(clip), str(other), "--out", str(out), "--detector", "yolox:none.onnx"])
    err = capsys.readouterr().err
    assert rc == 2 and "cam.global.txt" in err and "NAME=SOURCE" in err, err
    assert not out.exists()  # refused before anything was loaded or written
    inside = tmp_path / "videos"
    inside.mkdir()
    (inside / "lobby.mp4").write_bytes(clip.read_bytes())
    rc = main(["batch", str(inside / "lobby.mp4"), "--out", str(inside), "--save-video"])
    assert rc == 2 and "would overwrite the input video" in capsys.readouterr().err


def _own_mount_namespace() -> None:
    """Full-disk and read-only tests mount a small tmpfs in a mount namespace of their own (`unshare -rm`:
    no root needed where user namespaces are allowed); skipped where that is not possible."""
    try:
        ok = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        pytest.skip("cannot create a mount namespace here (unshare -rm), so no small tmpfs to fill")


def _tracklink_in_tmpfs(script: str, tmp_path: Path, size: str = "4m") -> None:
    """Run `script` (sh) with $MNT a fresh tmpfs of `size` and $TL the tracklink command; results go to
    files under tmp_path, outside the mount, which ends with the script."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    tl = f"{sys.executable} -m tracklink"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "MNT": str(mnt), "TL": tl, "RES": str(tmp_path)}
    done = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs \"$MNT\" && {script}"],
                          env=env, capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def test_full_disk_is_one_line_that_keeps_the_data(tmp_path: Path, mot17_dir: Path, yolox_onnx: Path,
                                                   osnet_onnx: Path):
    """A first run completes; the disk then fills; a second run with another camera fails with the cause
    and advice that keeps the data, leaving no temp file; with space again, the same command finishes
    and the first camera's results were kept (skipped, not redone)."""
    _own_mount_namespace()
    first, second = _clip(mot17_dir, tmp_path / "a.avi", 6), _clip(mot17_dir, tmp_path / "b.avi", 6)
    models = " ".join(_models(yolox_onnx, osnet_onnx))
    _tracklink_in_tmpfs(f"""
        $TL batch {first} --out $MNT/out {models} 2>$RES/err1; echo $? > $RES/rc1
        dd if=/dev/zero of=$MNT/filler bs=16k 2>/dev/null
        $TL batch {first} {second} --out $MNT/out {models} 2>$RES/err2; echo $? > $RES/rc2
        ls -a $MNT/out > $RES/ls2
        rm $MNT/filler
        $TL batch {first} {second} --out $MNT/out {models} 2>$RES/err3; echo $? > $RES/rc3
        cp $MNT/out/summary.json $RES/summary.json
        true""", tmp_path)
    read = lambda name: (tmp_path / name).read_text()  # noqa: E731
    assert read("rc1").strip() == "0", read("err1")[-2000:]
    assert read("rc2").strip() == "2", read("err2")[-2000:]
    errors = [line for line in read("err2").splitlines() if "error:" in line]
    assert len(errors) == 1 and "No space left on device" in errors[0], read("err2")[-2000:]
    assert "run the same command again" in errors[0] and "delete" not in errors[0]
    assert "Traceback" not in read("err2")
    assert not [n for n in read("ls2").split() if n.endswith((".tmp", ".part"))], read("ls2")
    assert read("rc3").strip() == "0", read("err3")[-2000:]
    summary = json.loads(read("summary.json"))
    assert summary["cameras"]["a"]["status"] == "skipped" and summary["cameras"]["b"]["status"] == "done"


def test_read_only_output_is_one_line(tmp_path: Path, mot17_dir: Path, yolox_onnx: Path, osnet_onnx: Path):
    _own_mount_namespace()
    clip = _clip(mot17_dir, tmp_path / "a.avi", 4)
    models = " ".join(_models(yolox_onnx, osnet_onnx))
    _tracklink_in_tmpfs(f"""
        mkdir $MNT/out && mount -o remount,ro $MNT
        $TL batch {clip} --out $MNT/out {models} 2>$RES/err; echo $? > $RES/rc
        true""", tmp_path)
    err = (tmp_path / "err").read_text()
    assert (tmp_path / "rc").read_text().strip() == "2", err[-2000:]
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Read-only file system" in errors[0] and "--out" in errors[0], err[-2000:]
    assert "Traceback" not in err


def test_killed_rerun_leaves_no_outputs_that_look_finished(tmp_path: Path, mot17_dir: Path, yolox_onnx: Path,
                                                           osnet_onnx: Path):
    """A finished run, then a re-run with changed settings killed with SIGKILL: the old summary and MOT
    files must not stay behind claiming "done" for results the store no longer has."""
    clip = _clip(mot17_dir, tmp_path / "lobby.avi", 400)
    out = tmp_path / "out"
    args = ["batch", str(clip), "--out", str(out), *_models(yolox_onnx, osnet_onnx)]
    assert main(args) == 0 and (out / "lobby.txt").exists()
    proc = _cli([*args, "--conf", "0.3"])
    _wait_until_running(proc, out / "tracklink.db", "lobby")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    assert summary.get("status") == "running" or not summary, summary
    assert "done" not in json.dumps(summary.get("cameras", {}))
    assert not (out / "lobby.txt").exists() and not (out / "lobby.global.txt").exists()


def test_sigterm_ends_a_run_as_ctrl_c_does(tmp_path: Path, mot17_dir: Path, yolox_onnx: Path, osnet_onnx: Path):
    """systemd, docker and Kubernetes stop with SIGTERM: summary written, exit 130 as for Ctrl-C, and a live
    camera that never connected ends as an error, not as done with 0 frames."""
    clip = _clip(mot17_dir, tmp_path / "lobby.avi", 400)
    out = tmp_path / "out"
    proc = _cli(["batch", str(clip), "dead=rtsp://127.0.0.1:9/stream", "--out", str(out),
                 *_models(yolox_onnx, osnet_onnx)])
    _wait_until_running(proc, out / "tracklink.db", "lobby")
    _wait_until_running(proc, out / "tracklink.db", "dead")  # both opened: the stop lands in the run
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["status"] == "interrupted"
    assert summary["cameras"]["lobby"]["status"] in ("interrupted", "done")
    assert summary["cameras"]["dead"]["status"] == "error" and "never connected" in summary["cameras"]["dead"]["error"]
    assert _camera_status(out / "tracklink.db", "dead") == "error"
    assert "Traceback" not in err


def test_disk_filling_mid_run_keeps_the_store(tmp_path: Path, mot17_dir: Path, yolox_onnx: Path, osnet_onnx: Path):
    """The disk fills while a 400-frame camera is processed (about 400 KiB left: the start of the run fits,
    its rows do not): one line with the cause, the store passes SQLite's integrity check, and the same
    command with space again finishes the camera."""
    _own_mount_namespace()
    clip = _clip(mot17_dir, tmp_path / "long.avi", 400)
    models = " ".join(_models(yolox_onnx, osnet_onnx))
    check = f"{sys.executable} -c \"import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])\""
    _tracklink_in_tmpfs(f"""
        dd if=/dev/zero of=$MNT/filler bs=1k count=3700 2>/dev/null
        $TL batch {clip} --out $MNT/out {models} 2>$RES/err1; echo $? > $RES/rc1
        ls -a $MNT/out > $RES/ls1
        rm $MNT/filler
        {check} $MNT/out/tracklink.db > $RES/integrity
        $TL batch {clip} --out $MNT/out {models} 2>$RES/err2; echo $? > $RES/rc2
        cp $MNT/out/summary.json $RES/summary.json
        true""", tmp_path)
    read = lambda name: (tmp_path / name).read_text()  # noqa: E731
    assert read("rc1").strip() == "2", read("err1")[-2000:]
    errors = [line for line in read("err1").splitlines() if "error:" in line]
    assert len(errors) == 1 and "disk is full" in errors[0] and "run the same command again" in errors[0], errors
    assert "Traceback" not in read("err1") and not [n for n in read("ls1").split() if n.endswith(".tmp")]
    assert read("integrity").strip() == "ok"
    assert read("rc2").strip() == "0", read("err2")[-2000:]
    summary = json.loads(read("summary.json"))
    assert summary["status"] == "done" and summary["cameras"]["long"]["frames"] == 400
