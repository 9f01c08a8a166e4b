"""Cross-camera CMC/mAP of a model on a labelled dataset, at image level and tracklet level.

Each query is ranked against every sample from other cameras; the same camera is never counted.
Tracklet features are pooled from the frame embeddings by --pooling (default: their mean). The model may be a tracklink
checkpoint, an ONNX export (ours or an OSNet ONNX) or a TensorRT engine.
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
    p.add_argument("--device", default=None, help="cpu or cuda (default: the best available)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def run(args: argparse.Namespace) -> int:
    from tracklink import TracklinkError
    from tracklink.export.runtime import open_embedder
    from tracklink.data.datasets import load_identities
    from tracklink.train.evaluate import evaluate

    dataset = load_identities(args.data, args.ids)
    embedder = open_embedder(args.model, backend=args.backend, device=args.device)
    if args.pooling == "caa" and embedder.classifier is None:
        raise TracklinkError(f"--pooling caa needs the classifier of a tracklink checkpoint; {args.model} has none. "
                             "Use --pooling mean or max")
    embed = embedder.embed_with_attention if args.pooling == "caa" else embedder.embed
    result = evaluate(embed, dataset, batch_size=args.batch_size, progress=args.progress, pooling=args.pooling)
    result = {"model": str(args.model), "backend": embedder.backend, "data": args.data, **result}
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value:.4f}" if isinstance(value, float) else f"{key:>22}: {value}")
    return 0
