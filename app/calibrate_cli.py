"""Pick a model's link threshold on labelled data: the one whose batch linking has the best pairwise F1.

Tracklets are embedded (mean of L2-normalised frame embeddings) and clustered as `tracklink batch` and
`tracklink match` cluster them; the threshold with the best pairwise F1 over tracklet pairs (from different
cameras by default) is printed as JSON. With --write it is stored with the model, where batch and match
find it: in a tracklink checkpoint's metadata, or beside an ONNX or engine file as <model>.link.json.
Calibrate on people the test will not see (--ids), and on footage like the deployment's.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="tracklink checkpoint (.pt), ONNX or TensorRT engine")
    p.add_argument("--data", required=True, help="labelled dataset as KIND:PATH, e.g. folder:../shared/assets/reid/pku-reid-40")
    p.add_argument("--ids", help="use only these identities: a split file, or pids / 1-based ranges like 1-20")
    p.add_argument("--pairs", choices=("cross-camera", "all"), default="cross-camera",
                   help="tracklet pairs scored: from different cameras only (default), or all")
    p.add_argument("--write", action="store_true", help="store the threshold with the model")
    p.add_argument("--backend", choices=["torch", "onnxruntime", "tensorrt"], help="override the file-type choice")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the best available)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-progress", dest="progress", action="store_false")


def run(args: argparse.Namespace) -> int:
    from tracklink.app.link import calibrate_threshold, write_threshold
    from tracklink.export.runtime import open_embedder
    from tracklink.train.engine import load_identities
    from tracklink.train.evaluate import embed_tracklets
    from tracklink.train.metrics import pool_by_tracklet

    dataset = load_identities(args.data, args.ids)
    tracklets = list({t.key: t for t in dataset.split("all")}.values())  # folder datasets repeat them per split
    embedder = open_embedder(args.model, backend=args.backend, device=args.device)
    feats, owner = embed_tracklets(embedder.embed, tracklets, args.batch_size, args.progress)
    pooled, index = pool_by_tracklet(feats, owner)
    chosen = [tracklets[i] for i in index]
    result = calibrate_threshold(pooled, [t.pid for t in chosen], [t.cam for t in chosen],
                                 weights=[len(t.frames) for t in chosen],
                                 cross_camera_only=args.pairs == "cross-camera")
    output = {"model": str(args.model), "backend": embedder.backend, "data": args.data, "ids": args.ids, **result}
    if args.write:
        details = {k: output[k] for k in ("data", "ids", "pairs", "precision", "recall", "f1")}
        output["written"] = str(write_threshold(args.model, result["threshold"], details))
    print(json.dumps(output))
    return 0
