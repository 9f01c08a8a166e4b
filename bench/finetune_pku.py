"""Fine-tune the imported OSNet-x0.25 on PKU ids 1-28 and evaluate on ids 29-40: before, after, and an ablation
of the metric loss on the same budget (plain contrastive, batch-hard triplet, OSM only, OSM+CAA).

Every run goes through the real CLI (`tracklink train`, `tracklink eval`). Prints one JSON object.

    python bench/finetune_pku.py [--assets ../shared/assets] [--epochs 10] [--out runs/finetune_pku]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cli_json import cli_json  # bench/ is on sys.path when a bench script runs

REPO = Path(__file__).resolve().parents[1]
KEYS = ("image_rank1", "image_rank5", "image_mAP", "tracklet_rank1", "tracklet_rank5", "tracklet_mAP")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", default=str(REPO.parent / "shared" / "assets"))
    ap.add_argument("--out", default="runs/finetune_pku")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--losses", default="contrastive,triplet,osm,osm_caa")
    ap.add_argument("--extra", default="--p 7 --k 2 --t 4 --classifier-lr-mult 10 --workers 1",
                    help="training flags shared by every run (the same budget for each loss)")
    args = ap.parse_args()

    assets, out = Path(args.assets), Path(args.out)
    data = f"folder:{assets / 'reid' / 'pku-reid-40'}"
    onnx = assets / "models" / "osnet_x0_25_msmt17.onnx"
    started = time.monotonic()
    imported = out / "osnet_x0_25_msmt17.pt"
    cli_json(["import-weights", str(onnx), "--out", str(imported)])
    evaluate = ["--data", data, "--ids", "29-40", "--json", "--no-progress"]
    result = {"protocol": "train ids 1-28, evaluate ids 29-40 (sorted), cross-camera, both directions",
              "before": {k: cli_json(["eval", "--model", str(imported), *evaluate])[k] for k in KEYS}, "runs": {}}
    for loss in args.losses.split(","):
        t0 = time.monotonic()
        cli_json(["train", "--data", data, "--ids", "1-28", "--init", str(onnx), "--arch", "osnet_x0_25",
                  "--epochs", str(args.epochs), "--loss", loss, "--out", str(out / loss), "--no-progress",
                  "--json", *args.extra.split()])
        train_s = time.monotonic() - t0
        after = cli_json(["eval", "--model", str(out / loss / "last.pt"), *evaluate])
        result["runs"][loss] = {"train_seconds": round(train_s, 1), **{k: after[k] for k in KEYS}}
        print(json.dumps({loss: result["runs"][loss]}), flush=True, file=__import__("sys").stderr)
    result["total_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
