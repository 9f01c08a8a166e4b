"""TensorRT engines from the exported OSNet and the YOLOX detector: parity with ONNX Runtime, sidecar, splitting.

Runs only where `tensorrt` and a CUDA GPU exist (a Jetson, a GPU workstation); skipped elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install tracklink[tensorrt] on a GPU)")

from tracklink import TracklinkError  # noqa: E402
from tracklink.export.onnx_export import MIN_COSINE, export_onnx, load_crops  # noqa: E402
from tracklink.export.runtime import OrtRunner, open_embedder  # noqa: E402
from tracklink.export.tensorrt import (TrtRunner, build_engine, gpu_identity, read_sidecar,  # noqa: E402
                                       sha256_file, sidecar_path)


def _cuda_devices() -> int:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return 0
    err, count = cudart.cudaGetDeviceCount()
    return count if err == cudart.cudaError_t.cudaSuccess else 0


pytestmark = pytest.mark.skipif(_cuda_devices() == 0, reason="no CUDA GPU (or cuda-python) on this machine")


@pytest.fixture(scope="module")
def onnx_model(osnet_onnx: Path, pku_dir: Path, tmp_path_factory) -> Path:
    from tracklink.models.onnx_import import import_weights

    model, meta = import_weights(osnet_onnx)
    out = tmp_path_factory.mktemp("trt") / "osnet.onnx"
    export_onnx(model, meta, out, parity_crops=pku_dir, parity_limit=32)
    return out


@pytest.fixture(scope="module")
def crops(pku_dir: Path) -> list[np.ndarray]:
    return load_crops(pku_dir, limit=80)


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(1).min())


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_matches_onnxruntime(onnx_model, crops, pku_dir, precision, tmp_path):
    """INT8 takes TensorRT 10's entropy calibrator or TensorRT 11's Q/DQ path, whichever this TensorRT has."""
    engine = tmp_path / f"osnet_{precision}.engine"
    sidecar = build_engine(onnx_model, engine, precision=precision, batch=(1, 16, 32), calib_dir=pku_dir,
                           calib_limit=64, timing_cache=tmp_path / "timing.cache")
    gpu, cc = gpu_identity()
    assert (sidecar.gpu_name, sidecar.compute_capability, sidecar.tensorrt_version) == (gpu, cc, trt.__version__)
    assert sidecar.source_sha256 == sha256_file(onnx_model) and read_sidecar(engine) == sidecar
    assert sidecar.profile["max"] == [32, 3, 256, 128] and (tmp_path / "timing.cache").stat().st_size > 0

    emb = open_embedder(engine)
    assert emb.backend.startswith("tensorrt:") and emb.max_batch == 32
    reference = open_embedder(onnx_model, "onnxruntime", "cpu").embed(crops)
    out = emb.embed(crops)  # 80 crops > profile max 32: split into 32 + 32 + 16
    assert out.shape == (80, 512)
    assert _min_cos(out, reference) >= MIN_COSINE[precision]


def test_engine_with_foreign_sidecar_is_refused(onnx_model, tmp_path):
    engine = tmp_path / "osnet.engine"
    build_engine(onnx_model, engine, batch=(1, 4, 8), timing_cache=tmp_path / "timing.cache")
    text = sidecar_path(engine).read_text()
    sidecar_path(engine).write_text(text.replace(f'"tensorrt_version": "{trt.__version__}"',
                                                 '"tensorrt_version": "0.0.0"'))
    with pytest.raises(TracklinkError, match="TensorRT 0.0.0 built it"):
        open_embedder(engine)


def test_yolox_engine_matches_onnxruntime(yolox_onnx, tmp_path):
    engine = tmp_path / "yolox_nano.engine"
    sidecar = build_engine(yolox_onnx, engine, batch=None, task="detector", timing_cache=tmp_path / "timing.cache")
    assert sidecar.profile["max"] == [1, 3, 416, 416] and sidecar.meta == {}
    frame = np.random.default_rng(0).uniform(0, 255, (1, 3, 416, 416)).astype(np.float32)
    got = TrtRunner(engine)(frame)
    want = OrtRunner(yolox_onnx, device="cpu")(frame)
    assert got.shape == want.shape == (1, 3549, 85)
    assert np.abs(got - want).max() <= 1e-2 * max(1.0, np.abs(want).max())
    with pytest.raises(TracklinkError, match="detector engine, not a re-ID embedder"):
        open_embedder(engine)
