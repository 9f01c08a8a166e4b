"""The session layer's shared pieces: transit windows from YAML, tracklet pooling rules, and the flags that
choose them in `tracklink batch`, end to end on real footage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tracklink import TracklinkError
from tracklink.app.link import LinkConfig, cluster_tracklets, load_transit
from tracklink.app.records import Track, Tracklet
from tracklink.cli import main
from tracklink.models.pooling import accumulate, direction, pool_by_tracklet


def test_transit_yaml_reads_windows_and_names_a_bad_entry(tmp_path: Path) -> None:
    good = tmp_path / "transit.yaml"
    good.write_text("- {from: lobby, to: door, min_s: 5, max_s: 60, both: true}\n"
                    "- {from: door, to: yard, min_s: 20, max_s: 300}\n")
    assert load_transit(good) == {("lobby", "door"): (5.0, 60.0), ("door", "lobby"): (5.0, 60.0),
                                  ("door", "yard"): (20.0, 300.0)}
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {from: lobby, to: door, min_s: 5}\n")
    with pytest.raises(TracklinkError, match="entry 1 needs from, to, min_s and max_s"):
        load_transit(bad)
    backwards = tmp_path / "backwards.yaml"
    backwards.write_text("- {from: lobby, to: door, min_s: 60, max_s: 5}\n")
    with pytest.raises(TracklinkError, match="min_s <= max_s"):
        load_transit(backwards)


def _tracklet(camera: str, track_id: int, start: float, end: float, feature: np.ndarray) -> Tracklet:
    return Tracklet(camera, track_id, 1, 10, start, end, feature_sum=feature.astype(np.float32) * 5, num_embeddings=5)


def test_transit_window_keeps_apart_what_appearance_would_join(tmp_path: Path) -> None:
    """One look-alike pair: joined without windows, kept apart when the gap is outside the lobby->door window."""
    rng = np.random.default_rng(0)
    person, other = rng.standard_normal(64), rng.standard_normal(64)
    tracklets = [_tracklet("lobby", 1, 0.0, 10.0, person), _tracklet("door", 1, 500.0, 510.0, person + 0.05),
                 _tracklet("lobby", 2, 0.0, 10.0, other), _tracklet("door", 2, 20.0, 30.0, other + 0.05)]
    free = cluster_tracklets(tracklets, LinkConfig(threshold=0.3, camera_prior=None))
    assert free["lobby/1"] == free["door/1"] and free["lobby/2"] == free["door/2"]
    (tmp_path / "t.yaml").write_text("- {from: lobby, to: door, min_s: 5, max_s: 60}\n")
    windowed = cluster_tracklets(tracklets, LinkConfig(threshold=0.3, camera_prior=None,
                                                       transit=load_transit(tmp_path / "t.yaml")))
    assert windowed["lobby/1"] != windowed["door/1"]  # 490 s apart: not reachable in the window
    assert windowed["lobby/2"] == windowed["door/2"]  # 10 s apart: reachable


@pytest.mark.parametrize("method", ["mean", "max", "caa"])
def test_streaming_pooling_equals_pooling_at_once(method: str) -> None:
    rng = np.random.default_rng(1)
    frames = rng.standard_normal((7, 16)).astype(np.float32)
    frames /= np.linalg.norm(frames, axis=1, keepdims=True)
    attention = rng.uniform(0.1, 1.0, 7).astype(np.float32)
    tracklet = Tracklet.start(Track("cam", 1, 0.0, 3, np.zeros(4), 0.9, frames[0], float(attention[0])), method)
    for i in range(1, 7):
        tracklet.add(Track("cam", i + 1, i / 30, 3, np.zeros(4), 0.9, frames[i], float(attention[i])))
    at_once, _ = pool_by_tracklet(frames, np.zeros(7), method, attention if method == "caa" else None)
    np.testing.assert_allclose(tracklet.feature, at_once[0], rtol=1e-5, atol=1e-6)
    assert tracklet.num_embeddings == 7


def test_pooling_rules_differ_as_documented() -> None:
    frames = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], np.float32)
    np.testing.assert_allclose(direction(accumulate(None, frames, "mean")), np.array([1, 2]) / np.sqrt(5), rtol=1e-6)
    np.testing.assert_allclose(direction(accumulate(None, frames, "max")), np.array([1, 1]) / np.sqrt(2), rtol=1e-6)
    weights = np.array([4.0, 1.0, 1.0], np.float32)  # an attentive first frame outweighs two others
    np.testing.assert_allclose(direction(accumulate(None, frames, "caa", weights)), np.array([2, 1]) / np.sqrt(5),
                               rtol=1e-6)


@pytest.mark.assets
def test_batch_takes_pooling_and_transit_flags(tmp_path: Path, mot17_dir: Path, yolox_onnx: Path,
                                               osnet_onnx: Path, capsys) -> None:
    transit = tmp_path / "transit.yaml"
    transit.write_text("- {from: MOT17-05-FRCNN, to: MOT17-09-FRCNN, min_s: 0, max_s: 30, both: true}\n")
    seqs = [str(mot17_dir / s) for s in ("MOT17-05-FRCNN", "MOT17-09-FRCNN")]
    models = ["--detector", f"yolox:{yolox_onnx}", "--reid", str(osnet_onnx), "--no-progress"]
    out = tmp_path / "out"
    assert main(["batch", *seqs, *models, "--out", str(out), "--pooling", "max", "--transit", str(transit)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pooling"] == "max" and summary["transit"] == str(transit)
    assert summary["tracklets"] > 0

    # CAA pooling needs a classifier, which an ONNX file does not carry: refused before any video opens.
    assert main(["batch", *seqs, *models, "--out", str(tmp_path / "caa"), "--pooling", "caa"]) == 2
    assert "--pooling caa" in capsys.readouterr().err
    assert not (tmp_path / "caa" / "summary.json").exists()
