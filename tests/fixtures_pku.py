"""Open-world linking data from the shared PKU-Reid ids (issue 4, acceptance item 2).

Each (person, camera) becomes two tracklets, orientations 1-4 and 5-8. Every 4th identity of the sorted
list is kept in one camera only (alternately dropping camera 02 and 01), so some people have nobody to be
linked to. The split depends only on a person's position in the full sorted list, so a subset of ids gets
the same treatment as in the full build.

Two layouts of the same split:
- "crops": DST/<camera>/<tracklet>/<orientation>.png, what `tracklink match` reads. Tracklet folders get
  opaque names (a seeded shuffle per camera), so nothing but appearance tells who is who;
- "folder": DST/<pid>/<camera>_t<1|2>_<orientation>.png, a labelled `folder:` dataset for `tracklink calibrate`.

Also importable by bench/linking_pku.py (it puts tests/ on sys.path).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

CAMERAS = ("01", "02")
HALVES = ((1, 2, 3, 4), (5, 6, 7, 8))  # orientations of tracklet 1 and tracklet 2
CALIBRATION_IDS = "1-20"  # 1-based ranges over the sorted PKU ids, as `--ids` reads them
TEST_IDS = "21-40"


def pku_ids(src: Path) -> list[str]:
    return sorted(p.name for p in Path(src).iterdir() if p.is_dir())


def select(src: Path, spec: str) -> list[str]:
    """'A-B' (1-based, inclusive) over the sorted ids."""
    a, b = map(int, re.fullmatch(r"(\d+)-(\d+)", spec).groups())
    return pku_ids(src)[a - 1:b]


def cameras_of(position: int, single_camera_every: int = 4) -> tuple[str, ...]:
    """Cameras kept for the person at `position` (0-based) in the sorted id list."""
    if position % single_camera_every != single_camera_every - 1:
        return CAMERAS
    return ("01",) if (position // single_camera_every) % 2 == 0 else ("02",)


def build_pku_open_world(src: Path, dst: Path, ids: Sequence[str] | None = None, layout: str = "crops",
                         single_camera_every: int = 4, seed: int = 0) -> dict[str, str]:
    """Write the split of `ids` (default: all) under `dst`; returns {tracklet key: pid}.

    Keys are "<camera>/<tracklet>" for "crops" (as `tracklink match` writes them) and
    "<pid>/<camera>/t<1|2>" for "folder" (as the folder dataset names its tracklets).
    """
    src, dst = Path(src), Path(dst)
    everyone = pku_ids(src)
    wanted = everyone if ids is None else list(ids)
    unknown = set(wanted) - set(everyone)
    if unknown:
        raise ValueError(f"ids {sorted(unknown)} are not in {src}")
    tracklets = [(pid, cam, half) for pos, pid in enumerate(everyone) if pid in wanted
                 for cam in cameras_of(pos, single_camera_every) for half in range(len(HALVES))]
    labels: dict[str, str] = {}
    rng = np.random.default_rng(seed)
    for cam in CAMERAS:
        in_cam = [t for t in tracklets if t[1] == cam]
        names = [f"t{i + 1:03d}" for i in rng.permutation(len(in_cam))]
        for (pid, _, half), name in zip(in_cam, names):
            for k in HALVES[half]:
                if layout == "crops":
                    out, key = dst / cam / name / f"{k}.png", f"{cam}/{name}"
                elif layout == "folder":
                    out, key = dst / pid / f"{cam}_t{half + 1}_{k}.png", f"{pid}/{cam}/t{half + 1}"
                else:
                    raise ValueError(f"unknown layout {layout!r}; expected 'crops' or 'folder'")
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / pid / f"{cam}_{k}.png", out)
                labels[key] = pid
    return labels


def pairwise_scores(predicted: dict[str, int], truth: dict[str, str], cross_camera_only: bool = False) -> dict:
    """Pairwise precision/recall/F1 over tracklet pairs ("<camera>/..." keys when cross_camera_only)."""
    keys = sorted(truth)
    if set(predicted) != set(keys):
        raise ValueError(f"prediction covers {len(predicted)} tracklets, truth {len(keys)}")
    pred = np.array([predicted[k] for k in keys])
    true = np.unique([truth[k] for k in keys], return_inverse=True)[1]
    same_pred = pred[:, None] == pred[None, :]
    same_true = true[:, None] == true[None, :]
    mask = np.triu(np.ones((len(keys), len(keys)), dtype=bool), 1)
    if cross_camera_only:
        cams = np.array([k.split("/", 1)[0] for k in keys])
        mask &= cams[:, None] != cams[None, :]
    tp = int((same_pred & same_true & mask).sum())
    npred, ntrue = int((same_pred & mask).sum()), int((same_true & mask).sum())
    precision = tp / npred if npred else 1.0
    recall = tp / ntrue if ntrue else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_pairs": ntrue, "predicted_pairs": npred}


@pytest.fixture(scope="session")
def pku_open_world(pku_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Calibration ids 1-20 as a labelled folder dataset, test ids 21-40 as crops, with their labels."""
    root = tmp_path_factory.mktemp("pku_open_world")
    calib_labels = build_pku_open_world(pku_dir, root / "calibration", select(pku_dir, CALIBRATION_IDS), layout="folder")
    test_labels = build_pku_open_world(pku_dir, root / "test", select(pku_dir, TEST_IDS), layout="crops")
    return {"calibration": root / "calibration", "calibration_labels": calib_labels,
            "test": root / "test", "test_labels": test_labels}
