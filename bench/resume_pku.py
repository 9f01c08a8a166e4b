"""Kill a real training run mid-epoch with SIGKILL, resume it, and compare its loss curve with an
uninterrupted run of the same configuration (by default the OSM+CAA run of bench/finetune_pku.py).

    python bench/resume_pku.py --reference runs/finetune_pku/osm_caa --kill-at-step 10

Prints JSON: the step the run was killed at, the step it resumed from, and whether every logged loss equals
the reference's (the sampler, augmentation and schedule are pure functions of seed, epoch and batch).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tracklink.train.config import TrainConfig


def steps(out: Path) -> list[dict]:
    path = out / "steps.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, help="output folder of a finished run")
    ap.add_argument("--out", default="runs/resume_pku")
    ap.add_argument("--kill-at-step", type=int, default=10)
    args = ap.parse_args()

    reference = Path(args.reference)
    config = torch.load(reference / "last.pt", weights_only=True)["train_state"]["config"]
    out = Path(args.out)
    flags = ["--data", config["data"], "--ids", config["ids"], "--init", config["init"], "--arch", config["arch"],
             "--epochs", str(config["epochs"]), "--loss", config["loss"], "--p", str(config["p"]),
             "--k", str(config["k"]), "--t", str(config["t"]), "--workers", str(config["workers"]),
             "--classifier-lr-mult", str(TrainConfig.from_dict(config).classifier_rate()), "--seed", str(config["seed"]),
             "--out", str(out), "--no-progress", "--checkpoint-seconds", "0"]
    cmd = [sys.executable, "-m", "tracklink", "train", *flags]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    while len(steps(out)) < args.kill_at_step and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(steps(out))
    saved = torch.load(out / "last.pt", weights_only=True)["train_state"]["position"]
    subprocess.run([*cmd, "--resume"], check=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    ours, ref = steps(out), steps(reference)
    print(json.dumps({
        "killed_after_step": killed_at, "resumed_from": saved,
        "steps_logged": len(ours), "steps_in_reference": len(ref),
        "steps_once_each_in_order": [s["step"] for s in ours] == list(range(1, len(ref) + 1)),
        "losses_equal_reference": [s["loss"] for s in ours] == [s["loss"] for s in ref],
        "loss_curve_around_kill": [(s["step"], round(s["loss"], 5), round(r["loss"], 5))
                                   for s, r in zip(ours, ref)][max(0, killed_at - 3):killed_at + 3],
    }, indent=2))


if __name__ == "__main__":
    main()
