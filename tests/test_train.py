"""Training engine end to end on tiny synthetic data: CLI, checkpoints, kill and resume, bad input."""

from __future__ import annotations

import csv
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

TINY = ["--arch", "osnet_x0_25", "--p", "3", "--k", "2", "--t", "2", "--id-repeats", "1", "--workers", "0",
        "--no-progress", "--lr", "1e-3", "--warmup-epochs", "0"]


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
    assert (out / "results.csv").is_file() and (out / "results.png").is_file()
    assert not (out / "best.pt").exists()  # best.pt needs held-out ids to be measured on
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
    # The child computes with as many threads as this process: a float sum split over another thread count
    # rounds differently. (An earlier import of ultralytics sets OMP_NUM_THREADS=1 in this environment after
    # this process's own pool already started.)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
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
    assert not list(killed.glob("*.tmp")), "a checkpoint write cut off by the kill left its temp file"


def test_onnx_init_leaves_every_thread_flushing_denormals(tmp_path: Path, osnet_onnx: Path) -> None:
    """Resume is bit-for-bit only if every thread of every run rounds alike. An --init from an ONNX
    re-estimates BN statistics before training; that work started the CPU thread pool before denormal
    flushing (a per-thread mode that new threads inherit) was set, so the workers of a fresh run computed
    without it while those of a resumed run flushed: BN statistics about 1e-38 apart. After setting up a
    trainer (in a fresh process), a product that underflows must be zero on every thread, and the model
    must hold no denormal value."""
    data = _write_identity_folder(tmp_path / "ids", n_ids=6)
    script = (
        "import sys, torch\n"
        "torch.set_num_threads(max(2, torch.get_num_threads()))  # a pool with workers, even on one core\n"
        "from tracklink.train.config import TrainConfig\n"
        "from tracklink.train.engine import Trainer\n"
        "cfg = TrainConfig(data=sys.argv[1], init=sys.argv[2], out=sys.argv[3], device='cpu', workers=0, p=3)\n"
        "t = Trainer(cfg)\n"
        "tiny = lambda v: int(((v != 0) & (v.abs() < torch.finfo(v.dtype).tiny)).sum())\n"
        "product = torch.full((1 << 22,), 1e-30) * 1e-10  # split across the thread pool\n"
        "model = sum(tiny(v) for v in t.model.state_dict().values() if v.is_floating_point())\n"
        "print(tiny(product), model, torch.get_num_threads())\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # ultralytics' import sets it to 1
    done = subprocess.run([sys.executable, "-c", script, f"folder:{data}", str(osnet_onnx), str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    underflowed, in_model, threads = map(int, done.stdout.split())
    assert underflowed == 0, f"{underflowed} denormal results: some of {threads} threads do not flush"
    assert in_model == 0


def test_stale_checkpoint_temp_file_is_cleaned_up(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".last.pt.k1lled00.tmp").write_bytes(b"")  # what a SIGKILL during a checkpoint write leaves
    assert main(_train_args(tiny_data, out, "--epochs", "1")) == 0
    assert (out / "last.pt").is_file() and not list(out.glob("*.tmp"))


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


def _crops_layout(ids: Path, dst: Path) -> Path:
    """The identity folder as `tracklink match` crops: DST/<camera>/<pid>/<frame>.png."""
    for image in ids.glob("*/*.png"):
        cam = image.stem.split("_")[0]
        (dst / cam / image.parent.name).mkdir(parents=True, exist_ok=True)
        (dst / cam / image.parent.name / image.name).write_bytes(image.read_bytes())
    return dst


def test_eval_ids_give_results_best_checkpoint_and_a_threshold_match_accepts(tmp_path: Path, capsys,
                                                                              caplog) -> None:
    data = _write_identity_folder(tmp_path / "ids", n_ids=8)
    out = tmp_path / "run"
    assert main(_train_args(data, out, "--ids", "1-6", "--eval-ids", "7-8", "--json")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]  # epoch 0: the held-out starting point
    assert rows[0]["mean_loss"] == "" and all(float(r["mean_loss"]) > 0 for r in rows[1:])
    assert all(0.0 <= float(r[k]) <= 1.0 for r in rows for k in ("eval_image_rank1", "eval_tracklet_mAP"))
    picture = cv2.imread(str(out / "results.png"))
    assert picture is not None and picture.shape[0] > 200 and picture.shape[1] > 400

    # best.pt is a model (no training state) from the epoch with the best held-out image mAP, with its
    # own calibrated threshold; last.pt carries the last epoch's.
    best = torch.load(out / "best.pt", weights_only=True)
    assert "train_state" not in best and summary["best"] == str(out / "best.pt")
    trained = [r for r in rows if int(r["epoch"]) > 0]
    best_row = max(trained, key=lambda r: float(r["eval_image_mAP"]))  # the first of equals, as training keeps
    assert best["meta"]["link_threshold"] == pytest.approx(float(best_row["link_threshold"]))
    last_meta = torch.load(out / "last.pt", weights_only=True)["meta"]
    assert last_meta["link_threshold"] == pytest.approx(float(rows[-1]["link_threshold"]))
    assert -1.0 <= last_meta["link_threshold"] <= 1.0 and summary["link_threshold"] == last_meta["link_threshold"]
    assert last_meta["classes"] == [f"{i:04d}" for i in range(6)]

    # `match` accepts the fresh model at once: the threshold came with it.
    crops = _crops_layout(data, tmp_path / "crops")
    assert main(["match", "--data", str(crops), "--model", str(out / "last.pt"), "--out", str(tmp_path / "links.json"),
                 "--no-progress"]) == 0
    links = json.loads((tmp_path / "links.json").read_text())
    assert len(links) == 16 and all(isinstance(g, int) for g in links.values())

    # calibrate names the training identities it is given, and stays quiet on held-out ones.
    capsys.readouterr()
    caplog.clear()
    assert main(["calibrate", "--model", str(out / "last.pt"), "--data", f"folder:{data}", "--ids", "5-8",
                 "--no-progress"]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("2 of the 4 calibration identities (0004, 0005)" in m for m in warned), warned
    assert json.loads(capsys.readouterr().out)["ids_seen_in_training"] == 2
    caplog.clear()
    assert main(["calibrate", "--model", str(out / "last.pt"), "--data", f"folder:{data}", "--ids", "7-8",
                 "--no-progress"]) == 0
    assert not [r for r in caplog.records if "trained on" in r.getMessage()]


def test_shipped_preset_resolves_by_name_and_path_and_unknown_names_list_the_presets(tmp_path: Path) -> None:
    from tracklink import TracklinkError
    from tracklink.train.config import PRESETS_DIR, load_config, presets

    assert "softmax_triplet" in presets()
    by_name = load_config("softmax_triplet", {})
    assert load_config("softmax_triplet.yaml", {}) == by_name
    assert load_config(PRESETS_DIR / "softmax_triplet.yaml", {"seed": 3}) == load_config("softmax_triplet", {"seed": 3})
    # The standard recipe: label-smoothed CE + batch-hard triplet 0.3 on P x K images, 10x classifier rate.
    assert (by_name.loss, by_name.cls_loss, by_name.label_smoothing, by_name.margin) == ("triplet", "ce", 0.1, 0.3)
    assert (by_name.t, by_name.tracklet_loss, by_name.classifier_lr_mult, by_name.erase_p) == (1, False, 10, 0.0)
    assert load_config("softmax_triplet", {"p": 3}).p == 3  # flags still override the preset
    with pytest.raises(TracklinkError, match="presets: .*softmax_triplet"):
        load_config("no_such_recipe", {})
    with pytest.raises(TracklinkError, match="neither a file nor a preset"):
        load_config(str(tmp_path / "missing.yaml"), {})


def test_a_tiny_run_with_the_standard_preset_trains(tiny_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "preset"
    assert main(["train", "--config", "softmax_triplet", "--data", f"folder:{tiny_data}", "--out", str(out),
                 "--p", "3", "--epochs", "1", "--max-batches-per-epoch", "2", "--workers", "0", "--no-progress",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert all(s["tracklet"] == 0.0 and s["metric"] > 0.0 and s["cls"] > 0.0 for s in steps)
    assert "loss: triplet" in (out / "config.yaml").read_text()


def test_metric_off_ablation_trains_on_the_classification_loss_alone(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ce_only"
    assert main(_train_args(tiny_data, out, "--loss", "none", "--epochs", "1")) == 0
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert all(s["metric"] == 0.0 and s["tracklet"] == 0.0 and s["cls"] > 0.0 for s in steps)


def test_classifier_rate_is_tenfold_for_fine_tunes_unless_given() -> None:
    from tracklink.train.config import TrainConfig

    assert TrainConfig(init="osnet.onnx").classifier_rate() == 10.0  # a new classifier on a trained backbone
    assert TrainConfig().classifier_rate() == 1.0  # from scratch every layer is new
    assert TrainConfig(init="osnet.onnx", classifier_lr_mult=3.0).classifier_rate() == 3.0
