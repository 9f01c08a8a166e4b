"""TensorRT engines: build from ONNX, describe with a JSON sidecar, run on a CUDA stream.

A serialized engine runs only under the TensorRT version that built it and only on the GPU model it was
tuned for, and the plan file itself does not tell us the input size or normalisation. So every engine
gets `<engine>.json` beside it, and loading refuses an engine whose sidecar is missing or names another
TensorRT or GPU, instead of failing deep inside deserialisation or, worse, running with wrong inputs.

Precision across TensorRT versions:
- TensorRT 10: FP16 with `BuilderFlag.FP16`; INT8 with `BuilderFlag.INT8` and an entropy calibrator
  (`IInt8EntropyCalibrator2`, deprecated since 10.1 but present) fed with real crops.
- TensorRT 11 removed every precision flag and the calibrators: networks are strongly typed, so the
  precision must be in the ONNX. FP16: the graph is converted with onnxruntime's float16 converter
  (NVIDIA suggests ModelOpt AutoCast, a heavy extra dependency, for the same step); INT8: the graph is
  quantised to symmetric Q/DQ with onnxruntime.quantization (export/onnx_export.quantize_int8).
We detect which world we are in from the API (`hasattr`), not from version numbers.

CUDA memory comes from cuda-python's runtime bindings (the `tensorrt` extra installs it), so this path
does not need a CUDA build of PyTorch, which Jetson boards often lack.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tracklink import TracklinkError
from tracklink.models.checkpoint import ModelMeta
from tracklink.utils.files import atomic_write, sha256_file
from tracklink.utils.paths import cache_dir
from tracklink.utils.suffixes import ENGINE_SUFFIXES

log = logging.getLogger(__name__)

INSTALL_HINT = "install tracklink[tensorrt] on a machine with an NVIDIA GPU (e.g. JetPack 6 on a Jetson)"
PRECISIONS = ("fp32", "fp16", "int8")


# ---------------------------------------------------------------------------------------------- sidecar

@dataclass(frozen=True)
class EngineSidecar:
    """What an engine needs around it to be used correctly, and where it may be used."""

    task: str  # "reid" or "detector"
    input_name: str
    output_name: str
    input_size: tuple[int, int]  # (height, width)
    precision: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"
    source: str  # the ONNX the engine was built from
    source_sha256: str
    profile: dict[str, list[int]]  # batch sizes: {"min": [..], "opt": [..], "max": [..]} as full input shapes
    meta: dict[str, Any] = field(default_factory=dict)  # ModelMeta.to_dict() for a re-ID model

    @property
    def max_batch(self) -> int:
        return int(self.profile["max"][0])

    @property
    def model_meta(self) -> ModelMeta | None:
        return ModelMeta.from_dict(self.meta) if self.meta else None

    def to_json(self) -> str:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "EngineSidecar":
        d = json.loads(text)
        d["input_size"] = tuple(d["input_size"])
        return cls(**d)


def sidecar_path(engine: str | os.PathLike) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_sidecar(engine: str | os.PathLike) -> EngineSidecar:
    path = sidecar_path(engine)
    if not path.is_file():
        raise TracklinkError(
            f"{engine} has no sidecar {path.name}: tracklink cannot tell which TensorRT, GPU, input size and "
            "normalisation it was built for. Rebuild it on this device with `tracklink export --format engine`")
    try:
        return EngineSidecar.from_json(path.read_text())
    except (ValueError, TypeError, KeyError) as exc:
        raise TracklinkError(f"{path} is not a valid engine sidecar ({type(exc).__name__}: {exc}); rebuild the "
                             "engine with `tracklink export --format engine`") from None


def check_sidecar(sidecar: EngineSidecar, *, tensorrt_version: str, gpu_name: str, compute_capability: str,
                  engine: str | os.PathLike = "engine") -> None:
    """Refuse an engine built for another TensorRT or GPU. Pure, so it is tested without TensorRT."""
    problems = []
    if sidecar.tensorrt_version != tensorrt_version:
        problems.append(f"TensorRT {sidecar.tensorrt_version} built it, this machine runs TensorRT {tensorrt_version}")
    if sidecar.compute_capability != compute_capability or sidecar.gpu_name != gpu_name:
        problems.append(f"it was built for {sidecar.gpu_name} (compute {sidecar.compute_capability}), this GPU is "
                        f"{gpu_name} (compute {compute_capability})")
    if problems:
        raise TracklinkError(f"cannot use {engine}: {'; '.join(problems)}. Engines are not portable: rebuild it "
                             f"here from {sidecar.source} with `tracklink export --format engine`")


# ---------------------------------------------------------------------------------------------- CUDA

def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise TracklinkError(f"TensorRT is not installed: {INSTALL_HINT}") from None
    return trt


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise TracklinkError(f"cuda-python is not installed: {INSTALL_HINT}") from None
    return cudart


def _cuda(result: tuple) -> Any:
    """cuda-python returns (error, *values); turn a failure into an error that says what failed."""
    cudart = _cudart()
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        _, name = cudart.cudaGetErrorName(err)
        name = name.decode() if isinstance(name, bytes) else name
        raise TracklinkError(f"CUDA call failed: {name}; is an NVIDIA GPU with a working driver present?")
    return values[0] if len(values) == 1 else values


def gpu_identity(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor') of a CUDA device."""
    prop = _cuda(_cudart().cudaGetDeviceProperties(device))
    name = prop.name.split(b"\0", 1)[0].decode() if isinstance(prop.name, bytes) else str(prop.name)
    return name, f"{prop.major}.{prop.minor}"


class _PinnedBuffer:
    """Page-locked host memory viewed as a numpy array: async copies need it, and it is reused per call."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.ptr = _cuda(_cudart().cudaMallocHost(self.nbytes))
        raw = (ctypes.c_byte * self.nbytes).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            _cudart().cudaFreeHost(self.ptr)
            self.ptr = 0


class _DeviceBuffer:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ptr = _cuda(_cudart().cudaMalloc(nbytes))

    def free(self) -> None:
        if self.ptr:
            _cudart().cudaFree(self.ptr)
            self.ptr = 0


# ---------------------------------------------------------------------------------------------- build

def _logger(trt):
    class _Forward(trt.ILogger):
        """TensorRT's messages into our logging, so they reach stderr with everything else."""

        severity = trt.ILogger.Severity
        levels = {severity.INTERNAL_ERROR: logging.ERROR, severity.ERROR: logging.ERROR,
                  severity.WARNING: logging.WARNING, severity.INFO: logging.DEBUG, severity.VERBOSE: logging.DEBUG}

        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg) -> None:
            log.log(self.levels.get(severity, logging.INFO), "TensorRT: %s", msg)

    return _Forward()


def _entropy_calibrator(trt, batches: list[np.ndarray]):
    """TensorRT 10 implicit INT8: feed preprocessed crops through one reused device buffer.

    No calibration cache: a cache keyed by file name would silently reuse scales from other crops, and
    calibrating a re-ID net on a few hundred crops takes seconds.
    """

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(batches)
            self.buffer = _DeviceBuffer(batches[0].nbytes)

        def get_batch_size(self) -> int:
            return len(batches[0])

        def get_batch(self, names):
            batch = next(self.batches, None)
            if batch is None:
                return None
            _cuda(_cudart().cudaMemcpy(self.buffer.ptr, batch.ctypes.data, batch.nbytes,
                                       _cudart().cudaMemcpyKind.cudaMemcpyHostToDevice))
            return [self.buffer.ptr for _ in names]

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, data) -> None:
            pass

    return _Calibrator()


def _to_fp16_onnx(src: Path, dst: Path) -> None:
    """TensorRT 11 strong typing: the FP16 precision must be in the graph; float I/O stays fp32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))


def default_timing_cache(trt_version: str, gpu_name: str) -> Path:
    slug = "".join(c if c.isalnum() else "-" for c in gpu_name).strip("-").lower()
    return cache_dir() / f"trt-{trt_version}-{slug}.timing"


@dataclass
class _BuildInput:
    """What the ONNX says about itself: input dims (-1 where dynamic) and, for a re-ID model, its metadata."""

    dims: list[int]
    meta: ModelMeta | None


def _read_build_input(onnx_path: Path, task: str) -> _BuildInput:
    from tracklink.export.onnx_export import load_onnx, meta_from_onnx

    proto = load_onnx(onnx_path, load_external_data=False)
    inp, outp = proto.graph.input[0], proto.graph.output[0]
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim]
    meta = None
    if task == "reid":
        props = {p.key: p.value for p in proto.metadata_props}
        meta = meta_from_onnx(props, dims, [d.dim_value for d in outp.type.tensor_type.shape.dim], onnx_path.name)
        if meta.link_threshold is None:
            from tracklink.models.weights import identify

            entry = identify(onnx_path)  # a published ONNX: the engine keeps its calibrated threshold
            meta.link_threshold = entry.link_threshold if entry is not None else None
        if -1 in dims[2:]:  # symbolic H/W: the metadata knows the size
            dims[2:] = meta.input_size
    return _BuildInput(dims, meta)


def _strongly_typed_source(trt, onnx_path: Path, precision: str, workdir: Path, meta: ModelMeta | None,
                           calib_dir: str | os.PathLike | None, calib_limit: int | None) -> Path:
    """The ONNX to parse: on TensorRT 11 (no precision flags) the precision must already be in the graph."""
    from tracklink.export.onnx_export import quantize_int8

    if hasattr(trt.BuilderFlag, "FP16"):  # TensorRT 10: flags choose the precision
        return onnx_path
    if precision == "int8":
        build_from = workdir / "qdq.onnx"
        quantize_int8(onnx_path, build_from, calib_dir, meta, limit=calib_limit, for_tensorrt=True)
        return build_from
    if precision == "fp16":
        build_from = workdir / "fp16.onnx"
        _to_fp16_onnx(onnx_path, build_from)
        return build_from
    return onnx_path


def _parse_network(trt, builder, logger, source: Path, named: Path):
    network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TracklinkError(f"TensorRT cannot parse {named}: {errors}")
    return network, parser


def _add_profile(builder, config, input_name: str, dims: list[int],
                 batch: tuple[int, int, int] | None) -> dict[str, list[int]]:
    """The optimisation profile for a dynamic batch (min/opt/max), or the static shape; returns the shapes."""
    h, w = dims[2], dims[3]
    if batch is None or dims[0] != -1:
        static = [max(d, 1) for d in dims]
        return {"min": static, "opt": static, "max": static}
    lo, opt, hi = batch
    if not 1 <= lo <= opt <= hi:
        raise TracklinkError(f"batch profile must satisfy 1 <= min <= opt <= max, got {lo}/{opt}/{hi}")
    shapes = {k: [b, dims[1], h, w] for k, b in (("min", lo), ("opt", opt), ("max", hi))}
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    return shapes


def _set_weak_precision(trt, builder, config, precision: str, input_name: str, build: _BuildInput,
                        shapes: dict[str, list[int]], calib_dir, calib_limit: int | None) -> None:
    """TensorRT 10's precision flags, and INT8 entropy calibration on real crops."""
    from tracklink.export.onnx_export import parity_batch

    if not hasattr(trt.BuilderFlag, "FP16"):
        return
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    if precision != "int8":
        return
    data, _ = parity_batch(build.meta, calib_dir, calib_limit)
    bs = min(shapes["opt"][0], len(data))
    batches = [np.ascontiguousarray(data[i:i + bs]) for i in range(0, len(data) - bs + 1, bs)]
    config.set_flag(trt.BuilderFlag.INT8)
    config.set_flag(trt.BuilderFlag.FP16)  # layers without an INT8 kernel fall back to FP16, not FP32
    config.int8_calibrator = _entropy_calibrator(trt, batches)
    if shapes["min"] != shapes["max"]:
        dims = build.dims
        calib_profile = builder.create_optimization_profile()
        calib_profile.set_shape(input_name, *([bs, dims[1], dims[2], dims[3]],) * 3)
        config.set_calibration_profile(calib_profile)


def _check_build_request(precision: str, build: _BuildInput, calib_dir) -> None:
    if precision not in PRECISIONS:
        raise TracklinkError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "int8" and build.meta is None:
        raise TracklinkError("INT8 detector engines are not supported; build the detector in fp16 or fp32")
    if precision == "int8" and calib_dir is None:
        raise TracklinkError("--int8 needs calibration crops: pass --calib DIR")


def build_engine(onnx_path: str | os.PathLike, out: str | os.PathLike, *, precision: str = "fp32",
                 batch: tuple[int, int, int] | None = (1, 16, 64), workspace_mib: int | None = None,
                 calib_dir: str | os.PathLike | None = None, calib_limit: int | None = 512,
                 timing_cache: str | os.PathLike | None = None, task: str = "reid") -> EngineSidecar:
    """Build a serialized engine from an ONNX file and write it with its sidecar.

    `batch` is the (min, opt, max) batch of the optimization profile; None keeps the ONNX's static shape
    (the YOLOX detector is 1x3x416x416). The timing cache is shared by builds on this GPU and TensorRT, so
    a rebuild skips most of the kernel timing.
    """
    trt = import_tensorrt()
    onnx_path, out = Path(onnx_path), Path(out)
    if out.suffix.lower() not in ENGINE_SUFFIXES:  # before reading the ONNX: a typo costs nothing
        raise TracklinkError(f"engine path {out} should end in {' or '.join(ENGINE_SUFFIXES)}")
    build = _read_build_input(onnx_path, task)
    _check_build_request(precision, build, calib_dir)
    gpu_name, cc = gpu_identity()
    cache_path = Path(timing_cache) if timing_cache else default_timing_cache(trt.__version__, gpu_name)

    with tempfile.TemporaryDirectory() as td:
        source = _strongly_typed_source(trt, onnx_path, precision, Path(td), build.meta, calib_dir, calib_limit)
        logger = _logger(trt)
        builder = trt.Builder(logger)
        network, _parser = _parse_network(trt, builder, logger, source, onnx_path)  # the parser must outlive the build
        config = builder.create_builder_config()
        if workspace_mib:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
        input_name = network.get_input(0).name
        shapes = _add_profile(builder, config, input_name, build.dims, batch)
        _set_weak_precision(trt, builder, config, precision, input_name, build, shapes, calib_dir, calib_limit)
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

        log.info("building %s engine for %s (compute %s) from %s; this takes a while", precision, gpu_name, cc,
                 onnx_path.name)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise TracklinkError(f"TensorRT failed to build an engine from {onnx_path}; run with -v for its log")

    atomic_write(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    sidecar = EngineSidecar(
        task=task, input_name=input_name, output_name=network.get_output(0).name,
        input_size=(build.dims[2], build.dims[3]), precision=precision, tensorrt_version=trt.__version__,
        gpu_name=gpu_name, compute_capability=cc, source=onnx_path.name, source_sha256=sha256_file(onnx_path),
        profile=shapes, meta=build.meta.to_dict() if build.meta else {})
    atomic_write(out, bytes(memoryview(plan)))
    atomic_write(sidecar_path(out), sidecar.to_json())
    return sidecar


# ---------------------------------------------------------------------------------------------- run

class TrtRunner:
    """One engine, one execution context, one CUDA stream; buffers sized once for the profile maximum."""

    def __init__(self, engine_path: str | os.PathLike, device: int = 0) -> None:
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise TracklinkError(f"engine not found: {engine_path}")
        self.sidecar = read_sidecar(engine_path)  # before importing TensorRT: a missing sidecar is the clearer error
        trt = import_tensorrt()
        cudart = _cudart()
        self.device = device
        _cuda(cudart.cudaSetDevice(device))
        gpu_name, cc = gpu_identity(device)
        check_sidecar(self.sidecar, tensorrt_version=trt.__version__, gpu_name=gpu_name, compute_capability=cc,
                      engine=engine_path)
        self._logger = _logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise TracklinkError(f"TensorRT could not deserialize {engine_path}; the file may be truncated. Rebuild it")
        self.context = self.engine.create_execution_context()
        self.input_name, self.output_name = self.sidecar.input_name, self.sidecar.output_name
        in_max = tuple(self.sidecar.profile["max"])
        self.max_batch = in_max[0]
        self.context.set_input_shape(self.input_name, in_max)
        out_max = tuple(self.context.get_tensor_shape(self.output_name))
        self._in_host = _PinnedBuffer(in_max, trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self._out_host = _PinnedBuffer(out_max, trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self._in_dev = _DeviceBuffer(self._in_host.nbytes)
        self._out_dev = _DeviceBuffer(self._out_host.nbytes)
        self.context.set_tensor_address(self.input_name, self._in_dev.ptr)
        self.context.set_tensor_address(self.output_name, self._out_dev.ptr)
        self._stream = _cuda(cudart.cudaStreamCreate())
        self.version = trt.__version__

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(n, C, H, W) with n <= max_batch -> the first output, (n, ...). Callers split larger batches."""
        cudart = _cudart()
        # The current device is per host thread; the pipeline may call from its read-ahead thread.
        _cuda(cudart.cudaSetDevice(self.device))
        n = len(batch)
        if not 1 <= n <= self.max_batch:
            raise TracklinkError(f"batch of {n} is outside this engine's profile (1..{self.max_batch})")
        self._in_host.array[:n] = batch
        self.context.set_input_shape(self.input_name, (n, *batch.shape[1:]))
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        in_bytes = self._in_host.nbytes // self.max_batch * n
        out_bytes = int(np.prod(out_shape)) * self._out_host.array.itemsize
        stream = self._stream
        _cuda(cudart.cudaMemcpyAsync(self._in_dev.ptr, self._in_host.ptr, in_bytes,
                                     cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
        if not self.context.execute_async_v3(int(stream)):
            raise TracklinkError("TensorRT execution failed; run with -v for its log")
        _cuda(cudart.cudaMemcpyAsync(self._out_host.ptr, self._out_dev.ptr, out_bytes,
                                     cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
        _cuda(cudart.cudaStreamSynchronize(stream))
        return self._out_host.array.reshape(-1)[: int(np.prod(out_shape))].reshape(out_shape).astype(np.float32)

    def close(self) -> None:
        for buf in ("_in_host", "_out_host", "_in_dev", "_out_dev"):
            if hasattr(self, buf):
                getattr(self, buf).free()
        if getattr(self, "_stream", None) is not None:
            _cudart().cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the CUDA bindings may already be gone
            pass
