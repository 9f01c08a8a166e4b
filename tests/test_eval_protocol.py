"""Evaluation like the field: rank-1/5/10/20, the CMC plot and ranked-gallery sheets, k-reciprocal
re-ranking and flip test-time augmentation, each reported beside the plain protocol."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from tracklink.cli import main
from tracklink.data.embedding import FrameEmbeddings
from tracklink.train.flip import average_views, mirrored
from tracklink.train.metrics import cmc_map, cmc_map_from_scores
from tracklink.train.rerank import k_reciprocal_distance
from tracklink.train.visrank import BORDER, CELL, CORRECT, GAP, HEADER, WRONG


def _at(angles: list[float]) -> np.ndarray:
    return np.array([[math.cos(a), math.sin(a)] for a in angles], dtype=np.float32)


# The query (pid A, angle 0) has a hard negative n (pid B) nearest to it, but n's own nearest neighbours are
# the rest of B, so the query is not among them; A's gallery images sit a little farther away, in a tight
# group that has the query among its nearest neighbours: k-reciprocal neighbours of the query.
QUERY = _at([0.0])
GALLERY = _at([0.10, -0.12, -0.13, -0.14, -0.15, 0.14, 0.15, 0.16, 0.17])
G_PIDS = np.array(["B", "A", "A", "A", "A", "B", "B", "B", "B"])
G_CAMS = np.ones(len(GALLERY), dtype=int)


def test_rerank_lifts_the_k_reciprocal_matches_over_a_hard_negative() -> None:
    plain = np.argsort(-(GALLERY @ QUERY[0]), kind="stable")
    assert G_PIDS[plain[0]] == "B"  # by cosine, the hard negative comes first

    distance = k_reciprocal_distance(QUERY, GALLERY, k1=4, k2=1, lam=0.3)
    assert distance.shape == (1, len(GALLERY))
    reranked = np.argsort(distance[0], kind="stable")
    assert list(G_PIDS[reranked[:4]]) == ["A"] * 4  # every true match now ranks above every B
    assert distance[0, 0] > distance[0, 1]  # the hard negative was pushed behind A's nearest image

    before = cmc_map(QUERY, ["A"], [0], GALLERY, G_PIDS, G_CAMS)
    after = cmc_map_from_scores(-distance, ["A"], [0], G_PIDS, G_CAMS)
    assert before["rank1"] == 0.0 and after["rank1"] == 1.0
    assert after["mAP"] == pytest.approx(1.0) and before["mAP"] < 1.0


def test_rerank_with_lambda_one_is_the_original_cosine_distance() -> None:
    distance = k_reciprocal_distance(QUERY, GALLERY, k1=4, k2=1, lam=1.0)
    assert distance[0] == pytest.approx(1.0 - GALLERY @ QUERY[0], abs=1e-6)


def test_flip_averages_the_image_and_its_mirror() -> None:
    def column_profile(crops):  # a feature that tells left from right: mean intensity of each column
        return np.stack([c.mean(axis=(0, 2)) for c in crops]).astype(np.float32)

    ramp = np.tile(np.arange(4, dtype=np.uint8)[None, :, None] * 60, (3, 1, 3))  # dark left, bright right
    plain = FrameEmbeddings(column_profile([ramp]), np.array([0]), None)
    mirror = FrameEmbeddings(mirrored(column_profile)([ramp]), np.array([0]), None)
    assert mirror.feats[0] == pytest.approx(plain.feats[0][::-1])
    both = average_views(plain, mirror)
    unit = plain.feats[0] / np.linalg.norm(plain.feats[0])
    assert both.feats[0] == pytest.approx((unit + unit[::-1]) / 2)
    assert both.feats[0] == pytest.approx(both.feats[0][::-1])  # mirror-symmetric, as flip TTA intends


def _eval(model: Path, pku: Path, *extra: str, capsys) -> dict:
    assert main(["eval", "--model", str(model), "--data", f"folder:{pku}", "--ids", "1-6", "--json",
                 "--no-progress", *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_eval_reports_ranks_plots_and_extras_apart(osnet_onnx: Path, pku_dir: Path, tmp_path: Path, capsys) -> None:
    plots = tmp_path / "plots"
    plain = _eval(osnet_onnx, pku_dir, "--plots", str(plots), "--visrank", "5", "--visrank-queries", "3",
                  capsys=capsys)
    assert plain["rerank"] is False and plain["flip"] is False
    for level in ("image", "tracklet"):
        ranks = [plain[f"{level}_rank{r}"] for r in (1, 5, 10, 20)]
        assert ranks == sorted(ranks) and 0.0 < ranks[0] and ranks[-1] <= 1.0
        assert len(plain[f"{level}_cmc"]) == 20
    assert not any(k.startswith(("rerank_", "flip_")) for k in plain)

    cmc = cv2.imread(str(plots / "cmc.png"))
    assert cmc is not None and cmc.shape[0] > 200
    sheets = sorted((plots / "visrank").glob("*.png"))
    assert [str(p) for p in sheets] == plain["plots"]["visrank"] and len(sheets) == 3
    for sheet in sheets:
        image = cv2.imread(str(sheet))
        cell = CELL[0] + 2 * BORDER  # framed picture width; the query is followed by two gaps, the rest by one
        lefts = [cell + 2 * GAP + r * (cell + GAP) for r in range(5)]
        assert image.shape[1] == lefts[-1] + cell + GAP  # the query and exactly its top 5
        marks = [tuple(int(v) for v in image[HEADER + 1, x + 1]) for x in lefts]
        assert all(m in (CORRECT, WRONG) for m in marks), marks
        assert CORRECT in marks  # PKU ids 1-6 with OSNet: the right person is in every top 5

    extras = _eval(osnet_onnx, pku_dir, "--rerank", "--flip", capsys=capsys)
    assert extras["rerank"] == {"k1": 20, "k2": 6, "lambda": 0.3} and extras["flip"] is True
    for key in ("image_rank1", "image_mAP", "tracklet_rank1", "tracklet_mAP"):
        assert extras[key] == pytest.approx(plain[key])  # the plain protocol never changes
        for prefix in ("rerank_", "flip_", "flip_rerank_"):
            assert 0.0 <= extras[prefix + key] <= 1.0
    assert extras["flip_image_mAP"] != extras["image_mAP"]  # the mirror did change the features


def test_visrank_needs_plots(osnet_onnx: Path, pku_dir: Path, capsys) -> None:
    assert main(["eval", "--model", str(osnet_onnx), "--data", f"folder:{pku_dir}", "--visrank", "5"]) == 2
    assert "--plots" in capsys.readouterr().err
