"""Throughput and latency of the embedder on each backend, and of the person detector.

The backends take turns inside one run, one call each per iteration in a rotating order, so a noisy
neighbour or a CPU clock change slows all of them alike instead of whichever ran last. Timed: one
`Embedder.embed_tensor` call on a preprocessed batch of real crops (inference, batch splitting and L2
normalisation; preprocessing is shared by all backends and not timed).

    tracklink bench --model osnet.onnx --backends torch,onnxruntime --batch 1,8,32 --json
    tracklink bench --model osnet.onnx --backends onnxruntime,onnxruntime=osnet_int8.onnx --batch 32
    tracklink bench --detector yolox:yolox_nano.onnx
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from tracklink import TracklinkError

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class BackendSpec:
    label: str
    backend: str
    path: Path


@dataclass(frozen=True)
class BenchRow:
    label: str
    backend: str  # as the embedder reports it, e.g. "onnxruntime:CPUExecutionProvider"
    batch: int
    iters: int
    crops_per_s: float
    p50_ms: float
    p95_ms: float
    ratio_to_torch: float | None


def parse_backends(spec: str, model: str | os.PathLike | None) -> list[BackendSpec]:
    """'torch,onnxruntime=int8.onnx' -> specs; NAME=PATH benches another file on that backend."""
    from tracklink.export.runtime import resolve_backend

    specs = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, path = item.partition("=")
        if not path and model is None:
            raise TracklinkError(f"backend {name!r} has no model: pass --model or write {name}=PATH")
        backend = resolve_backend(path or model, name)
        label = f"{backend}({Path(path).name})" if path else backend
        specs.append(BackendSpec(label, backend, Path(path or model)))
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise TracklinkError(f"--backends lists the same backend twice: {spec}")
    return specs


def parse_batches(text: str) -> list[int]:
    try:
        batches = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise TracklinkError(f"--batch takes comma-separated integers, got {text!r}") from None
    if not batches or min(batches) < 1:
        raise TracklinkError(f"--batch sizes must be >= 1, got {text!r}")
    return batches


def _timings(seconds: Sequence[float], items: int) -> tuple[float, float, float]:
    import numpy as np

    t = np.asarray(seconds)
    return items * len(t) / t.sum(), float(np.percentile(t, 50) * 1e3), float(np.percentile(t, 95) * 1e3)


def round_robin(calls: dict[str, Callable[[], Any]], iters: int, warmup: int,
                tick: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Time each call `iters` times, interleaved, rotating which goes first each iteration."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
            tick()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(iters):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - t0)
            tick()
    return times


def bench_embedders(embedders: dict[str, Any], data: "np.ndarray", batches: Sequence[int], iters: int,
                    warmup: int, tick: Callable[[], None] = lambda: None) -> list[BenchRow]:
    import numpy as np

    rows = []
    for b in batches:
        x = np.ascontiguousarray(np.resize(data, (b, *data.shape[1:])))  # tile the crops up to the batch size
        times = round_robin({label: (lambda e=e: e.embed_tensor(x)) for label, e in embedders.items()},
                            iters, warmup, tick)
        stats = {label: _timings(t, b) for label, t in times.items()}
        torch_rate = next((stats[label][0] for label, e in embedders.items() if e.backend.startswith("torch")), None)
        for label, (rate, p50, p95) in stats.items():
            rows.append(BenchRow(label, embedders[label].backend, b, iters, rate, p50, p95,
                                 rate / torch_rate if torch_rate else None))
    return rows


def bench_detector(spec: str, iters: int, warmup: int, threads: int | None, opt_level: str, spinning: bool,
                   device: str | None, tick: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Frames/s of the detector network alone at its input size (letterboxing and decoding not timed)."""
    import numpy as np

    family, sep, path = spec.partition(":")
    if not sep or family.lower() != "yolox":
        raise TracklinkError(f"--detector takes yolox:PATH (.onnx or .engine), got {spec!r}")
    path = Path(path)
    if not path.is_file():
        raise TracklinkError(f"detector model not found: {path}")
    if path.suffix.lower() in (".engine", ".plan"):
        from tracklink.export.tensorrt import TrtRunner

        runner = TrtRunner(path)
        shape, backend = tuple(runner.sidecar.profile["opt"]), f"tensorrt:{runner.version}"
    else:
        from tracklink.export.runtime import OrtRunner

        runner = OrtRunner(path, device=device, opt_level=opt_level, intra_op_threads=threads, spinning=spinning)
        shape, backend = tuple(d or 1 for d in runner.input_shape), f"onnxruntime:{runner.provider}"
    # YOLOX takes BGR 0-255 without normalisation; content barely moves a conv net's speed.
    frame = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    times = round_robin({"detector": lambda: runner(frame)}, iters, warmup, tick)["detector"]
    fps, p50, p95 = _timings(times, shape[0])
    return {"model": str(path), "backend": backend, "input": list(shape), "iters": iters, "frames_per_s": fps,
            "p50_ms": p50, "p95_ms": p95}


def format_table(rows: Sequence[BenchRow]) -> str:
    width = max([len("backend")] + [len(r.label) for r in rows])
    lines = [f"{'backend':<{width}}  batch   crops/s   p50 ms   p95 ms  x torch"]
    for r in rows:
        ratio = f"{r.ratio_to_torch:7.2f}" if r.ratio_to_torch is not None else "      -"
        lines.append(f"{r.label:<{width}}  {r.batch:5d}  {r.crops_per_s:8.1f}  {r.p50_ms:7.1f}  {r.p95_ms:7.1f}"
                     f"  {ratio}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="re-ID model: checkpoint .pt, .onnx or TensorRT .engine")
    p.add_argument("--backends", default="torch,onnxruntime",
                   help="comma-separated: torch, onnxruntime, tensorrt; NAME=PATH benches another file on it")
    p.add_argument("--batch", default="1,8,32", help="comma-separated batch sizes")
    p.add_argument("--iters", type=int, default=20, help="timed calls per backend and batch")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and onnxruntime (intra-op)")
    p.add_argument("--ort-opt-level", default="all", choices=("all", "layout", "extended", "basic", "disabled"),
                   help="onnxruntime graph optimisation level")
    p.add_argument("--ort-spin", action="store_true",
                   help="let onnxruntime worker threads spin-wait (its default; ours is off, see runtime.OrtRunner)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: what the backend finds)")
    p.add_argument("--crops", default=None, help="directory of person crops to bench on (default: random tensors)")
    p.add_argument("--detector", default=None, metavar="yolox:PATH", help="also bench a YOLOX detector (.onnx/.engine)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tracklink.utils.progress import bar_disabled

    from tracklink.export.onnx_export import parity_batch
    from tracklink.export.runtime import open_embedder

    if args.model is None and args.detector is None:
        raise TracklinkError("nothing to bench: pass --model and/or --detector yolox:PATH")
    if args.iters < 1 or args.warmup < 0:
        raise TracklinkError("--iters must be >= 1 and --warmup >= 0")
    batches = parse_batches(args.batch)
    specs = parse_backends(args.backends, args.model) if args.model else []

    embedders = {}
    for s in specs:
        opts: dict[str, Any] = {"max_batch": max(batches)} if s.backend != "tensorrt" else {}
        if s.backend == "torch":
            opts["threads"] = args.threads
        elif s.backend == "onnxruntime":
            opts.update(opt_level=args.ort_opt_level, intra_op_threads=args.threads, spinning=args.ort_spin)
        embedders[s.label] = open_embedder(s.path, s.backend, args.device, **opts)

    calls = args.iters + args.warmup
    steps = len(embedders) * len(batches) * calls + calls * bool(args.detector)
    report: dict[str, Any] = {
        "host": {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
                 "cpus": os.cpu_count(), "python": platform.python_version()},
        "threads": args.threads, "ort_opt_level": args.ort_opt_level, "ort_spinning": args.ort_spin,
        "timed": "Embedder.embed_tensor per batch",
    }
    with tqdm(total=steps, desc="bench", unit="call", file=sys.stderr, disable=bar_disabled(args.progress)) as bar:
        if embedders:
            data, source = parity_batch(next(iter(embedders.values())).meta, args.crops, limit=max(batches))
            report.update(model=str(args.model), crops=source)
            rows = bench_embedders(embedders, data, batches, args.iters, args.warmup, bar.update)
            report["results"] = [asdict(r) for r in rows]
        if args.detector:
            report["detector"] = bench_detector(args.detector, args.iters, args.warmup, args.threads,
                                                args.ort_opt_level, args.ort_spin, args.device, bar.update)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if embedders:
        print(format_table(rows))
    if args.detector:
        d = report["detector"]
        print(f"detector {Path(d['model']).name} on {d['backend']} at {d['input']}: {d['frames_per_s']:.1f} "
              f"frames/s, p50 {d['p50_ms']:.1f} ms, p95 {d['p95_ms']:.1f} ms")
    return 0
