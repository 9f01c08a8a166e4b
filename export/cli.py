"""Export the re-ID model to ONNX or a TensorRT engine, or the person detector for deployment.

    tracklink export --model model.pt --format onnx --out model.onnx
    tracklink export --model model.pt --format onnx --int8 --calib crops/ --out model_int8.onnx
    tracklink export --model model.onnx --format engine --fp16 --out model.engine
    tracklink export --detector yolo11n.pt --format engine --fp16
    tracklink export --detector yolox:yolox_nano.onnx --format engine --out yolox_nano.engine

Every export is verified before it is written: ONNX against PyTorch on real crops, engines against
ONNX Runtime. A summary with the parity figures is printed as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

from tracklink import TracklinkError


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="re-ID model: tracklink checkpoint .pt, torchreid .pth or OSNet .onnx")
    what.add_argument("--detector", metavar="SPEC",
                      help="person detector: an ultralytics .pt (exported by ultralytics), or yolox:PATH.onnx")
    p.add_argument("--format", required=True, choices=("onnx", "engine"))
    p.add_argument("--out", help="output file (required for --model; ultralytics writes beside the .pt otherwise)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="half precision (engines)")
    precision.add_argument("--int8", action="store_true", help="INT8, calibrated on --calib crops")
    p.add_argument("--calib", help="directory of person crops for INT8 calibration")
    p.add_argument("--calib-limit", type=int, default=256, help="at most this many calibration crops")
    p.add_argument("--calib-method", default="minmax", choices=("minmax", "percentile", "entropy"),
                   help="ONNX INT8 calibration (onnxruntime.quantization)")
    p.add_argument("--batch-min", type=int, default=1)
    p.add_argument("--batch-opt", type=int, default=16)
    p.add_argument("--batch-max", type=int, default=64)
    p.add_argument("--workspace", type=int, default=None, metavar="MiB", help="TensorRT builder workspace limit")
    p.add_argument("--timing-cache", default=None, help="TensorRT timing cache file (default: ~/.cache/tracklink)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    p.add_argument("--parity-crops", default=None,
                   help="crops for the parity check (default: random tensors, with a warning; give real crops)")
    p.add_argument("--parity-limit", type=int, default=256, help="at most this many parity crops")
    p.add_argument("--imgsz", type=int, default=640, help="ultralytics detector input size")
    p.add_argument("--dynamic", action="store_true", help="ultralytics detector: dynamic input shape")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a pickled ultralytics .pt from a path as --detector (loading a pickle runs its code); "
                        "the published yolo11n.pt needs no flag: it is checked against its sha256")


def run(args: argparse.Namespace) -> int:
    if args.int8 and not args.calib:
        raise TracklinkError("--int8 needs --calib DIR, a directory of person crops like the ones it will embed")
    if args.detector:
        summary = _export_detector(args)
    elif args.out is None:
        raise TracklinkError("--out is required with --model")
    elif args.format == "onnx":
        summary = _export_reid_onnx(args)
    else:
        summary = _export_reid_engine(args)
    print(json.dumps(summary, indent=2))
    return 0


def _precision(args: argparse.Namespace) -> str:
    return "fp16" if args.fp16 else "int8" if args.int8 else "fp32"


def _export_reid_onnx(args: argparse.Namespace) -> dict[str, Any]:
    from tracklink.export.onnx_export import export_onnx, load_source

    if args.fp16:
        raise TracklinkError("--fp16 applies to --format engine; ONNX Runtime on CPU runs fp32 or --int8")
    model, meta = load_source(args.model)
    result = export_onnx(model, meta, args.out, opset=args.opset, parity_crops=args.parity_crops,
                         parity_limit=args.parity_limit, int8_calib=args.calib if args.int8 else None,
                         calib_limit=args.calib_limit, calib_method=args.calib_method, source=args.model)
    return result.to_dict()


def _export_reid_engine(args: argparse.Namespace) -> dict[str, Any]:
    """A checkpoint goes through a verified ONNX beside the engine; an ONNX is built as it is."""
    from tracklink.export.onnx_export import MIN_COSINE, compare, export_onnx, load_source, parity_batch, read_onnx_meta
    from tracklink.export.runtime import open_embedder
    from tracklink.export.tensorrt import build_engine, import_tensorrt, sidecar_path

    import_tensorrt()  # fail before a long ONNX export when TensorRT is missing
    out = Path(args.out)
    summary: dict[str, Any] = {"out": str(out), "format": "engine", "precision": _precision(args)}
    if Path(args.model).suffix.lower() == ".onnx":
        onnx_path = Path(args.model)
    else:
        onnx_path = out.with_suffix(".onnx")
        model, meta = load_source(args.model)
        summary["onnx"] = export_onnx(model, meta, onnx_path, opset=args.opset, parity_crops=args.parity_crops,
                                      parity_limit=args.parity_limit, source=args.model).to_dict()
    sidecar = build_engine(onnx_path, out, precision=_precision(args),
                           batch=(args.batch_min, args.batch_opt, args.batch_max), workspace_mib=args.workspace,
                           calib_dir=args.calib, calib_limit=args.calib_limit, timing_cache=args.timing_cache)

    batch, inputs = parity_batch(read_onnx_meta(onnx_path), args.parity_crops, args.parity_limit)
    reference = open_embedder(onnx_path, "onnxruntime", "cpu").embed_tensor(batch)
    parity = compare(reference, open_embedder(out, "tensorrt").embed_tensor(batch), inputs)
    gate = MIN_COSINE[sidecar.precision]
    if not parity.min_cosine >= gate:
        out.unlink(missing_ok=True)
        sidecar_path(out).unlink(missing_ok=True)
        raise TracklinkError(f"the {sidecar.precision} engine disagrees with ONNX Runtime: min cosine "
                             f"{parity.min_cosine:.5f} < {gate}; the engine was removed")
    summary.update(parity_vs_onnxruntime=parity.to_dict(), sidecar=str(sidecar_path(out)),
                   tensorrt=sidecar.tensorrt_version, gpu=sidecar.gpu_name, profile=sidecar.profile)
    return summary


def _export_detector(args: argparse.Namespace) -> dict[str, Any]:
    family, sep, rest = args.detector.partition(":")
    if sep and family.lower() == "yolox":
        return _export_yolox(args, Path(rest))
    from tracklink.models.checkpoint import untrusted_pickle_error
    from tracklink.models.weights import DETECTORS, fetch_detector

    if args.detector in DETECTORS:  # the published file, checksum-verified; never a same-named local file
        path = fetch_detector(args.detector)
        if not args.out:
            args.out = str(Path(args.detector).with_suffix(".onnx" if args.format == "onnx" else ".engine"))
        return _export_ultralytics(args, path)
    path = Path(args.detector)
    if path.suffix.lower() != ".pt":
        raise TracklinkError(f"--detector {args.detector}: give an ultralytics .pt, or yolox:PATH.onnx for YOLOX")
    if not path.is_file():
        raise TracklinkError(f"detector weights not found: {path}")
    if not args.trust_pickle:
        raise untrusted_pickle_error(path)
    return _export_ultralytics(args, path)


def _export_yolox(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    from tracklink.export.tensorrt import build_engine, sidecar_path

    if args.format != "engine":
        raise TracklinkError("a YOLOX ONNX is already ONNX; use --format engine to build a TensorRT engine from it")
    if args.int8:
        raise TracklinkError("INT8 detector engines are not supported; use --fp16")
    if not path.is_file():
        raise TracklinkError(f"YOLOX model not found: {path}")
    out = Path(args.out) if args.out else path.with_suffix(".engine")
    # Static 1x3x416x416 graph: no optimization profile, the engine takes exactly that shape.
    sidecar = build_engine(path, out, precision=_precision(args), batch=None, workspace_mib=args.workspace,
                           timing_cache=args.timing_cache, task="detector")
    return {"out": str(out), "format": "engine", "precision": sidecar.precision, "sidecar": str(sidecar_path(out)),
            "input": sidecar.profile["opt"], "tensorrt": sidecar.tensorrt_version, "gpu": sidecar.gpu_name}


def _export_ultralytics(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """ultralytics' own exporter knows its heads and NMS; we only pass the options through."""
    from ultralytics import YOLO
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.utils import LOGGER

    if not path.is_file():
        raise TracklinkError(f"detector weights not found: {path}")
    if args.int8:
        raise TracklinkError("INT8 ultralytics exports need a dataset YAML; run `yolo export ... int8=True data=...`")
    kwargs: dict[str, Any] = {"format": args.format, "imgsz": args.imgsz, "dynamic": args.dynamic}
    if args.fp16:  # ultralytics >= 8.4 folded `half` into `quantize`
        kwargs.update({"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True})
    if args.format == "onnx":
        kwargs["opset"] = args.opset
    if args.format == "engine" and args.workspace:
        kwargs["workspace"] = args.workspace / 1024  # ultralytics takes GiB
    try:
        with _stdout_to_stderr(LOGGER):  # our stdout carries only the JSON summary
            exported = Path(YOLO(str(path)).export(**kwargs))
    except Exception as exc:  # ultralytics raises plain exceptions for missing GPUs, bad args, ...
        raise TracklinkError(f"ultralytics could not export {path} to {args.format}: {exc}") from None
    if args.out and Path(args.out) != exported:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        exported = Path(shutil.move(str(exported), args.out))
    return {"out": str(exported), "format": args.format, "exporter": "ultralytics", **{k: v for k, v in kwargs.items()
                                                                                        if k != "format"}}


@contextlib.contextmanager
def _stdout_to_stderr(logger: logging.Logger) -> Iterator[None]:
    """ultralytics logs to a handler bound to stdout at import; point it and print() at stderr for a while."""
    handlers = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)]
    old = [h.setStream(sys.stderr) for h in handlers]
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for h, stream in zip(handlers, old):
            if stream is not None:
                h.setStream(stream)
