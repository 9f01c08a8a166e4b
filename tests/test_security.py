"""Model files never run code: a malicious pickle given to every command that takes a model or checkpoint.

The pickle's only effect when unpickled is to create a marker file; after each command the marker must
not exist, and the error must name the file (proof that the command reached the model, not an earlier
check). Detector paths name --trust-pickle, the explicit opt-in. Offline and without the shared assets.
"""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tracklink.cli import main


class _CreatesMarker:
    """Unpickling this calls open(marker, "w"): a harmless stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture()
def evil(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """(malicious .pt, marker it would create); downloads refused, caches and settings inside tmp_path."""
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": "tracklink", "state_dict": {}, "payload": _CreatesMarker(marker)}, path)

    def offline(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return path, marker


@pytest.fixture()
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for k in range(3):
        writer.write(np.full((48, 64, 3), 40 * k, np.uint8))
    writer.release()
    return path


def _view(clip: Path, tmp_path: Path, *flags: str) -> list[str]:
    """The viewer, offscreen, for one step (it loads its models in its worker thread)."""
    return ["view", "--source", str(clip), "--frames", "1", "--screenshot", str(tmp_path / "shot.png"),
            "--forget-settings", *flags]


def _refused(argv: list[str], marker: Path, capsys, names: str, trust_hint: bool) -> None:
    rc = main(argv)
    err = capsys.readouterr().err
    assert not marker.exists(), f"unpickling ran code: {' '.join(argv)}"
    assert rc != 0, f"{' '.join(argv)} accepted a malicious pickle"
    assert names in err, f"the error does not name {names}: {err[-500:]}"
    assert "weights_only=False" not in err and "weights_only` set to `False" not in err
    if trust_hint:
        assert "--trust-pickle" in err, err[-500:]


def test_malicious_pickle_runs_no_code_in_any_command(evil, clip: Path, tmp_path: Path, capsys):
    path, marker = evil
    crops, labelled = tmp_path / "crops", tmp_path / "labelled"
    for a, b in (("cam1", "t1"), ("cam2", "t1")):  # match's layout: <camera>/<tracklet>/<frame>
        (crops / a / b).mkdir(parents=True)
        cv2.imwrite(str(crops / a / b / "0.png"), np.zeros((128, 64, 3), np.uint8))
    for pid in ("0001", "0002"):  # a labelled folder dataset: <pid>/<cam>_<k>
        (labelled / pid).mkdir(parents=True)
        for cam in ("01", "02"):
            cv2.imwrite(str(labelled / pid / f"{cam}_1.png"), np.full((128, 64, 3), int(pid) * 60, np.uint8))
    out = str(tmp_path / "out")
    detector_cases = [
        ["batch", str(clip), "--detector", str(path), "--out", out, "--no-progress"],
        ["export", "--detector", str(path), "--format", "onnx", "--out", str(tmp_path / "d.onnx")],
        _view(clip, tmp_path, "--detector", str(path)),
    ]
    model_cases = [
        ["batch", str(clip), "--reid", str(path), "--detector", "yolo11n.pt", "--out", out, "--no-progress"],
        _view(clip, tmp_path, "--reid", str(path), "--detector", "yolo11n.pt"),
        ["export", "--model", str(path), "--format", "onnx", "--out", str(tmp_path / "m.onnx")],
        ["eval", "--model", str(path), "--data", f"folder:{labelled}"],
        ["match", "--model", str(path), "--data", str(crops), "--out", str(tmp_path / "m.json")],
        ["calibrate", "--model", str(path), "--data", f"folder:{labelled}"],
        ["import-weights", str(path), "--out", str(tmp_path / "imported.pt")],
        ["train", "--init", str(path), "--data", f"folder:{labelled}", "--out", str(tmp_path / "run"),
         "--epochs", "1", "--p", "2", "--k", "1", "--t", "1", "--device", "cpu", "--workers", "0", "--no-progress"],
    ]
    for argv in detector_cases:
        _refused(argv, marker, capsys, path.name, trust_hint=True)
    for argv in model_cases:
        _refused(argv, marker, capsys, path.name, trust_hint=False)


def test_train_resume_refuses_a_malicious_last_checkpoint(evil, tmp_path: Path, capsys):
    path, marker = evil
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(path, run / "last.pt")
    _refused(["train", "--resume", "--out", str(run), "--data", f"folder:{tmp_path}", "--device", "cpu"],
             marker, capsys, "last.pt", trust_hint=False)


def test_planted_default_detector_in_the_working_directory_never_loads(evil, clip: Path, tmp_path: Path,
                                                                      monkeypatch, capsys):
    """A yolo11n.pt in the working directory is not the published file: neither the default detector nor
    the published name given explicitly may pick it up (offline here, so the name cannot be fetched)."""
    path, marker = evil
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(path, work / "yolo11n.pt")
    monkeypatch.chdir(work)
    out = str(tmp_path / "out")
    for argv in (["batch", str(clip), "--detector", "yolo11n.pt", "--out", out, "--no-progress"],
                 ["export", "--detector", "yolo11n.pt", "--format", "onnx"]):
        _refused(argv, marker, capsys, "yolo11n.pt", trust_hint=False)
    # With no --detector, the packaged YOLOX-nano (an ONNX, checked by sha256) runs; the planted file never.
    assert main(["batch", str(clip), "--out", out, "--no-progress"]) == 0, capsys.readouterr().err[-2000:]
    assert main(_view(clip, tmp_path)) == 0, capsys.readouterr().err[-2000:]
    assert not marker.exists()


def test_trusted_pickle_is_loaded_only_with_the_flag(tmp_path: Path, clip: Path, capsys):
    """--trust-pickle is a real opt-in: the same local ultralytics .pt loads with it and not without, in the
    API and in `batch` (whose error then names only the missing re-ID model)."""
    from ultralytics import YOLO

    from tracklink import TracklinkError
    from tracklink.app.detect import make_detector

    path = tmp_path / "tiny.pt"
    YOLO("yolo11n.yaml").save(str(path))  # an untrained model built from its YAML: no download
    with pytest.raises(TracklinkError, match="--trust-pickle"):
        make_detector(str(path))
    assert make_detector(str(path), trust_pickle=True)([np.zeros((64, 64, 3), np.uint8)])[0].xyxy.shape[1] == 4
    argv = ["batch", str(clip), "--detector", str(path), "--reid", str(tmp_path / "absent.onnx"), "--out",
            str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 2 and "--trust-pickle" in capsys.readouterr().err
    assert main([*argv, "--trust-pickle"]) == 2
    err = capsys.readouterr().err
    assert "absent.onnx" in err and "tiny.pt" not in err, err


def test_published_detector_is_checked_against_its_sha256(tmp_path: Path, monkeypatch):
    """A file in the cache under the published name but with another checksum is downloaded again (here:
    offline, so refused), never loaded."""
    from tracklink import TracklinkError
    from tracklink.models.weights import fetch_detector

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached = tmp_path / "tracklink" / "ultralytics" / "yolo11n.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the published file")

    def offline(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(TracklinkError, match="cannot download the detector yolo11n.pt"):
        fetch_detector("yolo11n.pt")


def test_checkpoint_errors_never_advise_unsafe_loading(evil):
    """PyTorch's refusal suggests retrying with weights_only=False; passing that on would tell users to run
    the code that was just refused."""
    from tracklink import TracklinkError
    from tracklink.models.checkpoint import read_checkpoint

    path, marker = evil
    with pytest.raises(TracklinkError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "evil.pt" in message and "io.open" in message
    assert "can still be loaded" not in message and "weights_only" not in message and "\x1b[" not in message
    assert not marker.exists()
