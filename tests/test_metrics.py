"""Cross-camera CMC/mAP on rankings small enough to check by hand, and the test-time tracklet pooling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tracklink import TracklinkError
from tracklink.models.pooling import pool_by_tracklet
from tracklink.train.metrics import cmc_map


def _at(angles: list[float], radii: list[float] | None = None) -> np.ndarray:
    """2-D features at the given angles (radians): cosine similarity falls as the angle gap grows."""
    radii = radii or [1.0] * len(angles)
    return np.array([[r * math.cos(a), r * math.sin(a)] for a, r in zip(angles, radii)], dtype=np.float32)


# Gallery along one arc, scaled arbitrarily (cosine must ignore the scale).
GALLERY = _at([0.0, 0.1, 0.2, 0.3, 0.4], [5.0, 0.3, 2.0, 1.0, 7.0])
G_PIDS = np.array([1, 2, 1, 3, 1])
G_CAMS = np.array([0, 1, 1, 1, 1])


def test_hand_ranking() -> None:
    # q0 (pid 1, cam 0, angle 0): g0 is its own camera and is dropped; the rest ranks g1 x, g2 v, g3 x,
    #   g4 v -> first hit at rank 2, AP = (1/2 + 2/4) / 2 = 0.5.
    # q1 (pid 2, cam 1): its only match g1 is in camera 1 -> no valid positive, skipped.
    # q2 (pid 3, cam 0, angle 0.3): g3 is the nearest -> rank 1, AP = 1.
    query = _at([0.0, 0.1, 0.3], [1.0, 4.0, 0.5])
    result = cmc_map(query, [1, 2, 3], [0, 1, 0], GALLERY, G_PIDS, G_CAMS)
    assert result["num_valid_queries"] == 2
    assert result["rank1"] == pytest.approx(0.5)
    assert result["rank5"] == pytest.approx(1.0)
    assert result["rank10"] == pytest.approx(1.0)
    assert result["mAP"] == pytest.approx(0.75)
    assert result["cmc"][:3] == pytest.approx([0.5, 1.0, 1.0])
    assert len(result["cmc"]) == 20
    assert all(isinstance(result[k], float) for k in ("rank1", "rank5", "rank10", "mAP"))


def test_same_camera_gallery_is_never_counted() -> None:
    # Put q0 in camera 1 instead: now g0 (camera 0, same pid, most similar) counts and g1..g4 do not.
    result = cmc_map(_at([0.0]), [1], [1], GALLERY, G_PIDS, G_CAMS)
    assert result["rank1"] == 1.0 and result["mAP"] == pytest.approx(1.0)
    # In camera 2, everything counts: hits at ranks 1, 3, 5 -> AP = (1 + 2/3 + 3/5) / 3.
    result = cmc_map(_at([0.0]), [1], [2], GALLERY, G_PIDS, G_CAMS)
    assert result["mAP"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


@pytest.mark.parametrize("same_set", [False, True])
def test_query_set_equals_gallery_set(same_set: bool) -> None:
    # A/B are pid 1 in cameras 0/1, C/D are pid 2 in cameras 0/1.
    # A (0.0): cross-camera B (0.5), D (0.2) -> D, B: hit at rank 2.  B (0.5): A, C (0.3) -> C, A: rank 2.
    # C (0.3): B, D (0.2) -> D first: rank 1.                         D (0.2): A, C -> C first: rank 1.
    feats = _at([0.0, 0.5, 0.3, 0.2])
    pids, cams = [1, 1, 2, 2], [0, 1, 0, 1]
    result = cmc_map(feats, pids, cams, feats, pids, cams, same_set=same_set)
    assert result["num_valid_queries"] == 4
    assert result["rank1"] == pytest.approx(0.5)
    assert result["rank5"] == pytest.approx(1.0)
    assert result["mAP"] == pytest.approx(0.75)


def test_no_valid_query_is_an_error() -> None:
    feats = _at([0.0, 0.5])
    with pytest.raises(TracklinkError, match="camera"):
        cmc_map(feats, [1, 2], [0, 0], feats, [1, 2], [0, 0])


def test_bad_shapes() -> None:
    feats = _at([0.0, 0.5])
    with pytest.raises(ValueError, match="length"):
        cmc_map(feats, [1], [0, 1], feats, [1, 2], [0, 1])
    with pytest.raises(ValueError, match="same_set"):
        cmc_map(feats[:1], [1], [0], feats, [1, 2], [0, 1], same_set=True)


def _loop_reference(q, qp, qc, g, gp, gc):
    """One query at a time, straight from the definitions."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    first_hits, aps = [], []
    for i in range(len(q)):
        keep = [j for j in range(len(g)) if gc[j] != qc[i]]
        ranked = sorted(keep, key=lambda j: -float(q[i] @ g[j]))
        good = [rank for rank, j in enumerate(ranked, start=1) if gp[j] == qp[i]]
        if not good:
            continue
        first_hits.append(good[0])
        aps.append(sum((k + 1) / rank for k, rank in enumerate(good)) / len(good))
    return {
        "rank1": float(np.mean([r <= 1 for r in first_hits])),
        "rank5": float(np.mean([r <= 5 for r in first_hits])),
        "mAP": float(np.mean(aps)),
        "num_valid_queries": len(aps),
    }


@pytest.mark.parametrize("chunk_size", [1, 7, 256])
def test_matches_loop_reference_on_random_data(chunk_size: int) -> None:
    rng = np.random.default_rng(0)
    g = rng.normal(size=(60, 8))
    gp, gc = rng.integers(0, 12, 60), rng.integers(0, 3, 60)
    q = rng.normal(size=(25, 8))
    qp, qc = rng.integers(0, 14, 25), rng.integers(0, 3, 25)  # pids 12, 13 never appear in the gallery
    want = _loop_reference(q, qp, qc, g, gp, gc)
    got = cmc_map(q, qp, qc, g, gp, gc, chunk_size=chunk_size)
    assert got["num_valid_queries"] == want["num_valid_queries"] < 25
    for key in ("rank1", "rank5", "mAP"):
        assert got[key] == pytest.approx(want[key], rel=1e-6)


def test_accepts_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    query = torch.from_numpy(_at([0.0, 0.3])).requires_grad_(True)
    result = cmc_map(query, torch.tensor([1, 3]), torch.tensor([0, 0]), torch.from_numpy(GALLERY),
                     torch.from_numpy(G_PIDS), torch.from_numpy(G_CAMS))
    assert result["rank1"] == pytest.approx(0.5) and result["mAP"] == pytest.approx(0.75)


def test_pool_by_tracklet_normalises_frames_first() -> None:
    feats = np.array([[2.0, 0.0], [0.0, 3.0], [0.0, 5.0], [4.0, 0.0], [-1.0, 1.0]])
    pooled, ids = pool_by_tracklet(feats, [5, 9, 9, 5, 7])
    assert list(ids) == [5, 7, 9]
    # 5: (1,0) and (1,0) -> (1,0); 7: one frame; 9: (0,1) twice -> (0,1).
    np.testing.assert_allclose(pooled, [[1, 0], [-math.sqrt(0.5), math.sqrt(0.5)], [0, 1]], atol=1e-6)

    # Frames of very different norms weigh the same: (2,0) and (0,5) pool to the diagonal.
    pooled, ids = pool_by_tracklet(np.array([[2.0, 0.0], [0.0, 5.0]]), ["a", "a"])
    assert list(ids) == ["a"]
    np.testing.assert_allclose(pooled, [[math.sqrt(0.5), math.sqrt(0.5)]], atol=1e-6)
    assert pooled.dtype == np.float32


def test_pool_by_tracklet_length_mismatch() -> None:
    with pytest.raises(ValueError, match="tracklet ids"):
        pool_by_tracklet(np.ones((3, 2)), [1, 2])
