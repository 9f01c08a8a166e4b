"""The one place tracklink opens an ONNX Runtime session: detector, embedder and parity checks alike.

One provider policy and one set of CPU options, measured on our 2-core CPU, so the three callers cannot drift
apart again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from tracklink import TracklinkError

log = logging.getLogger(__name__)

# CUDA first, CPU last so a broken CUDA install degrades instead of failing. Not ORT's TensorRT provider: it
# builds an engine on first use, minutes of silent start-up; `tracklink export --format engine` does that
# once, visibly, and the TensorRT backend runs the result.
PROVIDER_ORDER = ("CUDAExecutionProvider", "CPUExecutionProvider")
OPT_LEVELS = ("disabled", "basic", "extended", "layout", "all")


def providers_for(device: str | None = None) -> list[Any]:
    """The execution providers for `device` (None: the best this onnxruntime build has)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device is None:
        return [p for p in PROVIDER_ORDER if p in available] or ["CPUExecutionProvider"]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise TracklinkError(f"device {device!r} asked for, but this onnxruntime has no CUDA provider "
                                 f"(it has {', '.join(available)}); install onnxruntime-gpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise TracklinkError(f"unknown device {device!r}; use cpu, cuda or cuda:N")


def session_options(opt_level: str = "all", intra_op_threads: int | None = None,
                    inter_op_threads: int | None = None, spinning: bool = False, denormal_as_zero: bool = True):
    import onnxruntime as ort

    level = "ORT_DISABLE_ALL" if opt_level == "disabled" else f"ORT_ENABLE_{opt_level.upper()}"
    if opt_level not in OPT_LEVELS or not hasattr(ort.GraphOptimizationLevel, level):
        raise TracklinkError(f"graph optimisation level {opt_level!r} is not one this onnxruntime has; choose "
                             f"one of {', '.join(OPT_LEVELS)} (layout needs onnxruntime >= 1.20)")
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    if inter_op_threads:
        options.inter_op_num_threads = inter_op_threads
    # Denormals as zero: OSNet's weights hold denormals, which slow ORT's CPU kernels (125 vs 551 crops/s).
    # Only the first session of a process sets it on the calling thread (onnxruntime PR #5391), so every
    # session asks for it: the detector opened first must not leave the re-ID model slow (6x in the pipeline).
    options.add_session_config_entry("session.set_denormal_as_zero", "1" if denormal_as_zero else "0")
    # ORT's worker threads spin-wait between ops by default. In our process they share the CPU with the
    # detector, the tracker and the UI, and spinning threads take their cycles (on a busy 2-core machine
    # spinning cost 15-40% of ORT's own throughput, and doubled the CPU time of a pipeline step), so they
    # sleep unless asked otherwise.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def open_session(path: str | os.PathLike, *, device: str | None = None, providers: Sequence[Any] | None = None,
                 hint: str = "the file may be truncated or not an ONNX model; export it again with "
                             "`tracklink export`", model_bytes: bytes | None = None, **options: Any):
    """An `onnxruntime.InferenceSession` with tracklink's options (see `session_options`).

    `model_bytes`: the model as edited in memory from the file at `path` (which still names it in errors).
    Load errors become one line that names the file and `hint`.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise TracklinkError(f"ONNX model not found: {path}")
    chosen = list(providers) if providers else providers_for(device)
    try:
        session = ort.InferenceSession(model_bytes if model_bytes is not None else str(path),
                                       session_options(**options), providers=chosen)
    except Exception as exc:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...)
        text = str(exc).strip()
        first = text.splitlines()[0][:200].rstrip(".") if text else type(exc).__name__
        raise TracklinkError(f"onnxruntime cannot load {path}: {first}; {hint}") from None
    log.info("onnxruntime: %s runs %s", session.get_providers()[0], path.name)
    return session


__all__ = ["OPT_LEVELS", "PROVIDER_ORDER", "open_session", "providers_for", "session_options"]
