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
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracklink.models.checkpoint import ModelMeta

log = logging.getLogger(__name__)


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
    from tracklink.app.link import write_threshold
    from tracklink.data.datasets import load_identities
    from tracklink.data.link_threshold import calibrate_on_tracklets, unique_tracklets
    from tracklink.export.runtime import open_embedder

    dataset = load_identities(args.data, args.ids)
    labelled = unique_tracklets(dataset)
    embedder = open_embedder(args.model, backend=args.backend, device=args.device)
    embed = embedder.embed_for(args.pooling)
    seen = warn_if_trained_on(embedder.meta, dataset.identities("all"), args.model)
    result = calibrate_on_tracklets(embed, labelled, args.pooling, args.batch_size, args.progress,
                                    cross_camera_only=args.pairs == "cross-camera")
    output = {"model": str(args.model), "backend": embedder.backend, "data": args.data, "ids": args.ids,
              "pooling": args.pooling, **result, "ids_seen_in_training": len(seen)}
    if args.write:
        details = {k: output[k] for k in ("data", "ids", "pairs", "pooling", "precision", "recall", "f1")}
        output["written"] = str(write_threshold(args.model, result["threshold"], details))
    print(json.dumps(output))
    return 0


def warn_if_trained_on(meta: "ModelMeta", identities: list[str], model: str) -> list[str]:
    """Warn when calibration identities are ones the model was trained on: its similarities between them
    are inflated, so the threshold comes out too high for the people it will meet (on PKU, a model fine-tuned
    on 40 ids and calibrated on them got 0.82 and open-world linking F1 0.55; at 0.70, 0.84)."""
    from tracklink.data.link_threshold import seen_in_training

    seen = seen_in_training(identities, getattr(meta, "classes", None) or [])
    if seen:
        shown = ", ".join(seen[:10]) + (", ..." if len(seen) > 10 else "")
        log.warning("%d of the %d calibration identities (%s) are ones %s was trained on; the threshold will be "
                    "too high for new people. Calibrate on held-out identities (--ids), e.g. those given to "
                    "`tracklink train --eval-ids`", len(seen), len(identities), shown, model)
    return seen
