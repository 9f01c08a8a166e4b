"""Pick a model's link threshold on labelled data: the one whose batch linking has the best pairwise F1.

Tracklets are embedded and pooled as `tracklink batch` and `tracklink match` pool them, and clustered as they
cluster them; the threshold with the best pairwise F1 over tracklet pairs (from different cameras by
default) is printed as JSON. With --write it is stored with the model, where batch and match find it: in a
tracklink checkpoint's metadata, or beside an ONNX or engine file as <model>.link.json.
Calibrate on people the test will not see (--ids), and on footage like the deployment's.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tracklink.app.session import POOLINGS, add_embedder_arguments

    p.add_argument("--data", required=True, help="labelled dataset as KIND:PATH, e.g. folder:../shared/assets/reid/pku-reid-40")
    p.add_argument("--ids", help="use only these identities: a split file, or pids / 1-based ranges like 1-20")
    p.add_argument("--pairs", choices=("cross-camera", "all"), default="cross-camera",
                   help="tracklet pairs scored: from different cameras only (default), or all")
    p.add_argument("--pooling", choices=POOLINGS, default="mean",
                   help="tracklet feature from its frames, as the deployment will pool them (default: mean)")
    p.add_argument("--write", action="store_true", help="store the threshold with the model")
    add_embedder_arguments(p)


def run(args: argparse.Namespace) -> int:
    from tracklink.app.link import calibrate_threshold, write_threshold
    from tracklink.app.session import crop_tracklets
    from tracklink.data.datasets import load_identities
    from tracklink.export.runtime import open_embedder

    dataset = load_identities(args.data, args.ids)
    labelled = list({t.key: t for t in dataset.split("all")}.values())  # folder datasets repeat them per split
    embedder = open_embedder(args.model, backend=args.backend, device=args.device)
    tracklets = crop_tracklets(embedder, [(t.cam, t.frames) for t in labelled], args.pooling, args.batch_size,
                               args.progress)
    pooled = [(t, source) for t, source in zip(tracklets, labelled) if t.feature is not None]
    result = calibrate_threshold([t.feature for t, _ in pooled], [s.pid for _, s in pooled],
                                 [s.cam for _, s in pooled], weights=[t.num_embeddings for t, _ in pooled],
                                 cross_camera_only=args.pairs == "cross-camera")
    output = {"model": str(args.model), "backend": embedder.backend, "data": args.data, "ids": args.ids,
              "pooling": args.pooling, **result}
    if args.write:
        details = {k: output[k] for k in ("data", "ids", "pairs", "pooling", "precision", "recall", "f1")}
        output["written"] = str(write_threshold(args.model, result["threshold"], details))
    print(json.dumps(output))
    return 0
