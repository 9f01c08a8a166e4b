"""Compare training recipes by k-fold cross-validation over identities x seeds, with paired differences.

The 40 PKU identities are shuffled once (seed 0) and cut into --folds folds; each run fine-tunes the imported
OSNet on the other folds' ids and is scored on the held-out fold by the image-level cross-camera protocol of
`tracklink eval` (the same `evaluate`, in process, on the final weights). Every (recipe, fold, seed) result is
cached as OUT/RECIPE/fold<F>_seed<S>.json, so reruns and added recipes reuse finished runs; a cached result
whose recipe flags changed is run again. The table gives mean +- std over all folds x seeds, the seed-to-seed
std (within a fold, averaged over folds), the least and the median training wall time (the CPU may be
shared: the least is the nearest to a quiet machine), and the paired difference against --baseline (same folds and seeds) with its standard error
std(d, ddof=1) / sqrt(n).

    nice -n 10 python bench/recipes.py --recipes preset,default --baseline preset [--out runs/recipes]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KEYS = ("image_rank1", "image_mAP", "tracklet_rank1", "tracklet_mAP")
# The tracklink defaults before issue 14, spelled out so the row keeps meaning the same after the defaults move.
OLD_DEFAULT = ("--epochs 12 --p 8 --k 2 --t 4 --id-repeats 1 --loss osm_caa --cls-loss ce --label-smoothing 0 "
               "--lr 3.5e-4 --schedule cosine --warmup-epochs 1 --classifier-lr-mult 1 --erase-p 0.5 "
               "--alpha 1.2 --sigma 0.8 --lam 0.5 --pooling mean")
RECIPES = {
    "preset": "--config softmax_triplet --epochs 12",
    "default_before": OLD_DEFAULT,
    "default": "",
    # Ablations of the default, one switch each: the loss parts, then the defaults changed in issue 14.
    "no_metric_loss": "--loss none",
    "no_ce": "--cls-loss none",
    "no_caa": "--loss osm",
    "no_tracklet_term": "--no-tracklet-loss",
    "no_label_smoothing": "--label-smoothing 0",
    "id_repeats_1": "--id-repeats 1",
    "classifier_lr_1x": "--classifier-lr-mult 1",
}

TABLE = "preset,default,default_before,no_metric_loss,no_ce,no_caa,no_tracklet_term"  # the README's table


def folds(ids: list[str], n_folds: int) -> list[list[str]]:
    """The held-out ids of each fold: one fixed shuffle (seed 0) cut into near-equal parts."""
    order = np.random.default_rng(0).permutation(len(ids))
    return [sorted(ids[i] for i in part) for part in np.array_split(order, n_folds)]


def train_and_score(flags: str, data: str, init: str, train_ids: list[str], eval_ids: list[str], seed: int,
                    out: Path, workers: int) -> dict:
    """One fine-tune with the real training engine, scored on the held-out ids; returns metrics + wall time."""
    from tracklink.data.datasets import load_identities
    from tracklink.train.cli import _NOT_CONFIG, add_arguments
    from tracklink.train.config import load_config
    from tracklink.train.engine import Trainer

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(shlex.split(flags))
    overrides = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
    base = {"data": data, "init": init, "ids": ",".join(train_ids), "seed": seed, "out": str(out),
            "workers": workers, "progress": False, "checkpoint_seconds": 1e9}
    cfg = load_config(args.config, {**base, **{k: v for k, v in overrides.items() if v is not None}})
    started = time.monotonic()
    trainer = Trainer(cfg)
    try:
        trainer.fit()
        train_s = time.monotonic() - started
        metrics = trainer.evaluate(load_identities(data, ",".join(eval_ids)))
    finally:
        trainer.close()
    return {"train_seconds": round(train_s, 1), **{k: float(metrics[k]) for k in KEYS}}


def run_cached(recipe: str, flags: str, fold: int, seed: int, ctx: argparse.Namespace) -> dict:
    path = Path(ctx.out) / recipe / f"fold{fold}_seed{seed}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("flags") == flags and cached.get("fold_ids") == ctx.folds_ids[fold]:
            return cached
    held_out = ctx.folds_ids[fold]
    train_ids = [i for i in ctx.all_ids if i not in held_out]
    result = train_and_score(flags, ctx.data, ctx.init, train_ids, held_out, seed,
                             Path(ctx.out) / recipe / f"run_fold{fold}_seed{seed}", ctx.workers)
    record = {"recipe": recipe, "flags": flags, "fold": fold, "seed": seed, "fold_ids": held_out, **result}
    path.parent.mkdir(parents=True, exist_ok=True)
    from tracklink.utils.files import atomic_write

    atomic_write(path, json.dumps(record, indent=1))
    print(json.dumps({k: record[k] for k in ("recipe", "fold", "seed", "train_seconds", *KEYS)}), flush=True)
    return record


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def _seed_std(runs: list[dict], key: str) -> float:
    """Std over seeds within each fold (ddof 1), averaged over folds."""
    by_fold: dict[int, list[float]] = {}
    for r in runs:
        by_fold.setdefault(r["fold"], []).append(r[key])
    stds = [statistics.stdev(v) for v in by_fold.values() if len(v) > 1]
    return statistics.mean(stds) if stds else float("nan")


def _paired(runs: list[dict], base: list[dict], key: str) -> str:
    if runs is base:
        return "(baseline)"
    ref = {(r["fold"], r["seed"]): r[key] for r in base}
    d = [r[key] - ref[(r["fold"], r["seed"])] for r in runs if (r["fold"], r["seed"]) in ref]
    if len(d) < 2:
        return "-"
    return f"{statistics.mean(d):+.3f} ± {statistics.stdev(d) / len(d) ** 0.5:.3f}"


def table(results: dict[str, list[dict]], baseline: str) -> str:
    head = ("| recipe | n | image rank-1 | image mAP | seed std mAP | tracklet mAP | train s min / median | "
            f"Δ mAP vs {baseline} (± SE) | Δ rank-1 vs {baseline} (± SE) |")
    rows = [head, "|" + "---|" * 9]
    base = results.get(baseline, [])
    for recipe, runs in results.items():
        if not runs:
            continue
        col = lambda k: [r[k] for r in runs]  # noqa: E731
        rows.append(f"| {recipe} | {len(runs)} | {_mean_std(col('image_rank1'))} | {_mean_std(col('image_mAP'))} | "
                    f"{_seed_std(runs, 'image_mAP'):.3f} | {_mean_std(col('tracklet_mAP'))} | "
                    f"{min(col('train_seconds')):.0f} / {statistics.median(col('train_seconds')):.0f} | {_paired(runs, base, 'image_mAP')} | "
                    f"{_paired(runs, base, 'image_rank1')} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", default=str(REPO.parent / "shared" / "assets"))
    ap.add_argument("--out", default="runs/recipes")
    ap.add_argument("--recipes", default=TABLE, help=f"comma-separated, from {', '.join(RECIPES)}")
    ap.add_argument("--baseline", default="preset")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workers", type=int, default=0, help="data loader processes per run")
    ap.add_argument("--table-only", action="store_true", help="print the table of the cached runs, train nothing")
    ctx = ap.parse_args()
    from tracklink.data.datasets import load_identities

    assets = Path(ctx.assets)
    ctx.data = f"folder:{assets / 'reid' / 'pku-reid-40'}"
    ctx.init = str(assets / "models" / "osnet_x0_25_msmt17.onnx")
    ctx.all_ids = load_identities(ctx.data, None).identities("all")
    ctx.folds_ids = folds(ctx.all_ids, ctx.folds)
    seeds = [int(s) for s in ctx.seeds.split(",")]
    names = ctx.recipes.split(",")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
    results: dict[str, list[dict]] = {n: [] for n in dict.fromkeys([ctx.baseline, *names]) if n in RECIPES}
    # Seed-major, then fold, then recipe: a run cut short still leaves complete pairs to compare.
    for seed in seeds:
        for fold in range(ctx.folds):
            for name in results:
                path = Path(ctx.out) / name / f"fold{fold}_seed{seed}.json"
                if ctx.table_only:
                    if path.is_file():
                        results[name].append(json.loads(path.read_text()))
                    continue
                results[name].append(run_cached(name, RECIPES[name], fold, seed, ctx))
    print(f"{ctx.folds}-fold CV over {len(ctx.all_ids)} ids x seeds {ctx.seeds}; image-level cross-camera protocol")
    print(table(results, ctx.baseline))


if __name__ == "__main__":
    main()
