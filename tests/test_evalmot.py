"""eval-mot on MOT17-mini ground truth: perfect and damaged predictions, and MTMC IDF1 across cameras."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tracklink import TracklinkError
from tracklink.app.evalmot import evaluate
from tracklink.cli import main

SEQS = ("MOT17-05-FRCNN", "MOT17-09-FRCNN")


def load_gt(mot17_dir: Path, seq: str) -> np.ndarray:
    return np.loadtxt(mot17_dir / seq / "gt" / "gt.txt", delimiter=",", ndmin=2)


def pedestrians(gt: np.ndarray) -> np.ndarray:
    return gt[(gt[:, 6] == 1) & (gt[:, 7] == 1)]


def as_pred(rows: np.ndarray) -> str:
    return "".join(f"{int(r[0])},{int(r[1])},{r[2]:.2f},{r[3]:.2f},{r[4]:.2f},{r[5]:.2f},1,-1,-1,-1\n" for r in rows)


def far_apart_pair(gt: np.ndarray) -> tuple[float, float]:
    """Two people seen in every frame whose boxes never touch (MOT17 has near-duplicate boxes, which CLEAR
    would keep matched through a swap)."""
    frames = np.unique(gt[:, 0])
    ids = [i for i in np.unique(gt[:, 1]) if len(np.unique(gt[gt[:, 1] == i, 0])) == len(frames)]

    def apart(i, j):
        for f in frames:
            (x1, y1, w1, h1), (x2, y2, w2, h2) = (gt[(gt[:, 0] == f) & (gt[:, 1] == k), 2:6][0] for k in (i, j))
            if x1 < x2 + w2 and x2 < x1 + w1 and y1 < y2 + h2 and y2 < y1 + h1:
                return False
        return True

    return next((i, j) for i in ids for j in ids if i < j and apart(i, j))


def test_perfect_and_damaged_predictions(tmp_path: Path, mot17_dir: Path):
    gt = pedestrians(load_gt(mot17_dir, "MOT17-05-FRCNN"))
    (tmp_path / "MOT17-05-FRCNN.txt").write_text(as_pred(gt))
    result = evaluate(mot17_dir, tmp_path)
    assert result["sequences"] == ["MOT17-05-FRCNN"] and "MOT17-09-FRCNN" in result["missing"]
    perfect = result["scores"]["MOT17-05-FRCNN"]
    assert perfect["MOTA"] == pytest.approx(1) and perfect["IDF1"] == pytest.approx(1)
    assert perfect["HOTA"] == pytest.approx(1) and perfect["IDSW"] == 0 and perfect["FP"] == perfect["FN"] == 0

    # Swap two people's ids from frame 3 on: two identity switches, IDF1 drops, detection is untouched.
    a, b = far_apart_pair(gt)
    swapped = gt.copy()
    late = swapped[:, 0] >= 3
    swapped[late & (gt[:, 1] == a), 1], swapped[late & (gt[:, 1] == b), 1] = b, a
    # and drop a third of one frame's boxes: misses
    first = np.flatnonzero(gt[:, 0] == 1)
    dropped = np.delete(swapped, first[: len(first) // 3], axis=0)
    (tmp_path / "MOT17-05-FRCNN.txt").write_text(as_pred(dropped))
    damaged = evaluate(mot17_dir / "MOT17-05-FRCNN", tmp_path / "MOT17-05-FRCNN.txt")["scores"]["MOT17-05-FRCNN"]
    assert damaged["IDSW"] == 2 and damaged["FN"] == len(first) // 3 and damaged["FP"] == 0
    assert damaged["IDF1"] < 1 and damaged["MOTA"] == pytest.approx(1 - (2 + len(first) // 3) / len(gt))
    assert damaged["HOTA"] < 1


def test_multi_camera_idf1_sees_cross_camera_identity(tmp_path: Path, mot17_dir: Path, capsys):
    """Two cameras whose ground truth shares global ids. Predictions that are perfect within each camera
    but give the shared people different ids in camera B score IDF1 1 per camera and < 1 across cameras."""
    gt_dir, right, wrong = tmp_path / "gt", tmp_path / "right", tmp_path / "wrong"
    a = pedestrians(load_gt(mot17_dir, SEQS[0]))
    b = pedestrians(load_gt(mot17_dir, SEQS[1]))
    ids_a, ids_b = np.unique(a[:, 1]), np.unique(b[:, 1])
    shared = min(len(ids_a), len(ids_b), 3)
    # camera B's first `shared` people are camera A's first ones; the others get ids no one else has
    remap = {old: (ids_a[i] if i < shared else 1000 + old) for i, old in enumerate(ids_b)}
    b[:, 1] = [remap[v] for v in b[:, 1]]
    for cam, rows in (("camA", a), ("camB", b)):
        (gt_dir / cam / "gt").mkdir(parents=True)
        np.savetxt(gt_dir / cam / "gt" / "gt.txt", rows[:, :9], delimiter=",", fmt="%g")
    for d in (right, wrong):
        d.mkdir()
    for cam, rows in (("camA", a), ("camB", b)):
        (right / f"{cam}.global.txt").write_text(as_pred(rows))
        (wrong / f"{cam}.txt").write_text(as_pred(rows))
        broken = rows.copy()
        if cam == "camB":
            broken[:, 1] += 5000  # the tracker linked nobody across cameras
        (wrong / f"{cam}.global.txt").write_text(as_pred(broken))

    assert evaluate(gt_dir, right, multi_camera=True)["scores"]["MTMC"]["IDF1"] == pytest.approx(1)
    mtmc = evaluate(gt_dir, wrong, multi_camera=True)
    assert mtmc["scores"]["MTMC"]["IDF1"] < 1
    assert mtmc["frame_offsets"] == {"camA": 0, "camB": int(a[:, 0].max())}
    per_camera = evaluate(gt_dir, wrong)["scores"]
    assert per_camera["camA"]["IDF1"] == pytest.approx(1) and per_camera["camB"]["IDF1"] == pytest.approx(1)
    # IDF1's best one-to-one id matching keeps, for each shared person, the camera where they have more
    # boxes; the boxes in the other camera lose their identity match.
    lost = sum(min((a[:, 1] == g).sum(), (b[:, 1] == g).sum()) for g in ids_a[:shared])
    both = len(a) + len(b)
    idtp = both - lost
    assert mtmc["scores"]["MTMC"]["IDF1"] == pytest.approx(2 * idtp / (2 * both))

    assert main(["eval-mot", "--gt", str(gt_dir), "--pred", str(wrong), "--multi-camera", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["scores"]["MTMC"]["IDF1"] == pytest.approx(mtmc["scores"]["MTMC"]["IDF1"])


def test_inputs_that_cannot_be_scored(tmp_path: Path, mot17_dir: Path, capsys):
    with pytest.raises(TracklinkError, match="no predictions"):
        evaluate(mot17_dir, tmp_path)
    (tmp_path / "MOT17-05-FRCNN.txt").write_text("1,1,a,b\n")
    assert main(["eval-mot", "--gt", str(mot17_dir), "--pred", str(tmp_path)]) == 2
    assert "MOT17-05-FRCNN.txt:1" in capsys.readouterr().err
