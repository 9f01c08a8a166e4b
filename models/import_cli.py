"""Convert a torchreid OSNet `.pth` or an OSNet ONNX export into a tracklink checkpoint.

The checkpoint's embeddings match the source: for ONNX, cosine >= 0.9999 against ONNX Runtime.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="torchreid .pth/.pth.tar or OSNet .onnx")
    p.add_argument("--out", required=True, help="output checkpoint (.pt)")
    p.add_argument("--arch", default=None, help="architecture, when it cannot be inferred from the weights")


def run(args: argparse.Namespace) -> int:
    from tracklink.models.checkpoint import save_checkpoint
    from tracklink.models.onnx_import import import_weights

    from tracklink.models.weights import identify

    model, meta = import_weights(args.source, arch=args.arch)
    entry = identify(args.source)
    if entry is not None:  # a published file: keep its calibrated link threshold with the weights
        meta.link_threshold = entry.link_threshold
    save_checkpoint(args.out, model, meta)
    print(json.dumps({"out": str(args.out), "arch": meta.arch, "embedding_dim": meta.embedding_dim,
                      "input_size": list(meta.input_size), "bn_folded": meta.bn_folded,
                      "link_threshold": meta.link_threshold}))
    return 0
