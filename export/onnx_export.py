"""Export a re-ID model to ONNX, verified: checker, onnxslim, then parity against PyTorch on real crops.

The file appears at its destination only after every check passed: it is written to a temp path beside it
and renamed, so a failed or interrupted export never leaves a plausible-looking model behind.

The model's `ModelMeta` travels inside the ONNX (`metadata_props["tracklink"]`, JSON), so runtimes read
input size and normalisation from the file itself instead of from a flag the user must keep in sync.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from tracklink import TracklinkError
from tracklink.export.source_checkpoint import source_record
from tracklink.models.checkpoint import IMAGENET_MEAN, IMAGENET_STD, ModelMeta
from tracklink.utils.files import atomic_path
from tracklink.utils.suffixes import IMAGE_SUFFIXES, is_image

if TYPE_CHECKING:
    import onnx

    from tracklink.models.reid import ReIDModel

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
META_KEY = "tracklink"
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
# fp32 export: anything below this is a conversion bug, and the export stops.
PARITY_MIN_COSINE = 0.9999
# Half precision rounds every activation; a correct FP16 engine stays well above this.
FP16_MIN_COSINE = 0.999
# INT8 changes the function on purpose, so 0.9999 cannot hold: a good OSNet-x0.25 calibration on PKU crops
# gave min 0.979 / mean 0.993 against fp32. Below this floor the calibration broke the model (wrong crops,
# saturated ranges) and the export stops; above it we warn and report, and the accuracy cost must be
# measured with `tracklink eval` on a labelled set, not inferred from cosine.
INT8_MIN_COSINE = 0.95
MIN_COSINE = {"fp32": PARITY_MIN_COSINE, "fp16": FP16_MIN_COSINE, "int8": INT8_MIN_COSINE}
DEFAULT_INPUT_SIZE = (256, 128)  # the documented OSNet/torchreid default, for ONNX files without our metadata


@dataclass(frozen=True)
class Parity:
    """How far the exported graph is from PyTorch on the same batch."""

    crops: int
    max_abs_diff: float
    min_cosine: float
    mean_cosine: float
    inputs: str  # where the batch came from: a directory of crops, or "random"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    meta: ModelMeta
    opset: int
    precision: str  # "fp32" or "int8"
    parity: Parity  # of the file at `path`
    fp32_parity: Parity | None = None  # for INT8: the float graph it was quantised from

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.path), "format": "onnx", "precision": self.precision, "opset": self.opset,
                "input_size": list(self.meta.input_size), "embedding_dim": self.meta.embedding_dim,
                "parity": self.parity.to_dict(),
                "fp32_parity": self.fp32_parity.to_dict() if self.fp32_parity else None}


# ---------------------------------------------------------------------------------------------- metadata

def meta_from_onnx(props: Mapping[str, str], input_shape: Sequence[Any], output_shape: Sequence[Any],
                   source: str = "") -> ModelMeta:
    """ModelMeta from an ONNX file's metadata, or documented defaults when it has none.

    Files we did not write (the shared BoxMOT OSNet export) carry no metadata: they get ImageNet mean/std
    and the input size and embedding size that the graph declares.
    """
    if META_KEY in props:
        try:
            return ModelMeta.from_dict(json.loads(props[META_KEY]))
        except (ValueError, TypeError) as exc:
            raise TracklinkError(f"{source}: metadata '{META_KEY}' is not valid model metadata ({exc}); "
                                 "re-export the model with `tracklink export`") from None
    if len(input_shape) != 4:
        raise TracklinkError(f"{source}: input has shape {list(input_shape)}; expected (N, 3, H, W) images")
    h, w = input_shape[2], input_shape[3]
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        input_size = (h, w)
    else:
        log.warning("%s declares no fixed input size; assuming %dx%d", source, *DEFAULT_INPUT_SIZE)
        input_size = DEFAULT_INPUT_SIZE
    dim = output_shape[-1] if output_shape else None
    embedding_dim = dim if isinstance(dim, int) and dim > 0 else 512
    return ModelMeta(arch="unknown", input_size=input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     embedding_dim=embedding_dim, source=source)


def _dims(value_info: "onnx.ValueInfoProto") -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


def read_onnx_meta(path: str | os.PathLike) -> ModelMeta:
    """ModelMeta of an ONNX file (see `meta_from_onnx`), without loading its weights into a runtime."""
    proto = load_onnx(path, load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    return meta_from_onnx(props, _dims(proto.graph.input[0]), _dims(proto.graph.output[0]), source=Path(path).name)


def set_onnx_meta(proto: "onnx.ModelProto", meta: ModelMeta, **extra: Any) -> None:
    for i in reversed(range(len(proto.metadata_props))):
        if proto.metadata_props[i].key == META_KEY:
            del proto.metadata_props[i]
    proto.metadata_props.add(key=META_KEY, value=json.dumps({**meta.to_dict(), **extra}))


def flush_denormal_weights(proto: "onnx.ModelProto") -> int:
    """Set float32 weights below the smallest normal float (1.2e-38) to zero; returns how many.

    BN folding leaves hundreds of such weights in OSNet, and x86 arithmetic on denormals is many times
    slower: ONNX Runtime without denormals-as-zero ran this graph at about half speed. Zero is within
    1.2e-38 of each value, so the embeddings do not move.
    """
    from onnx import numpy_helper

    tiny = np.finfo(np.float32).tiny
    flushed = 0
    for tensor in proto.graph.initializer:
        if tensor.data_type != 1:  # TensorProto.FLOAT
            continue
        values = numpy_helper.to_array(tensor)
        denormal = (np.abs(values) < tiny) & (values != 0)
        if denormal.any():
            flushed += int(denormal.sum())
            tensor.CopyFrom(numpy_helper.from_array(np.where(denormal, np.float32(0), values), tensor.name))
    if flushed:
        log.info("flushed %d denormal weights to zero", flushed)
    return flushed


def load_onnx(path: str | os.PathLike, load_external_data: bool = True) -> "onnx.ModelProto":
    import onnx

    path = Path(path)
    if not path.is_file():
        raise TracklinkError(f"ONNX model not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # protobuf DecodeError and friends: the file is cut short or not ONNX
        raise TracklinkError(f"cannot parse ONNX model {path} ({type(exc).__name__}): the file is truncated or "
                             "not an ONNX model; export it again with `tracklink export`") from None


# ---------------------------------------------------------------------------------------------- inputs

def list_images(directory: str | os.PathLike) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise TracklinkError(f"crop directory not found: {directory}")
    files = sorted(p for p in directory.rglob("*") if is_image(p) and p.is_file())
    if not files:
        raise TracklinkError(f"{directory} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def spread(items: Sequence[Any], limit: int | None) -> list[Any]:
    """At most `limit` items taken evenly across the list, so a sorted dataset keeps all its identities."""
    if limit is None or len(items) <= limit:
        return list(items)
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in idx]


def load_crops(directory: str | os.PathLike, limit: int | None = None) -> list[np.ndarray]:
    from tracklink.models.preprocess import read_image

    return [read_image(p) for p in spread(list_images(directory), limit)]


def parity_batch(meta: ModelMeta, crops_dir: str | os.PathLike | None = None,
                 limit: int | None = 256) -> tuple[np.ndarray, str]:
    """Preprocessed crops for a parity check: the caller's, else random tensors.

    Random inputs exercise the graph but not the activation ranges of real people; we warn because a
    random-input parity can miss a problem that real crops show.
    """
    from tracklink.models.preprocess import preprocess_crops

    if crops_dir is not None:
        crops = load_crops(crops_dir, limit)
        return preprocess_crops(crops, meta.input_size, meta.mean, meta.std), str(crops_dir)
    log.warning("no crop directory given: checking parity on random tensors; "
                "pass --parity-crops DIR for a check on real images")
    h, w = meta.input_size
    rng = np.random.default_rng(0)
    return rng.standard_normal((16, 3, h, w), dtype=np.float32), "random"


def compare(reference: np.ndarray, other: np.ndarray, inputs: str) -> Parity:
    ref = reference.astype(np.float64)
    oth = other.astype(np.float64)
    cos = (ref * oth).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(oth, axis=1) + 1e-12)
    return Parity(crops=len(ref), max_abs_diff=float(np.abs(ref - oth).max()), min_cosine=float(cos.min()),
                  mean_cosine=float(cos.mean()), inputs=inputs)


def _batches(x: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(x), size):
        yield x[i:i + size]


def torch_embeddings(model: "ReIDModel", batch: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Eager PyTorch reference, channels-last and with denormals flushed: both cost several times in speed
    on CPU when missing (see runtime.TorchRunner)."""
    import torch

    torch.set_flush_denormal(True)
    model = model.eval().to(memory_format=torch.channels_last)
    device = next(model.parameters(), torch.empty(0)).device
    with torch.inference_mode():
        return np.concatenate([
            model(torch.from_numpy(b).to(device).contiguous(memory_format=torch.channels_last)).float().cpu().numpy()
            for b in _batches(batch, chunk)])


def ort_embeddings(path: str | os.PathLike, batch: np.ndarray, chunk: int = 64) -> np.ndarray:
    """The reference side of a parity check: ONNX Runtime on the CPU, whatever GPU the machine has."""
    from tracklink.export.ort_session import open_session

    session = open_session(path, device="cpu")
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: b})[0] for b in _batches(batch, chunk)])


# ---------------------------------------------------------------------------------------------- export

def load_source(path: str | os.PathLike) -> tuple["ReIDModel", ModelMeta]:
    """A tracklink checkpoint as is; a torchreid .pth or an OSNet ONNX through `import_weights`."""
    from tracklink.models.checkpoint import load_checkpoint
    from tracklink.models.onnx_import import import_weights

    path = Path(path)
    if not path.is_file():
        raise TracklinkError(f"model not found: {path}")
    if path.suffix.lower() == ".pt":
        return load_checkpoint(path)
    if path.suffix.lower() == ".onnx":
        props = {p.key: p.value for p in load_onnx(path, False).metadata_props}
        if META_KEY in props:
            # import_weights maps third-party OSNet exports; ours name the checkpoint they came from instead.
            from tracklink.export.source_checkpoint import find_source

            return load_source(find_source(path, json.loads(props[META_KEY])))
    return import_weights(path)


def _trace_to_onnx(model: "ReIDModel", meta: ModelMeta, path: Path, opset: int) -> None:
    import torch

    h, w = meta.input_size
    dummy = torch.zeros(2, 3, h, w)
    # The TorchScript exporter (dynamo=False), chosen on purpose: the dynamo exporter needs onnxscript, which
    # we do not otherwise depend on, while the TorchScript exporter handles a plain conv net with a dynamic
    # batch axis exactly (cosine 1.0 against eager) and names nodes by module scope, like the BoxMOT OSNet
    # export that models/onnx_import.py reads. It is deprecated since torch 2.9 but still shipped.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the exporter's own notices about itself
        torch.onnx.export(
            model.eval().cpu(), (dummy,), str(path), dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )


def export_onnx(model: "ReIDModel", meta: ModelMeta, out: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                parity_crops: str | os.PathLike | None = None, parity_limit: int | None = 256,
                int8_calib: str | os.PathLike | None = None, calib_limit: int | None = 256,
                calib_method: str = "minmax", for_tensorrt: bool = False,
                source: str | os.PathLike | None = None) -> OnnxExport:
    """Trace, check, simplify, embed metadata, verify parity, then move the file into place.

    `source`, the file the model was loaded from, is recorded in the metadata with its sha256, so PyTorch
    can find the same weights again (`source_checkpoint.find_source`).

    With `int8_calib`, the verified float graph is quantised to QDQ INT8 (see `quantize_int8`) and the
    INT8 file is verified against PyTorch with the INT8 gate instead.
    """
    import onnx
    import onnxslim

    if opset < 17:
        raise TracklinkError(f"--opset {opset} is too old: tracklink exports opset 17 or newer")
    out = Path(out)
    with tempfile.TemporaryDirectory() as td:
        raw, tmp = Path(td) / "raw.onnx", Path(td) / "fp32.onnx"
        int8_tmp = Path(td) / "int8.onnx" if int8_calib is not None else None
        _trace_to_onnx(model, meta, raw, opset)
        proto = onnx.load(str(raw))
        onnx.checker.check_model(proto, full_check=True)
        proto = onnxslim.slim(proto)
        onnx.checker.check_model(proto, full_check=True)
        flush_denormal_weights(proto)
        set_onnx_meta(proto, meta, precision="fp32", **source_record(source))
        onnx.save(proto, str(tmp))

        # INT8 is judged on people: random tensors fall outside the calibrated activation ranges (the shared
        # OSNet scored min cosine 0.857 on them against 0.983 on PKU crops), so without --parity-crops the
        # calibration crops serve.
        batch, inputs = parity_batch(meta, parity_crops if parity_crops is not None else int8_calib, parity_limit)
        reference = torch_embeddings(model, batch)
        parity = compare(reference, ort_embeddings(tmp, batch), inputs)
        log.info("parity fp32 vs torch on %d crops: max |diff| %.2e, min cosine %.6f",
                 parity.crops, parity.max_abs_diff, parity.min_cosine)
        if not parity.min_cosine >= PARITY_MIN_COSINE:
            raise TracklinkError(f"exported ONNX disagrees with PyTorch: min cosine {parity.min_cosine:.6f} < "
                                 f"{PARITY_MIN_COSINE} on {parity.crops} crops ({inputs}); {out} was not written")
        result = OnnxExport(out, meta, opset, "fp32", parity)

        if int8_tmp is not None:
            quantize_int8(tmp, int8_tmp, int8_calib, meta, limit=calib_limit, for_tensorrt=for_tensorrt,
                          method=calib_method)
            int8_parity = compare(reference, ort_embeddings(int8_tmp, batch), inputs)
            log.info("parity int8 vs torch: max |diff| %.2e, min cosine %.4f, mean cosine %.4f",
                     int8_parity.max_abs_diff, int8_parity.min_cosine, int8_parity.mean_cosine)
            if not int8_parity.min_cosine >= INT8_MIN_COSINE:
                raise TracklinkError(
                    f"INT8 model is broken: min cosine {int8_parity.min_cosine:.4f} < {INT8_MIN_COSINE} against "
                    f"PyTorch; calibrate on crops like the ones it will see (--calib DIR). {out} was not written")
            if int8_parity.min_cosine < PARITY_MIN_COSINE:
                log.warning("INT8 min cosine %.4f is below the fp32 gate %.4f, as expected for INT8; measure the "
                            "accuracy cost with `tracklink eval` before deploying it",
                            int8_parity.min_cosine, PARITY_MIN_COSINE)
            result = OnnxExport(out, meta, opset, "int8", int8_parity, fp32_parity=parity)
        final = int8_tmp if int8_tmp is not None else tmp
        with atomic_path(out) as target:
            shutil.copyfile(final, target)
        return result


# ---------------------------------------------------------------------------------------------- INT8

@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs one INFO line per tensor on the root logger; keep them for -v only."""
    root = logging.getLogger()
    level = root.level
    if level > logging.DEBUG:
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _CropReader:
    """onnxruntime.quantization CalibrationDataReader over a directory of crops, preprocessed like inference."""

    def __init__(self, crops_dir: str | os.PathLike, meta: ModelMeta, input_name: str, limit: int | None,
                 batch: int = 16) -> None:
        from tracklink.models.preprocess import preprocess_crops

        crops = load_crops(crops_dir, limit)
        data = preprocess_crops(crops, meta.input_size, meta.mean, meta.std)
        self._feeds = iter([{input_name: b} for b in _batches(data, batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_int8(fp32_onnx: str | os.PathLike, out: str | os.PathLike, calib_dir: str | os.PathLike,
                  meta: ModelMeta, *, limit: int | None = 256, for_tensorrt: bool = False,
                  method: str = "minmax") -> None:
    """Static QDQ INT8 quantisation with onnxruntime.quantization, calibrated on real crops.

    CPU (ONNX Runtime): uint8 activations, int8 per-channel weights, the pairing ORT's x86 kernels are
    built for. TensorRT reads only symmetric int8 Q/DQ, so `for_tensorrt` makes activations int8 and
    symmetric. MinMax by default: on OSNet-x0.25 / PKU, percentile calibration moved image rank-1 by 2 of
    320 queries (0.762 -> 0.769) and took 6x longer (53 vs 9 s on 256 crops, 2 CPU cores).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise TracklinkError(f"unknown calibration method {method!r}; choose one of {', '.join(methods)}")
    if calib_dir is None:
        raise TracklinkError("INT8 needs calibration crops: pass --calib DIR (a folder of person crops)")
    src = Path(fp32_onnx)
    with tempfile.TemporaryDirectory() as td, _quiet_root_logger():
        prepped = Path(td) / "prepped.onnx"
        quant_pre_process(str(src), str(prepped), skip_symbolic_shape=True)
        props = {p.key: p.value for p in load_onnx(src, load_external_data=False).metadata_props}
        input_name = load_onnx(prepped, load_external_data=False).graph.input[0].name
        reader = _CropReader(calib_dir, meta, input_name, limit)
        quantize_static(
            str(prepped), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8 if for_tensorrt else QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
            extra_options={"ActivationSymmetric": for_tensorrt, "WeightSymmetric": True, "CalibPercentile": 99.999},
        )
    import onnx

    proto = onnx.load(str(out))
    if META_KEY in props:  # keep our metadata (and the source record), marked as INT8
        kept = json.loads(props[META_KEY])
        known = ModelMeta.from_dict(kept)
        extras = {k: v for k, v in kept.items() if k not in known.to_dict()}
        set_onnx_meta(proto, known, **{**extras, "precision": "int8"})
    onnx.save(proto, str(out))
