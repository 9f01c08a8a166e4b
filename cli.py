"""The `tracklink` command: one entry point, one subcommand per job.

Each subcommand lives in a light module that imports only argparse at top level, so `tracklink --help`
stays fast; the heavy imports (torch, onnxruntime, cv2) happen inside `run`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from tracklink import TracklinkError, __version__

# name -> module that defines `add_arguments(parser)` and `run(args) -> int`
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("tracklink.app.demo", "run the whole pipeline offline on two built-in cameras and show the results"),
    "train": ("tracklink.train.cli", "train a video re-ID model with OSM+CAA"),
    "eval": ("tracklink.train.eval_cli", "cross-camera CMC/mAP of a model on a labelled dataset"),
    "import-weights": ("tracklink.models.import_cli", "turn a torchreid .pth or an OSNet ONNX into a checkpoint"),
    "export": ("tracklink.export.cli", "export the re-ID model (ONNX, TensorRT) or the detector, verified"),
    "bench": ("tracklink.export.bench", "crops/s and latency of the embedder per backend, and detector frames/s"),
    "match": ("tracklink.app.match", "link tracklets given as crop folders into global identities"),
    "calibrate": ("tracklink.app.calibrate_cli", "pick a model's link threshold on labelled data"),
    "batch": ("tracklink.app.batch", "detect, track and link people in videos; write MOT files, a store and a summary"),
    "link": ("tracklink.app.link_cli", "re-link every finished camera in a store (SQLite or PostgreSQL) at once"),
    "eval-mot": ("tracklink.app.evalmot", "MOTA, IDF1 and HOTA of tracking results (MTMC IDF1 with --multi-camera)"),
    "view": ("tracklink.app.viewer.cli", "desktop viewer: live camera grid, people across cameras, search by image"),
}


def build_parser() -> argparse.ArgumentParser:
    import tracklink

    parser = argparse.ArgumentParser(prog="tracklink", description=tracklink.__doc__)
    parser.add_argument("--version", action="version", version=f"tracklink {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        # No abbreviated flags: `--npr 2` silently meaning `--nproc 2` is not worth the surprise.
        sp = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                            allow_abbrev=False)
        module.add_arguments(sp)
        sp.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args._argv = argv  # a launcher (train --nproc) re-runs the same command in each worker
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    try:
        return int(args._module.run(args) or 0)
    except TracklinkError as exc:
        print(f"tracklink {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tracklink {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
