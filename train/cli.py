"""Train a video re-ID model with OSM+CAA on P x K x T tracklet batches.

Options come from defaults, then --config FILE.yaml, then the flags given here. Every epoch (and every
--checkpoint-seconds) OUT/last.pt is written; it is both a model for `tracklink eval --model` and the
state that `--resume` continues from, bit-for-bit. Every epoch also rewrites OUT/results.csv and
OUT/results.png (loss parts; held-out rank-1 and mAP). With --eval-ids, the link threshold is calibrated
on those held-out identities after every epoch and stored in the checkpoints, and OUT/best.pt keeps the
epoch with the best held-out image mAP.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tracklink.models.pooling import POOLINGS

    # Every default is None: only flags the user gives override the YAML file and TrainConfig's defaults.
    p.add_argument("--config", help="YAML file of options (keys as in the flags, with underscores), or the name of a "
                                    "shipped preset: softmax_triplet (the standard softmax + triplet recipe)")
    p.add_argument("--data", help="dataset as KIND:PATH, KIND in folder, mars, ilidsvid, prid2011, duke")
    p.add_argument("--out", help="output folder (default runs/train)")
    p.add_argument("--arch", help="backbone: osnet_x0_25 (default), osnet_x0_5, osnet_x0_75, osnet_x1_0, resnet50")
    p.add_argument("--init", help="start from a tracklink checkpoint, an OSNet ONNX or a torchreid .pth")
    p.add_argument("--ids", help="training identities: a split file, or pids / 1-based ranges like 1-28")
    p.add_argument("--eval-ids", help="held-out identities: evaluated after every epoch (best.pt) and used to calibrate "
                                        "the link threshold stored in the checkpoints")
    p.add_argument("--epochs", type=int)
    p.add_argument("--p", type=int, help="identities per batch (default 8)")
    p.add_argument("--k", type=int, help="tracklets per identity (default 2)")
    p.add_argument("--t", type=int, help="frames per tracklet (default 4)")
    p.add_argument("--id-repeats", type=int, help="times each identity is drawn per epoch (default 2)")
    p.add_argument("--loss", choices=["osm_caa", "osm", "contrastive", "triplet", "none"],
                   help="metric loss (default osm_caa; none trains the classification loss only)")
    p.add_argument("--cls-loss", choices=["ce", "caa_ce", "none"], help="classification loss (default ce)")
    p.add_argument("--label-smoothing", type=float, help="label smoothing of the classification loss (default 0.1)")
    p.add_argument("--margin", type=float, help="batch-hard triplet margin (default 0.3)")
    p.add_argument("--alpha", type=float, help="OSM negative margin (default 1.2)")
    p.add_argument("--sigma", type=float, help="OSM positive bandwidth (default 0.8)")
    p.add_argument("--lam", type=float, help="weight of the negative term (default 0.5)")
    p.add_argument("--sigma-form", choices=["paper", "official"], help="exp(-d^2/s^2) (paper) or exp(-d^2/2s^2)")
    p.add_argument("--no-tracklet-loss", dest="tracklet_loss", action="store_const", const=False,
                   help="train the frame-level term only")
    p.add_argument("--pooling", choices=POOLINGS, help="tracklet pooling stored in the model (default mean)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 3.5e-4)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--schedule", choices=["cosine", "constant"], help="learning rate after warm-up (default cosine)")
    p.add_argument("--erase-p", type=float, help="probability of random erasing per clip (default 0.5)")
    p.add_argument("--classifier-lr-mult", type=float, help="learning-rate multiplier of the new classifier "
                   "(default 10 with --init, else 1)")
    p.add_argument("--freeze-bn", action="store_const", const=True, help="keep BN statistics fixed")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="data loader processes (default 2)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1")
    p.add_argument("--no-amp", dest="amp", action="store_const", const=False, help="full precision on CUDA")
    p.add_argument("--checkpoint-seconds", type=float, help="mid-epoch checkpoint interval (default 60)")
    p.add_argument("--max-batches-per-epoch", type=int, help="cap an epoch's length (quick experiments)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    dist = p.add_argument_group("distributed (torchrun / DDP)")
    dist.add_argument("--nproc", type=int, default=None,
                      help="launch N local processes with torchrun (gloo on CPU, NCCL on GPUs); for several "
                           "nodes call `torchrun ... -m tracklink train` yourself")
    dist.add_argument("--gather-embeddings", action="store_const", const=True,
                      help="all-gather embeddings so OSM+CAA mines pairs over the global batch")
    dist.add_argument("--verify-sync", action="store_const", const=True,
                      help="check after every step that all ranks hold identical weights")
    dist.add_argument("--dist-timeout", type=float, help="seconds a collective may wait (default 600)")
    p.add_argument("--no-progress", dest="progress", action="store_const", const=False)
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")


_NOT_CONFIG = {"config", "resume", "json", "command", "verbose", "_module", "_argv", "nproc"}


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from tracklink import TracklinkError
    from tracklink.train.config import TrainConfig, load_config
    from tracklink.train.engine import LAST, Trainer

    if args.nproc is not None:
        if "LOCAL_RANK" in os.environ:  # already a torchrun worker: launching again would never end
            raise TracklinkError("--nproc inside a torchrun worker; give --nproc or use torchrun, not both")
        if args.nproc < 1:
            raise TracklinkError(f"--nproc must be at least 1, got {args.nproc}")
        from tracklink.train.distributed import launch

        return launch(args.nproc, _without_nproc(args._argv))

    overrides = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
    if args.resume:
        out = Path(args.out or TrainConfig.out)
        last = out / LAST
        if not last.is_file():
            raise TracklinkError(f"--resume: no {last} to resume from; start the run without --resume")
        from tracklink.models.checkpoint import read_checkpoint

        saved = read_checkpoint(last).get("train_state", {}).get("config")
        if saved is None:
            raise TracklinkError(f"--resume: {last} holds no training state")
        given = {k: v for k, v in overrides.items() if v is not None}
        cfg = TrainConfig.from_dict({**saved, **given})
    else:
        cfg = load_config(args.config, overrides)
    if not cfg.data:
        raise TracklinkError("no training data: pass --data KIND:PATH (e.g. --data folder:path/to/ids)")

    trainer = Trainer(cfg, resume_from=last if args.resume else None)
    try:
        if args.resume:
            trainer.resume()
        summary = trainer.fit()
    finally:
        trainer.close()
    if not trainer.dist.is_main:
        return 0
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"done: {summary['steps']} steps, model in {summary['out']}")
        if summary["best"]:
            print(f"best held-out epoch: {summary['best']}")
        threshold = summary["link_threshold"]
        print(f"link threshold: {threshold:.4f} (calibrated on --eval-ids)" if threshold is not None else
              "link threshold: none (pass --eval-ids to calibrate one, or run `tracklink calibrate --write`)")
        print(f"results: {summary['results']} and results.png")
    return 0
