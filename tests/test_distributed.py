"""Real two-process DDP training with the gloo backend on CPU, on the shared PKU identities."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from tracklink.cli import main

pytestmark = pytest.mark.slow


def _args(pku: Path, out: Path, *extra: str) -> list[str]:
    config = out.parent / "small.yaml"
    config.write_text("input_size: [64, 32]\ncheckpoint_seconds: 0\nwarmup_epochs: 0\nid_repeats: 1\n")
    # BN frozen: SyncBatchNorm is CUDA-only, so on gloo each rank would normalise by its own half batch.
    return ["train", "--config", str(config), "--data", f"folder:{pku}", "--ids", "1-8", "--k", "2", "--t", "2",
            "--epochs", "2", "--workers", "0", "--freeze-bn", "--no-progress", "--lr", "1e-3", "--out", str(out), *extra]


def _steps(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "last.pt", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def two_rank_run(pku_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "two"
    assert main(_args(pku_dir, out, "--nproc", "2", "--p", "2", "--gather-embeddings", "--verify-sync")) == 0
    return out


def test_ranks_hold_identical_weights_after_every_step(two_rank_run: Path) -> None:
    steps = _steps(two_rank_run)
    assert len(steps) == 4  # 8 ids / (P=2 x 2 ranks) = 2 steps per epoch, 2 epochs
    for step in steps:
        assert len(step["param_checksums"]) == 2 and len(set(step["param_checksums"])) == 1
    assert len({s["param_checksums"][0] for s in steps}) == 4  # and the weights did change every step


def test_gathered_loss_matches_one_process_on_the_global_batch(pku_dir: Path, two_rank_run: Path, tmp_path: Path) -> None:
    single = tmp_path / "one"
    assert main(_args(pku_dir, single, "--p", "4")) == 0
    one, two = _steps(single), _steps(two_rank_run)
    assert [s["step"] for s in one] == [s["step"] for s in two]
    for a, b in zip(one, two):
        for key in ("loss", "metric", "tracklet", "cls"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
    ref, ddp = _weights(single), _weights(two_rank_run)
    assert max(float((ref[k].float() - ddp[k].float()).abs().max()) for k in ref) < 1e-4


def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tracklink", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for_steps(out: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / "steps.jsonl").exists() and len((out / "steps.jsonl").read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.communicate()[1][-3000:]}")
        time.sleep(0.05)
    raise AssertionError("no progress")


def test_kill_and_resume_continues_the_same_run(pku_dir: Path, two_rank_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    args = _args(pku_dir, out, "--nproc", "2", "--p", "2", "--gather-embeddings")
    proc = _spawn(args)
    _wait_for_steps(out, 2, proc)  # step 1 is checkpointed before step 2 is logged
    for child in psutil.Process(proc.pid).children(recursive=True):
        child.kill()
    proc.kill()
    proc.wait()
    assert len(_steps(out)) < 4

    assert main([*args, "--resume"]) == 0
    resumed, reference = _steps(out), _steps(two_rank_run)
    assert [s["step"] for s in resumed] == [1, 2, 3, 4]
    assert [s["loss"] for s in resumed] == pytest.approx([s["loss"] for s in reference], rel=1e-6)
    ref, res = _weights(two_rank_run), _weights(out)
    assert all(torch.allclose(ref[k].float(), res[k].float(), atol=1e-6) for k in ref)


def test_a_dead_rank_ends_the_job_with_a_clear_error(pku_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dies"
    proc = _spawn(_args(pku_dir, out, "--nproc", "2", "--p", "2", "--epochs", "200"))
    _wait_for_steps(out, 1, proc)
    workers = [c for c in psutil.Process(proc.pid).children(recursive=True) if "tracklink" in " ".join(c.cmdline())]
    assert len(workers) == 2
    victim = max(workers, key=lambda c: c.pid)
    victim.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=120)  # no hang: torchrun ends the surviving rank
    assert proc.returncode == 2
    assert "distributed training stopped" in err and "SIGKILL" in err and "--resume" in err


def test_two_ranks_train_without_a_classification_loss(pku_dir: Path, tmp_path: Path) -> None:
    # The classifier then gets no gradient; DDP must not wait for one.
    out = tmp_path / "nocls"
    assert main(_args(pku_dir, out, "--nproc", "2", "--p", "2", "--cls-loss", "none", "--epochs", "1")) == 0
    assert len(_steps(out)) == 2
