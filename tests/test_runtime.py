"""The embedder layer: same embeddings on every backend, batch splitting, and one clear error per bad input."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tracklink import TracklinkError
from tracklink.cli import main
from tracklink.export.bench import parse_backends, parse_batches, round_robin
from tracklink.export.onnx_export import PARITY_MIN_COSINE, load_crops
from tracklink.export.runtime import Embedder, open_embedder, resolve_backend
from tracklink.export.tensorrt import EngineSidecar, check_sidecar, read_sidecar, sidecar_path


@pytest.fixture(scope="module")
def crops(pku_dir: Path) -> list[np.ndarray]:
    return load_crops(pku_dir, limit=48)  # spread over all 40 identities


@pytest.fixture(scope="module")
def ort_shared(osnet_onnx: Path) -> Embedder:
    return open_embedder(osnet_onnx)


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(1).min())  # embeddings are L2-normalised


def test_backends_agree_on_real_crops(osnet_checkpoint, ort_shared, crops):
    torch_emb = open_embedder(osnet_checkpoint)  # .pt -> torch
    ort_ckpt = open_embedder(osnet_checkpoint, backend="onnxruntime")  # exported on the fly, parity-checked
    assert torch_emb.backend == "torch:cpu"
    assert ort_ckpt.backend == ort_shared.backend == "onnxruntime:CPUExecutionProvider"
    e_torch, e_ort, e_shared = (e.embed(crops) for e in (torch_emb, ort_ckpt, ort_shared))
    assert e_torch.shape == (len(crops), 512) and e_torch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e_ort, axis=1), 1.0, rtol=1e-5)
    assert _min_cos(e_torch, e_ort) >= PARITY_MIN_COSINE
    assert _min_cos(e_torch, e_shared) >= PARITY_MIN_COSINE
    assert _min_cos(e_ort, e_shared) >= PARITY_MIN_COSINE


def test_meta_drives_preprocessing(ort_shared, osnet_checkpoint):
    assert ort_shared.meta.input_size == (256, 128) and ort_shared.input_shape == (3, 256, 128)
    assert open_embedder(osnet_checkpoint).meta.arch == "osnet_x0_25"


def test_batches_above_max_batch_are_split(osnet_onnx, ort_shared, crops):
    small = open_embedder(osnet_onnx, max_batch=7)
    sizes: list[int] = []
    runner = small.runner
    small.runner = lambda batch: sizes.append(len(batch)) or runner(batch)
    out = small.embed(crops[:20])
    assert sizes == [7, 7, 6]
    np.testing.assert_allclose(out, ort_shared.embed(crops[:20]), atol=1e-5)


def test_empty_batch_gives_empty_embeddings(ort_shared):
    assert ort_shared.embed([]).shape == (0, 512)
    out = ort_shared.embed_tensor(np.empty((0, 3, 256, 128), np.float32))
    assert out.shape == (0, 512) and out.dtype == np.float32


def test_wrong_image_size_names_expected_and_got(ort_shared):
    with pytest.raises(TracklinkError, match=r"\(N, 3, 256, 128\).*got \(2, 3, 128, 64\)"):
        ort_shared.embed_tensor(np.zeros((2, 3, 128, 64), np.float32))
    with pytest.raises(TracklinkError, match="crop 1 has shape"):
        ort_shared.embed([np.zeros((10, 5, 3), np.uint8), np.zeros((10, 5), np.uint8)])


def test_truncated_onnx_is_a_clear_error(osnet_onnx, tmp_path):
    broken = tmp_path / "osnet.onnx"
    data = osnet_onnx.read_bytes()
    broken.write_bytes(data[: len(data) * 9 // 10])
    with pytest.raises(TracklinkError, match="truncated or not an ONNX model"):
        open_embedder(broken)


def test_backend_choice_by_suffix_and_override(tmp_path):
    assert resolve_backend("m.pt") == "torch" and resolve_backend("m.onnx") == "onnxruntime"
    assert resolve_backend("m.engine") == resolve_backend("m.plan") == "tensorrt"
    assert resolve_backend("m.onnx", "torch") == "torch" and resolve_backend("m.pt", "ort") == "onnxruntime"
    with pytest.raises(TracklinkError, match="cannot tell the backend"):
        resolve_backend("m.bin")
    with pytest.raises(TracklinkError, match="unknown backend"):
        resolve_backend("m.onnx", "tflite")


def test_tensorrt_backend_needs_a_built_engine(osnet_onnx):
    with pytest.raises(TracklinkError, match="build one first"):
        open_embedder(osnet_onnx, backend="tensorrt")


# ---------------------------------------------------------------------------------------------- engine sidecar

SIDECAR = EngineSidecar(
    task="reid", input_name="images", output_name="embeddings", input_size=(256, 128), precision="fp16",
    tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7", source="osnet.onnx",
    source_sha256="0" * 64, profile={"min": [1, 3, 256, 128], "opt": [16, 3, 256, 128], "max": [64, 3, 256, 128]},
    meta={"arch": "osnet_x0_25", "input_size": [256, 128], "embedding_dim": 512})


def test_engine_without_sidecar_is_refused(tmp_path):
    engine = tmp_path / "osnet.engine"
    engine.write_bytes(b"not checked before the sidecar")
    with pytest.raises(TracklinkError, match="has no sidecar osnet.engine.json"):
        open_embedder(engine)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="TensorRT is installed: this checks the message on machines without it")
def test_engine_without_tensorrt_says_how_to_install(tmp_path, osnet_onnx, capsys):
    engine = tmp_path / "osnet.engine"
    engine.write_bytes(b"plan")
    sidecar_path(engine).write_text(SIDECAR.to_json())
    with pytest.raises(TracklinkError, match=r"install tracklink\[tensorrt\] on a machine with an NVIDIA GPU"):
        open_embedder(engine)
    assert main(["export", "--model", str(osnet_onnx), "--format", "engine", "--out", str(tmp_path / "x.engine")]) == 2
    assert "TensorRT is not installed" in capsys.readouterr().err


def test_sidecar_round_trip(tmp_path):
    engine = tmp_path / "osnet.engine"
    sidecar_path(engine).write_text(SIDECAR.to_json())
    loaded = read_sidecar(engine)
    assert loaded == SIDECAR and loaded.max_batch == 64 and loaded.model_meta.input_size == (256, 128)
    sidecar_path(engine).write_text("{}")
    with pytest.raises(TracklinkError, match="not a valid engine sidecar"):
        read_sidecar(engine)


def test_sidecar_check_refuses_other_tensorrt_or_gpu():
    check_sidecar(SIDECAR, tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7")
    with pytest.raises(TracklinkError, match=r"TensorRT 10\.3\.0 built it, this machine runs TensorRT 10\.7\.0"):
        check_sidecar(SIDECAR, tensorrt_version="10.7.0", gpu_name="Orin", compute_capability="8.7")
    with pytest.raises(TracklinkError, match=r"built for Orin \(compute 8\.7\), this GPU is NVIDIA H100.*rebuild"):
        check_sidecar(SIDECAR, tensorrt_version="10.3.0", gpu_name="NVIDIA H100", compute_capability="9.0")
    with pytest.raises(TracklinkError, match="compute 8.6"):
        check_sidecar(replace(SIDECAR, compute_capability="8.6"), tensorrt_version="10.3.0", gpu_name="Orin",
                      compute_capability="8.7")


# ---------------------------------------------------------------------------------------------- bench

def test_round_robin_interleaves_and_rotates():
    order: list[str] = []
    times = round_robin({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, iters=3, warmup=1)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}


def test_bench_argument_parsing(osnet_onnx):
    specs = parse_backends("torch, ort=int8.onnx", osnet_onnx)
    assert [(s.label, s.backend, s.path.name) for s in specs] == [
        ("torch", "torch", osnet_onnx.name), ("onnxruntime(int8.onnx)", "onnxruntime", "int8.onnx")]
    assert parse_batches("1,8,32") == [1, 8, 32]
    with pytest.raises(TracklinkError, match="--batch"):
        parse_batches("0,8")


def test_bench_cli_json(osnet_onnx, yolox_onnx, capsys):
    rc = main(["bench", "--model", str(osnet_onnx), "--backends", "torch,onnxruntime", "--batch", "2",
               "--iters", "2", "--warmup", "0", "--detector", f"yolox:{yolox_onnx}", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["label"]: r for r in report["results"]}
    assert rows["torch"]["ratio_to_torch"] == pytest.approx(1.0)
    assert rows["onnxruntime"]["crops_per_s"] > 0 and rows["onnxruntime"]["ratio_to_torch"] > 0
    assert rows["onnxruntime"]["p95_ms"] >= rows["onnxruntime"]["p50_ms"]
    assert report["detector"]["input"] == [1, 3, 416, 416] and report["detector"]["frames_per_s"] > 0
