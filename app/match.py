"""Link tracklets given as crops into global identities: DIR/<camera>/<tracklet>/<frame>.<ext> -> JSON.

Writes {"<camera>/<tracklet>": global_id, ...}, ids 1, 2, ... by first appearance. This is the linking code
of `tracklink batch` (tracklink.app.link) without timestamps: crops carry no time, so two tracklets of one
camera are taken NOT to overlap (they may be one person leaving and coming back) and no transit window
applies. `--mode batch` clusters all tracklets at once. `--mode online` calls the online linker as a live
run does, once when a tracklet matures and once when it ends: they mature one at a time in (camera,
tracklet) order and end, in the same order, after all have been seen. The threshold comes from
--link-threshold, else the `tracklink calibrate` sidecar beside the model, else the model's metadata, else
the catalogue entry of a published model (the order of `tracklink.app.link.resolve_threshold`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from tracklink.app.link import LinkConfig
    from tracklink.app.records import Tracklet

log = logging.getLogger(__name__)

LAYOUT = "DIR/<camera>/<tracklet>/<frame>.<jpg|jpeg|png|bmp>"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tracklink.app.session import POOLINGS, add_embedder_arguments

    p.add_argument("--data", required=True, help=f"crops laid out {LAYOUT}")
    p.add_argument("--out", required=True, help="output JSON: {\"<camera>/<tracklet>\": global_id}")
    p.add_argument("--link-threshold", type=float, default=None,
                   help="cosine similarity to join an identity (default: the model's calibrated threshold)")
    p.add_argument("--mode", choices=("batch", "online"), default="batch",
                   help="batch: cluster everything at once (default); online: link one tracklet at a time")
    p.add_argument("--pooling", choices=POOLINGS, default="mean",
                   help="tracklet feature from its crops: mean, max or caa (needs a checkpoint with its classifier)")
    add_embedder_arguments(p)


def read_crop_layout(root: str | Path) -> list[tuple[str, str, list[Path]]]:
    """(camera, tracklet, frame paths) in natural order; errors name the folder that breaks the layout."""
    from tracklink import TracklinkError
    from tracklink.data.datasets import natural_key
    from tracklink.utils.suffixes import is_image

    root = Path(root)
    if not root.is_dir():
        raise TracklinkError(f"--data {root} is not a folder; expected {LAYOUT}")

    hidden: list[Path] = []

    def subdirs(folder: Path) -> list[Path]:
        # Dot-folders are tool clutter (.git, .ipynb_checkpoints) more often than data: skipped, but said.
        folders = [p for p in folder.iterdir() if p.is_dir()]
        hidden.extend(p for p in folders if p.name.startswith("."))
        return sorted((p for p in folders if not p.name.startswith(".")), key=lambda p: natural_key(p.name))

    layout = []
    for cam in subdirs(root):
        stray = [p.name for p in cam.iterdir() if p.is_file() and is_image(p)]
        if stray:
            raise TracklinkError(f"{cam} holds images ({stray[0]}, ...) directly; put each tracklet's crops in "
                                 f"a folder of its own: {LAYOUT}")
        for trk in subdirs(cam):
            frames = sorted((p for p in trk.iterdir() if p.is_file() and is_image(p)),
                            key=lambda p: natural_key(p.name))
            if not frames:
                raise TracklinkError(f"tracklet folder {trk} holds no images; expected {LAYOUT}")
            layout.append((cam.name, trk.name, frames))
    if hidden:
        names = ", ".join(str(p.relative_to(root)) for p in sorted(hidden)[:3])
        log.warning("skipped %d folder(s) whose names start with '.' (%s%s); rename them to include them",
                    len(hidden), names, ", ..." if len(hidden) > 3 else "")
    if not layout:
        raise TracklinkError(f"no tracklets under {root}; expected {LAYOUT}")
    return layout


def match_tracklets(tracklets: Sequence["Tracklet"], config: "LinkConfig", mode: str = "batch") -> dict[str, int]:
    """{tracklet.key: global id} by batch clustering, or by the online linker fed in the given order."""
    from tracklink.app.link import OnlineLinker, cluster_tracklets

    if mode == "batch":
        return cluster_tracklets(tracklets, config)
    if mode != "online":
        raise ValueError(f"unknown mode {mode!r}; expected 'batch' or 'online'")
    linker = OnlineLinker(config)
    for t in tracklets:  # each one matures, in order...
        linker.link(t)
    for t in tracklets:  # ...and ends once all have been seen
        linker.link(t)
    dense: dict[int, int] = {}  # the linker never reuses ids, so some are gone: renumber 1, 2, ...
    return {t.key: dense.setdefault(t.global_id, len(dense) + 1) for t in tracklets}


def run(args: argparse.Namespace) -> int:
    import time

    layout = read_crop_layout(args.data)  # a bad folder fails before the model is loaded

    from tracklink.app.link import LinkConfig, resolve_threshold
    from tracklink.app.session import crop_tracklets
    from tracklink.export.runtime import open_embedder
    from tracklink.utils.files import atomic_write

    embedder = open_embedder(args.model, backend=args.backend, device=args.device)
    config = LinkConfig(threshold=resolve_threshold(args.model, embedder.meta, args.link_threshold))
    start = time.perf_counter()
    tracklets = crop_tracklets(embedder, [(cam, frames) for cam, _, frames in layout], args.pooling,
                               args.batch_size, args.progress)
    ids = match_tracklets(tracklets, config, args.mode)
    result = {f"{cam}/{name}": ids[t.key] for (cam, name, _), t in zip(layout, tracklets)}
    out = atomic_write(args.out, json.dumps(result, indent=1))

    cameras_per_id: dict[int, set[str]] = {}
    for key, gid in result.items():
        cameras_per_id.setdefault(gid, set()).add(key.split("/", 1)[0])
    print(json.dumps({
        "out": str(out), "mode": args.mode, "model": str(args.model), "backend": embedder.backend,
        "pooling": args.pooling,
        "threshold": config.threshold, "cameras": len({cam for cam, _, _ in layout}), "tracklets": len(result),
        "images": sum(len(frames) for _, _, frames in layout), "identities": len(cameras_per_id),
        "multi_camera_identities": sum(len(c) > 1 for c in cameras_per_id.values()),
        "seconds": round(time.perf_counter() - start, 3),
    }))
    return 0
