"""Cross-camera CMC/mAP of a model on a labelled dataset, at image level and tracklet level.

Each query is ranked against every sample from other cameras; the same camera is never counted.
Tracklet features are pooled from the frame embeddings by --pooling (default: their mean). The model may be a tracklink
checkpoint, an ONNX export (ours or an OSNet ONNX) or a TensorRT engine.

Reported: rank-1/5/10/20 and mAP. --rerank (k-reciprocal re-ranking, k1=20, k2=6, lambda=0.3) and --flip
(the mean of the embeddings of each image and its mirror) add results under their own prefixes (rerank_,
flip_, flip_rerank_); the plain protocol's keys never change. --plots DIR writes DIR/cmc.png and, with
--visrank N, DIR/visrank/ sheets of --visrank-queries queries and their top-N gallery images.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tracklink.models.pooling import POOLINGS
    from tracklink.utils.suffixes import BACKENDS

    p.add_argument("--model", required=True, help="tracklink checkpoint (.pt), ONNX or TensorRT engine")
    p.add_argument("--data", required=True, help="dataset as KIND:PATH, e.g. folder:../shared/assets/reid/pku-reid-40")
    p.add_argument("--ids", help="evaluate only these identities: a split file, or pids / 1-based ranges like 29-40")
    p.add_argument("--backend", choices=BACKENDS, help="override the file-type choice")
    p.add_argument("--pooling", choices=POOLINGS, default="mean",
                   help="tracklet features from frame embeddings: mean, max or caa (class-aware attention; needs "
                        "a tracklink checkpoint with its classifier) (default: mean)")
    p.add_argument("--rerank", action="store_true",
                   help="also report k-reciprocal re-ranking (Zhong et al. 2017; k1=20, k2=6, lambda=0.3) as rerank_*")
    p.add_argument("--flip", action="store_true",
                   help="also report flip test-time augmentation (image and mirror embeddings averaged) as flip_*")
    p.add_argument("--plots", metavar="DIR", help="write the CMC curve to DIR/cmc.png (and --visrank sheets)")
    p.add_argument("--visrank", type=int, default=0, metavar="N",
                   help="with --plots: sheets of queries and their top-N gallery images in DIR/visrank/")
    p.add_argument("--visrank-queries", type=int, default=10, metavar="K",
                   help="how many queries get a --visrank sheet, spread over the query set (default 10)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the best available)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def _check(args: argparse.Namespace) -> None:
    from tracklink import TracklinkError

    if args.visrank < 0 or args.visrank_queries < 1:
        raise TracklinkError(f"--visrank must be >= 0 and --visrank-queries >= 1, got {args.visrank} and "
                             f"{args.visrank_queries}")
    if args.visrank and not args.plots:
        raise TracklinkError("--visrank writes pictures into the --plots folder; add --plots DIR")


def run(args: argparse.Namespace) -> int:
    from tracklink.data.datasets import load_identities
    from tracklink.export.runtime import open_embedder
    from tracklink.train.evaluate import counts, embed_splits, score_splits

    _check(args)
    dataset = load_identities(args.data, args.ids)
    embedder = open_embedder(args.model, backend=args.backend, device=args.device)
    embed = embedder.embed_for(args.pooling)
    splits = embed_splits(embed, dataset, args.batch_size, args.progress)
    result = {"model": str(args.model), "backend": embedder.backend, "data": args.data, "ids": args.ids,
              "protocol": "cross-camera, cosine similarity",
              "rerank": {"k1": 20, "k2": 6, "lambda": 0.3} if args.rerank else False, "flip": args.flip,
              **score_splits(splits, args.pooling), **counts(splits, args.pooling)}
    if args.rerank:
        result.update(score_splits(splits, args.pooling, rerank=True, prefix="rerank_"))
    if args.flip:
        flipped = _flip(embed, dataset, splits, args)
        result.update(score_splits(flipped, args.pooling, prefix="flip_"))
        if args.rerank:
            result.update(score_splits(flipped, args.pooling, rerank=True, prefix="flip_rerank_"))
    if args.plots:
        result["plots"] = _plots(result, splits, args)
    _print(result, args.json)
    return 0


def _flip(embed, dataset, splits, args):
    """The same splits with every frame's embedding averaged with its mirror's."""
    from dataclasses import replace

    from tracklink.train.evaluate import embed_splits
    from tracklink.train.flip import average_views, mirrored

    mirror = embed_splits(mirrored(embed), dataset, args.batch_size, args.progress, desc="embed mirrored")
    q = average_views(splits.q, mirror.q)
    g = q if splits.same_set else average_views(splits.g, mirror.g)
    return replace(splits, q=q, g=g)


def _plots(result: dict, splits, args) -> dict:
    from pathlib import Path

    from tracklink.train.cmc_plot import plot_cmc
    from tracklink.train.visrank import write_visrank

    out = Path(args.plots)
    out.mkdir(parents=True, exist_ok=True)
    written = {"cmc": str(plot_cmc(result, out / "cmc.png", title=f"{Path(args.model).name} on {args.data}"
                                   + (f" ids {args.ids}" if args.ids else "")))}
    if args.visrank:
        sheets = write_visrank(splits, out / "visrank", args.visrank, args.visrank_queries)
        written["visrank"] = [str(p) for p in sheets]
    return written


def _print(result: dict, as_json: bool) -> None:
    from pathlib import Path

    if as_json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        if key.endswith("_cmc") or key == "plots":
            continue
        print(f"{key:>26}: {value:.4f}" if isinstance(value, float) else f"{key:>26}: {value}")
    plots = result.get("plots", {})
    if "cmc" in plots:
        print(f"{'cmc':>26}: {plots['cmc']}")
    if "visrank" in plots:
        sheets = plots["visrank"]
        print(f"{'visrank':>26}: {len(sheets)} sheets" + (f" in {Path(sheets[0]).parent}" if sheets else ""))
