"""Training engine end to end on tiny synthetic data: CLI, checkpoints, kill and resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tracklink.cli import main

TINY = ["--arch", "osnet_x0_25", "--p", "3", "--k", "2", "--t", "2", "--workers", "0", "--no-progress",
        "--lr", "1e-3", "--warmup-epochs", "0"]


def _write_identity_folder(root: Path, n_ids: int = 6, frames: int = 3, size=(32, 16)) -> Path:
    """<pid>/<cam>_<k>.png with a colour per identity, so there is something to learn."""
    rng = np.random.default_rng(0)
    for pid in range(n_ids):
        colour = rng.integers(0, 255, 3)
        for cam in ("c1", "c2"):
            (root / f"{pid:04d}").mkdir(parents=True, exist_ok=True)
            for k in range(frames):
                img = np.clip(colour + rng.normal(0, 20, (*size, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(root / f"{pid:04d}" / f"{cam}_{k}.png"), img)
    return root


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return _write_identity_folder(tmp_path / "ids")


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", f"folder:{data}", "--out", str(out), "--epochs", "2", *TINY,
            "--config", str(_tiny_config(out.parent)), *extra]


def _tiny_config(folder: Path) -> Path:
    """YAML config with a small input size: also exercises the YAML layer under the flags."""
    path = folder / "tiny.yaml"
    path.write_text("input_size: [64, 32]\ncheckpoint_seconds: 0\n")
    return path


def test_train_writes_a_checkpoint_that_eval_accepts(tiny_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(_train_args(tiny_data, out, "--json")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 4  # 6 ids / P=3 -> 2 batches per epoch, 2 epochs
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(np.isfinite(r["mean_loss"]) for r in log)
    config = (out / "config.yaml").read_text()
    assert "input_size:\n- 64\n- 32" in config  # the YAML value survived, the flags overrode the rest
    assert main(["eval", "--model", str(out / "last.pt"), "--data", f"folder:{tiny_data}", "--json",
                 "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("image_rank1", "image_mAP", "tracklet_rank1", "tracklet_mAP", "image_rank5"):
        assert 0.0 <= result[key] <= 1.0
    assert result["pooling"] == "mean"

    # The checkpoint kept its classifier, so class-aware attention pooling runs end to end; an ONNX has none.
    assert main(["eval", "--model", str(out / "last.pt"), "--data", f"folder:{tiny_data}", "--json",
                 "--no-progress", "--pooling", "caa"]) == 0
    caa = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert caa["pooling"] == "caa" and caa["image_mAP"] == result["image_mAP"]  # frames are pooled, not images
    assert main(["export", "--model", str(out / "last.pt"), "--format", "onnx", "--out", str(out / "m.onnx"),
                 "--parity-crops", str(tiny_data)]) == 0
    capsys.readouterr()
    assert main(["eval", "--model", str(out / "m.onnx"), "--data", f"folder:{tiny_data}", "--no-progress",
                 "--pooling", "caa"]) == 2
    assert "classifier" in capsys.readouterr().err


def test_ablation_losses_all_train(tiny_data: Path, tmp_path: Path) -> None:
    for loss in ("contrastive", "triplet", "osm", "osm_caa"):
        out = tmp_path / loss
        assert main(_train_args(tiny_data, out, "--loss", loss, "--epochs", "1")) == 0
        assert (out / "last.pt").is_file()


def _run_cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "tracklink", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_kill_mid_epoch_and_resume_is_bit_for_bit(tmp_path: Path) -> None:
    data = _write_identity_folder(tmp_path / "ids", n_ids=9)  # 3 batches per epoch
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert main(_train_args(data, reference)) == 0

    proc = _run_cli(_train_args(data, killed))
    steps = killed / "steps.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if steps.exists() and len(steps.read_text().splitlines()) >= 2:  # inside epoch 1 (3 batches)
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"training ended before it could be killed: {proc.communicate()[1][-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(steps.read_text().splitlines())
    assert killed_at < 6

    assert main(_train_args(data, killed, "--resume")) == 0
    lines = [json.loads(line) for line in steps.read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 7)), "every step once, in order, no duplicates"
    ref_lines = [json.loads(line) for line in (reference / "steps.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in lines] == [r["loss"] for r in ref_lines]
    ref, res = _state(reference / "last.pt"), _state(killed / "last.pt")
    assert all(torch.equal(ref[k], res[k]) for k in ref)


def test_sigterm_saves_and_exits_with_a_resume_hint(tmp_path: Path) -> None:
    data = _write_identity_folder(tmp_path / "ids", n_ids=9)
    out = tmp_path / "run"
    proc = _run_cli(_train_args(data, out, "--epochs", "50"))
    steps = out / "steps.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (steps.exists() and steps.read_text().strip()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "stopped by SIGTERM" in err and "--resume" in err and "Traceback" not in err
    saved = torch.load(out / "last.pt", weights_only=True)["train_state"]["position"]["step"]
    assert saved == len(steps.read_text().splitlines())


@pytest.mark.parametrize("case", ["missing_folder", "corrupt_image", "unknown_arch", "nan_loss", "empty_identity"])
def test_bad_input_gets_one_clear_message(case: str, tiny_data: Path, tmp_path: Path, capsys) -> None:
    args = _train_args(tiny_data, tmp_path / "run", "--epochs", "1")
    expected = {
        "missing_folder": "does not exist",
        "corrupt_image": "0003/c1_1.png",
        "unknown_arch": "unknown architecture 'osnet_x9'",
        "nan_loss": "loss became",
        "empty_identity": "0007",
    }[case]
    if case == "missing_folder":
        args[args.index("--data") + 1] = f"folder:{tmp_path / 'nowhere'}"
    elif case == "corrupt_image":
        (tiny_data / "0003" / "c1_1.png").write_bytes(b"\x89PNG truncated")
        args[args.index("--t") + 1] = "3"  # every frame of every tracklet is read in epoch 1
    elif case == "unknown_arch":
        args[args.index("--arch") + 1] = "osnet_x9"
    elif case == "nan_loss":
        args[args.index("--lr") + 1] = "1e30"
        args[args.index("--epochs") + 1] = "3"
    elif case == "empty_identity":
        (tiny_data / "0007").mkdir()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err and len([line for line in err.splitlines() if "error:" in line]) == 1


def test_resume_needs_the_same_options_but_not_the_init_file(tiny_data: Path, tmp_path: Path, capsys) -> None:
    first = tmp_path / "first"
    assert main(_train_args(tiny_data, first, "--epochs", "1")) == 0
    init = tmp_path / "init.pt"
    init.write_bytes((first / "last.pt").read_bytes())
    out = tmp_path / "run"
    assert main(_train_args(tiny_data, out, "--init", str(init))) == 0
    init.unlink()  # the checkpoint holds everything a resume needs
    assert main(_train_args(tiny_data, out, "--init", str(init), "--resume", "--workers", "1")) == 0
    capsys.readouterr()
    assert main(_train_args(tiny_data, out, "--resume", "--lr", "0.5")) == 2
    assert "--resume with a different lr" in capsys.readouterr().err
