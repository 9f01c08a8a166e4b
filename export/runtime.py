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
from tracklink.export.ort_session import open_session
from tracklink.models.checkpoint import ModelMeta
from tracklink.utils.suffixes import BACKEND_BY_SUFFIX as _BY_SUFFIX
from tracklink.utils.suffixes import BACKENDS, ENGINE_SUFFIXES

log = logging.getLogger(__name__)

Runner = Callable[[np.ndarray], np.ndarray]

_ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "trt": "tensorrt", "pytorch": "torch"}
DEFAULT_MAX_BATCH = 64  # torch and ORT have no hard limit; chunking bounds peak memory on a crowded frame


class Embedder:
    """Crops in, L2-normalised float32 embeddings (N, D) out, on whichever backend runs `runner`."""

    def __init__(self, runner: Runner, meta: ModelMeta, backend: str, max_batch: int = DEFAULT_MAX_BATCH,
                 classifier: np.ndarray | None = None) -> None:
        if max_batch < 1:
            raise TracklinkError(f"max_batch must be >= 1, got {max_batch}")
        self.runner = runner
        self.meta = meta
        self.backend = backend
        self.max_batch = max_batch
        # (classes, D) weights of the training classifier, on the un-normalised embedding; only a checkpoint
        # that kept its classifier has them. They give CAA pooling its per-frame attention.
        self.classifier = classifier

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, *self.meta.input_size)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """BGR uint8 crops of any size (OpenCV's layout) -> (N, D)."""
        if len(crops) == 0:
            return np.empty((0, self.meta.embedding_dim), np.float32)
        return _normalised(self._raw(self._preprocess(crops)))

    def embed_for(self, pooling: str) -> Callable[[Sequence[np.ndarray]], Any]:
        """The embed function a tracklet pooling rule needs: `embed_with_attention` for "caa" (its frame
        weights come from the classifier), `embed` otherwise. A model without a classifier cannot pool by
        CAA: that is said here, once, for every command that takes --pooling."""
        from tracklink.models.pooling import POOLINGS

        if pooling not in POOLINGS:
            raise TracklinkError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        if pooling != "caa":
            return self.embed
        if self.classifier is None:
            raise TracklinkError("--pooling caa needs the class-aware attention of a tracklink checkpoint (.pt) "
                                 "trained with classes; this model has no classifier. Use --pooling mean or max, "
                                 "or pass the checkpoint the model was exported from")
        return self.embed_with_attention

    def embed_with_attention(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (N, D) and each crop's class-aware attention (N,), for CAA pooling."""
        from tracklink.models.pooling import caa_attention_np

        if self.classifier is None:
            raise TracklinkError("this model has no classifier, so it has no class-aware attention; use mean or "
                                 "max pooling")
        if len(crops) == 0:
            return np.empty((0, self.meta.embedding_dim), np.float32), np.empty(0, np.float32)
        raw = self._raw(self._preprocess(crops))
        return _normalised(raw.copy()), caa_attention_np(raw @ self.classifier.T)

    def _preprocess(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        from tracklink.models.preprocess import preprocess_crops

        return preprocess_crops(crops, self.meta.input_size, self.meta.mean, self.meta.std)

    def embed_tensor(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed float32 (N, 3, H, W) -> (N, D); batches above `max_batch` run in chunks."""
        return _normalised(self._raw(batch))

    def _raw(self, batch: np.ndarray) -> np.ndarray:
        """The model's own output, before L2 normalisation."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[1:] != self.input_shape:
            raise TracklinkError(f"expected an input batch of shape (N, {', '.join(map(str, self.input_shape))}) "
                                 f"for this model, got {tuple(batch.shape)}; preprocess crops with embed() or "
                                 f"resize them to {self.meta.input_size[1]}x{self.meta.input_size[0]} (WxH)")
        if len(batch) == 0:
            return np.empty((0, self.meta.embedding_dim), np.float32)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return np.concatenate([np.asarray(self.runner(batch[i:i + self.max_batch]), dtype=np.float32)
                               for i in range(0, len(batch), self.max_batch)])

    def __repr__(self) -> str:
        return f"Embedder(backend={self.backend!r}, arch={self.meta.arch!r}, max_batch={self.max_batch})"


def _normalised(out: np.ndarray) -> np.ndarray:
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


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
    classifier = model.head.classifier
    weights = classifier.weight.detach().float().cpu().numpy() if classifier is not None else None
    runner = TorchRunner(model, device, threads)
    return Embedder(runner, meta, f"torch:{runner.device}", max_batch, classifier=weights)


# ---------------------------------------------------------------------------------------------- ORT

class OrtRunner:
    """An onnxruntime session over a single-input model, with the knobs that matter on a small CPU."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[Any] | None = None, device: str | None = None,
                 opt_level: str = "all", intra_op_threads: int | None = None, inter_op_threads: int | None = None,
                 spinning: bool = False, denormal_as_zero: bool = True) -> None:
        self.session = open_session(path, device=device, providers=providers, opt_level=opt_level,
                                    intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads,
                                    spinning=spinning, denormal_as_zero=denormal_as_zero)
        self.provider = self.session.get_providers()[0]
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
        return probe_embedder(_torch_embedder(path, device, **opts), path)
    if name == "onnxruntime":
        if suffix in ENGINE_SUFFIXES:
            raise TracklinkError(f"{path} is a TensorRT engine; onnxruntime needs the ONNX it was built from")
        if suffix != ".onnx":
            return probe_embedder(_ort_from_checkpoint(path, device, **opts), path)
        return probe_embedder(_ort_embedder(path, device, **opts), path)
    if suffix not in ENGINE_SUFFIXES:
        raise TracklinkError(f"the tensorrt backend runs built engines; build one first: "
                             f"tracklink export --model {path} --format engine --out {path.with_suffix('.engine')}")
    return probe_embedder(_trt_embedder(path, device, **opts), path)


def probe_embedder(embedder: Embedder, path: Path) -> Embedder:
    """Run one blank crop through a freshly opened model, so that a model that cannot embed (wrong channel
    count, a detector given as --reid, a graph that fails at run time) is reported now, naming its file,
    and not as a runtime traceback at the first person of the first video."""
    h, w = embedder.meta.input_size
    try:
        out = np.asarray(embedder.runner(np.zeros((1, 3, h, w), np.float32)))
    except Exception as exc:  # each runtime raises its own types; all mean "this file is not a usable model"
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise TracklinkError(f"{path} cannot embed a 3x{h}x{w} crop ({first}); give a re-ID model whose input "
                             "is (N, 3, H, W) images and whose output is (N, D) embeddings") from None
    if out.ndim != 2 or out.shape[0] != 1:
        raise TracklinkError(f"{path} returns shape {list(out.shape)} for one crop, not (1, D) embeddings; is it a "
                             "re-ID model? (a detector goes to --detector)")
    return embedder


def _ort_from_checkpoint(path: Path, device: str | None, **opts: Any) -> Embedder:
    from tracklink.export.onnx_export import export_onnx, load_source

    model, meta = load_source(path)
    with tempfile.TemporaryDirectory() as td:
        onnx_path = Path(td) / f"{path.stem}.onnx"
        export_onnx(model, meta, onnx_path, parity_limit=32)
        # The session holds the graph in memory once created, so the temp file can go.
        return _ort_embedder(onnx_path, device, **opts)
