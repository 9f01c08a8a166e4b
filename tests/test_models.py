"""Backbones, checkpoints and weight import, including parity with ONNX Runtime on real crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tracklink import TracklinkError
from tracklink.models import build_model, list_backbones, load_checkpoint, save_checkpoint
from tracklink.models.checkpoint import ModelMeta
from tracklink.models.onnx_import import import_weights, reinflate_batchnorm
from tracklink.models.pooling import temporal_pool
from tracklink.models.preprocess import preprocess_crops, read_image


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("arch,params_m", [("osnet_x0_25", 0.20), ("osnet_x1_0", 2.2)])
def test_osnet_sizes_match_the_paper(arch: str, params_m: float) -> None:
    # torchreid reports 0.2M (x0.25) and 2.2M (x1.0) parameters without the classifier.
    model = build_model(arch)
    n = sum(p.numel() for p in model.backbone.parameters()) / 1e6
    assert n == pytest.approx(params_m, rel=0.15)
    out = model.eval()(torch.randn(2, 3, 256, 128))
    assert out.shape == (2, 512)


def test_resnet50_builds_without_download() -> None:
    model = build_model("resnet50", num_classes=5).eval()
    assert model(torch.randn(1, 3, 256, 128)).shape == (1, 2048)


def test_resnet50_imports_torchvision_weights(tmp_path: Path) -> None:
    """torchvision's layout (with its ImageNet fc) loads by name; the architecture is recognised."""
    import torchvision

    from tracklink.models.onnx_import import import_weights

    reference = torchvision.models.resnet50(weights=None).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, tmp_path / "r50.pth")
    model, meta = import_weights(tmp_path / "r50.pth")
    assert meta.arch == "resnet50"
    ours = model.backbone.state_dict()
    for key, value in reference.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(ours[key], value), key


def test_unknown_architecture_is_a_clear_error() -> None:
    with pytest.raises(TracklinkError, match="unknown architecture 'osnet_x9'.*osnet_x0_25"):
        build_model("osnet_x9")
    assert "resnet50" in list_backbones()


def test_checkpoint_round_trip_is_exact(tmp_path: Path) -> None:
    model = build_model("osnet_x0_25", num_classes=3).eval()
    meta = ModelMeta(arch="osnet_x0_25", classes=["a", "b", "c"], link_threshold=0.6)
    save_checkpoint(tmp_path / "m.pt", model, meta)
    loaded, loaded_meta = load_checkpoint(tmp_path / "m.pt")
    assert loaded_meta == meta
    x = torch.randn(2, 3, 256, 128)
    assert torch.equal(model(x), loaded(x))


def test_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(TracklinkError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(TracklinkError, match=str(bad)):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(TracklinkError, match="import-weights"):
        load_checkpoint(foreign)


def test_checkpoint_refuses_pickled_code(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    torch.save({"format": "tracklink", "meta": {"arch": "osnet_x0_25"}, "obj": Path("x")}, evil)
    with pytest.raises(TracklinkError, match="cannot read checkpoint"):
        load_checkpoint(evil)


def test_torchreid_state_dict_imports(tmp_path: Path) -> None:
    """A torchreid-style .pth (DataParallel prefix, classifier, wrapped state_dict) loads into our OSNet."""
    source = build_model("osnet_x0_25").eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in source.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    state = {f"module.{k}": v for k, v in source.backbone.state_dict().items()}
    state["module.classifier.weight"] = torch.zeros(4101, 512)
    torch.save({"state_dict": state, "epoch": 150}, tmp_path / "osnet.pth.tar")
    model, meta = import_weights(tmp_path / "osnet.pth.tar")
    assert meta.arch == "osnet_x0_25" and not meta.bn_folded
    x = torch.randn(2, 3, 256, 128)
    assert torch.allclose(source.backbone(x), model.backbone(x))


def test_caa_pooling_falls_back_to_mean_without_classifier() -> None:
    frames = torch.randn(2, 5, 8)
    assert torch.allclose(temporal_pool(frames, "caa"), temporal_pool(frames, "mean"))
    logits = torch.zeros(2, 5, 3)
    logits[:, 0, 1] = 10.0  # frame 0 confidently class 1: with label 1 it dominates the attention
    pooled = temporal_pool(frames, "caa", logits=logits, labels=torch.tensor([1, 1]))
    assert not torch.allclose(pooled, temporal_pool(frames, "mean"))


@pytest.fixture(scope="module")
def pku_crops(pku_dir: Path) -> list[np.ndarray]:
    return [read_image(p) for p in sorted(pku_dir.glob("*/*.png"))]


def test_onnx_import_matches_onnxruntime_on_every_real_crop(osnet_onnx: Path, pku_crops: list[np.ndarray]) -> None:
    import onnxruntime as ort

    model, meta = import_weights(osnet_onnx)
    assert meta.arch == "osnet_x0_25" and meta.bn_folded and meta.input_size == (256, 128)
    session = ort.InferenceSession(str(osnet_onnx), providers=["CPUExecutionProvider"])
    x = preprocess_crops(pku_crops, meta.input_size, meta.mean, meta.std)
    cos = []
    with torch.no_grad():
        for i in range(0, len(x), 64):
            ref = session.run(None, {"images": x[i:i + 64]})[0]
            ours = model(torch.from_numpy(x[i:i + 64])).numpy()
            cos.append(_cosine(ref, ours))
    cos = np.concatenate(cos)
    assert len(cos) == 640
    assert cos.min() >= 0.9999, f"worst crop cosine {cos.min():.6f}"


def test_bn_reinflation_keeps_the_eval_function(osnet_onnx: Path, pku_crops: list[np.ndarray]) -> None:
    model, meta = import_weights(osnet_onnx)
    x = torch.from_numpy(preprocess_crops(pku_crops[:48], meta.input_size, meta.mean, meta.std))
    with torch.no_grad():
        before = model(x).numpy()
        reinflate_batchnorm(model, [x[:24], x[24:]])
        after = model(x).numpy()
        model.train()
        train_mode = model.backbone(x).numpy()  # batch statistics now roughly equal the stored ones
    assert _cosine(before, after).min() >= 0.9999
    assert np.median(_cosine(model.eval().backbone(x).detach().numpy(), train_mode)) > 0.9


def test_import_rejects_non_osnet_onnx(yolox_onnx: Path) -> None:
    with pytest.raises(TracklinkError, match="OSNet"):
        import_weights(yolox_onnx)


def test_import_weights_keeps_the_published_link_threshold(osnet_onnx: Path, tmp_path: Path, capsys) -> None:
    from tracklink.models.weights import CATALOGUE
    from tracklink.cli import main

    assert main(["import-weights", str(osnet_onnx), "--out", str(tmp_path / "m.pt")]) == 0
    _, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta.link_threshold == CATALOGUE["osnet_x0_25_msmt17"].link_threshold
    other = tmp_path / "other.onnx"
    import onnx

    proto = onnx.load(str(osnet_onnx))
    proto.producer_name = "someone else"  # same weights, not the published file: no threshold is assumed
    onnx.save(proto, str(other))
    assert main(["import-weights", str(other), "--out", str(tmp_path / "o.pt")]) == 0
    assert load_checkpoint(tmp_path / "o.pt")[1].link_threshold is None
