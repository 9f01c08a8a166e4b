"""One inference layer over PyTorch, ONNX Runtime and TensorRT.

A *runner* maps a float32 batch (N, 3, H, W) to the model's raw output for batches up to its limit; an
`Embedder` wraps a runner with the model's metadata and does the rest the same way for every backend:
preprocessing (models/preprocess.py, driven by the metadata), input checks, splitting batches larger than
the runner accepts (BoxMOT #851: an engine built for batch <= 64 crashed on a crowded frame), and L2
normalisation. So the backends differ only in how they run the graph, which is what the parity tests
compare.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tracklink import TracklinkError
from tracklink.models.checkpoint import ModelMeta

log = logging.getLogger(__name__)

Runner = Callable[[np.ndarray], np.ndarray]

BACKENDS = ("torch", "onnxruntime", "tensorrt")
_ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "trt": "tensorrt", "pytorch": "torch"}
_BY_SUFFIX = {".pt": "torch", ".pth": "torch", ".tar": "torch", ".onnx": "onnxruntime",
              ".engine": "tensorrt", ".plan": "tensorrt"}
# The order: CUDA first, then TensorRT, then CPU, whichever this onnxruntime build has.
ORT_PROVIDER_ORDER = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider")
ORT_OPT_LEVELS = ("disabled", "basic", "extended", "layout", "all")
DEFAULT_MAX_BATCH = 64  # torch and ORT have no hard limit; chunking bounds peak memory on a crowded frame


class Embedder:
    """Crops in, L2-normalised float32 embeddings (N, D) out, on whichever backend runs `runner`."""

    def __init__(self, runner: Runner, meta: ModelMeta, backend: str, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_batch < 1:
            raise TracklinkError(f"max_batch must be >= 1, got {max_batch}")
        self.runner = runner
        self.meta = meta
        self.backend = backend
        self.max_batch = max_batch

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, *self.meta.input_size)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """BGR uint8 crops of any size (OpenCV's layout) -> (N, D)."""
        if len(crops) == 0:
            return np.empty((0, self.meta.embedding_dim), np.float32)
        from tracklink.models.preprocess import preprocess_crops

        return self.embed_tensor(preprocess_crops(crops, self.meta.input_size, self.meta.mean, self.meta.std))

    def embed_tensor(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed float32 (N, 3, H, W) -> (N, D); batches above `max_batch` run in chunks."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[1:] != self.input_shape:
            raise TracklinkError(f"expected an input batch of shape (N, {', '.join(map(str, self.input_shape))}) "
                                 f"for this model, got {tuple(batch.shape)}; preprocess crops with embed() or "
                                 f"resize them to {self.meta.input_size[1]}x{self.meta.input_size[0]} (WxH)")
        if len(batch) == 0:
            return np.empty((0, self.meta.embedding_dim), np.float32)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        out = np.concatenate([np.asarray(self.runner(batch[i:i + self.max_batch]), dtype=np.float32)
                              for i in range(0, len(batch), self.max_batch)])
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def __repr__(self) -> str:
        return f"Embedder(backend={self.backend!r}, arch={self.meta.arch!r}, max_batch={self.max_batch})"


# ---------------------------------------------------------------------------------------------- torch

class TorchRunner:
    """Eager PyTorch, with two CPU settings that each cost several times in speed when missing:

    - channels-last model and inputs: with NCHW, oneDNN runs OSNet's grouped 3x3 convs about 10x slower
      (6 vs 78 crops/s at batch 32 on our 2-core Xeon, torch 2.14);
    - denormals flushed to zero (process-wide): the OSNet weights from BN folding hold ~750 denormal
      floats, and x86 arithmetic on denormals is slow. Values below 1e-38 do not move an embedding.
    """

    def __init__(self, model, device: str | None = None, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise TracklinkError(f"device {device!r} asked for, but this PyTorch sees no CUDA GPU; use --device cpu")
        self.channels_last = self.device.type == "cpu"
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.eval().to(self.device, memory_format=fmt)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(batch).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.model(x).float().cpu().numpy()


def _torch_embedder(path: Path, device: str | None, threads: int | None = None,
                    max_batch: int = DEFAULT_MAX_BATCH) -> Embedder:
    from tracklink.export.onnx_export import load_source

    model, meta = load_source(path)
    runner = TorchRunner(model, device, threads)
    return Embedder(runner, meta, f"torch:{runner.device}", max_batch)


# ---------------------------------------------------------------------------------------------- ORT

def ort_providers(device: str | None = None) -> list[Any]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device is None:
        return [p for p in ORT_PROVIDER_ORDER if p in available]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise TracklinkError(f"device {device!r} asked for, but this onnxruntime has no CUDA provider "
                                 f"(it has {', '.join(available)}); install onnxruntime-gpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise TracklinkError(f"unknown device {device!r}; use cpu, cuda or cuda:N")


class OrtRunner:
    """An onnxruntime session over a single-input model, with the knobs that matter on a small CPU."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[Any] | None = None, device: str | None = None,
                 opt_level: str = "all", intra_op_threads: int | None = None, inter_op_threads: int | None = None,
                 spinning: bool = False, denormal_as_zero: bool = True) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise TracklinkError(f"ONNX model not found: {path}")
        level = "ORT_DISABLE_ALL" if opt_level == "disabled" else f"ORT_ENABLE_{opt_level.upper()}"
        if opt_level not in ORT_OPT_LEVELS or not hasattr(ort.GraphOptimizationLevel, level):
            raise TracklinkError(f"graph optimisation level {opt_level!r} is not one this onnxruntime has; choose "
                                 f"one of {', '.join(ORT_OPT_LEVELS)} (layout needs onnxruntime >= 1.20)")
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        if inter_op_threads:
            options.inter_op_num_threads = inter_op_threads
        # Denormal weights (see TorchRunner) slow ORT's CPU kernels too.
        options.add_session_config_entry("session.set_denormal_as_zero", "1" if denormal_as_zero else "0")
        # ORT's worker threads spin-wait between ops by default. In our process they share the CPU with the
        # detector, the tracker and the UI, and spinning threads take their cycles (on a busy 2-core machine
        # spinning cost 15-40% of ORT's own throughput too), so they sleep unless asked otherwise.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        providers = list(providers) if providers else ort_providers(device)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TracklinkError(f"onnxruntime cannot load {path}: {first.rstrip('.')}. The file may be truncated "
                                 "or not an ONNX model; export it again with `tracklink export`") from None
        self.provider = self.session.get_providers()[0]
        log.info("onnxruntime: %s runs %s (graph optimisation %s)", self.provider, path.name, opt_level)
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name = inp.name
        self.input_shape = [d if isinstance(d, int) else None for d in inp.shape]
        self.output_shape = [d if isinstance(d, int) else None for d in out.shape]
        self.props = dict(self.session.get_modelmeta().custom_metadata_map)
        self.fixed_batch = self.input_shape[0] if self.input_shape else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        if self.fixed_batch and n < self.fixed_batch:  # a graph exported with a static batch: pad, then trim
            pad = np.zeros((self.fixed_batch - n, *batch.shape[1:]), batch.dtype)
            return self.session.run(None, {self.input_name: np.concatenate([batch, pad])})[0][:n]
        return self.session.run(None, {self.input_name: batch})[0]


def _ort_embedder(path: Path, device: str | None, max_batch: int | None = None, **session: Any) -> Embedder:
    from tracklink.export.onnx_export import meta_from_onnx

    runner = OrtRunner(path, device=device, **session)
    meta = meta_from_onnx(runner.props, runner.input_shape, runner.output_shape, path.name)
    limit = max_batch or DEFAULT_MAX_BATCH
    if runner.fixed_batch:
        limit = min(limit, runner.fixed_batch)
    return Embedder(runner, meta, f"onnxruntime:{runner.provider}", limit)


# ---------------------------------------------------------------------------------------------- TensorRT

def _trt_embedder(path: Path, device: str | None, max_batch: int | None = None) -> Embedder:
    from tracklink.export.tensorrt import TrtRunner

    index = int(device.split(":")[1]) if device and ":" in device else 0
    if device not in (None, "cuda") and not (device or "").startswith("cuda"):
        raise TracklinkError(f"TensorRT engines run on a CUDA GPU; device {device!r} cannot run {path}")
    runner = TrtRunner(path, index)
    meta = runner.sidecar.model_meta
    if meta is None:
        raise TracklinkError(f"{path} is a {runner.sidecar.task} engine, not a re-ID embedder")
    limit = min(runner.max_batch, max_batch) if max_batch else runner.max_batch
    return Embedder(runner, meta, f"tensorrt:{runner.version}:{runner.sidecar.precision}", limit)


# ---------------------------------------------------------------------------------------------- entry

def resolve_backend(path: str | os.PathLike, backend: str | None = None) -> str:
    if backend is not None:
        name = _ALIASES.get(backend.lower(), backend.lower())
        if name not in BACKENDS:
            raise TracklinkError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        return name
    suffix = Path(path).suffix.lower()
    if suffix not in _BY_SUFFIX:
        raise TracklinkError(f"cannot tell the backend of {path} from its suffix; use .pt (torch), .onnx "
                             "(onnxruntime), .engine/.plan (tensorrt), or pass a backend")
    return _BY_SUFFIX[suffix]


def open_embedder(path: str | os.PathLike, backend: str | None = None, device: str | None = None,
                  **opts: Any) -> Embedder:
    """Open a model file on the backend its type implies, or on `backend`.

    Options by backend: torch `threads`; onnxruntime `providers`, `opt_level`, `intra_op_threads`,
    `inter_op_threads`, `spinning`, `denormal_as_zero` (see OrtRunner); all `max_batch`. A checkpoint
    asked to run on onnxruntime is exported to a temporary ONNX first (with the parity check); an ONNX
    asked to run on torch is imported.
    """
    path = Path(path)
    if not path.is_file():
        raise TracklinkError(f"model not found: {path}")
    name = resolve_backend(path, backend)
    suffix = path.suffix.lower()
    if name == "torch":
        return _torch_embedder(path, device, **opts)
    if name == "onnxruntime":
        if suffix in (".engine", ".plan"):
            raise TracklinkError(f"{path} is a TensorRT engine; onnxruntime needs the ONNX it was built from")
        if suffix != ".onnx":
            return _ort_from_checkpoint(path, device, **opts)
        return _ort_embedder(path, device, **opts)
    if suffix not in (".engine", ".plan"):
        raise TracklinkError(f"the tensorrt backend runs built engines; build one first: "
                             f"tracklink export --model {path} --format engine --out {path.with_suffix('.engine')}")
    return _trt_embedder(path, device, **opts)


def _ort_from_checkpoint(path: Path, device: str | None, **opts: Any) -> Embedder:
    from tracklink.export.onnx_export import export_onnx, load_source

    model, meta = load_source(path)
    with tempfile.TemporaryDirectory() as td:
        onnx_path = Path(td) / f"{path.stem}.onnx"
        export_onnx(model, meta, onnx_path, parity_limit=32)
        # The session holds the graph in memory once created, so the temp file can go.
        return _ort_embedder(onnx_path, device, **opts)
