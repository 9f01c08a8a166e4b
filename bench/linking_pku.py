"""Open-world cross-camera linking on the shared PKU ids (issue 4, acceptance item 2). Prints one JSON object.

Data (tests/fixtures_pku.py): each (person, camera) is split into two tracklets, orientations 1-4 and 5-8,
and every 4th person is kept in one camera only, so some people have nobody to be linked to.

Protocol, so that the number is honest: the link threshold is calibrated on ids 1-20
(`tracklink calibrate --write`, cross-camera pairs) and `tracklink match` runs on ids 21-40, people the
calibration never saw. Scores are pairwise precision/recall/F1 over tracklet pairs: all pairs (the two
halves of one person in one camera count too) and cross-camera pairs only. Rows:
- ours_batch / ours_online: `tracklink match` at the calibrated threshold;
- ours_oracle: our batch linking at the best threshold for ids 21-40 (an upper bound, not a result);
- baseline_oracle: mean-pooled embeddings + scipy average linkage (no constraints, no camera centring)
  at the best threshold for ids 21-40: the issue's baseline, optimistic by construction;
- baseline_calibrated: the same baseline with its threshold chosen on ids 1-20, as ours is.

    .venv/bin/python bench/linking_pku.py [--assets ../shared/assets] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the split builder is a test fixture

from fixtures_pku import CALIBRATION_IDS, TEST_IDS, build_pku_open_world, pairwise_scores, select  # noqa: E402

from tracklink.app.link import calibrate_threshold  # noqa: E402
from tracklink.app.match import read_crop_layout  # noqa: E402
from tracklink.app.session import crop_tracklets  # noqa: E402
from cli_json import cli_json  # noqa: E402


def scores(predicted: dict[str, int], truth: dict[str, str]) -> dict:
    return {"all_pairs": pairwise_scores(predicted, truth), "cross_camera": pairwise_scores(predicted, truth, True)}


def features(embedder, root: Path) -> tuple[list[str], np.ndarray]:
    layout = read_crop_layout(root)
    tracklets = crop_tracklets(embedder, [(cam, frames) for cam, _, frames in layout], progress=False)
    return [f"{cam}/{name}" for cam, name, _ in layout], np.stack([t.feature for t in tracklets])


def baseline_sweep(keys: list[str], feats: np.ndarray, truth: dict[str, str], cross_camera_only: bool) -> tuple[float, dict]:
    """scipy average linkage, cut at every merge height: (best cosine threshold, its clustering)."""
    tree = linkage(feats, method="average", metric="cosine")
    best: tuple[float, float, dict] = (-1.0, 0.0, {})
    for height in np.concatenate([[0.0], np.unique(tree[:, 2])]):
        predicted = dict(zip(keys, (int(c) for c in fcluster(tree, height, criterion="distance"))))
        f1 = pairwise_scores(predicted, truth, cross_camera_only)["f1"]
        if f1 > best[0]:
            best = (f1, 1.0 - float(height), predicted)
    return best[1], best[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=REPO.parent / "shared" / "assets")
    parser.add_argument("--model", type=Path, default=None, help="default: the shared OSNet-x0.25 MSMT17 ONNX")
    args = parser.parse_args()
    pku = args.assets / "reid" / "pku-reid-40"
    source_model = args.model or args.assets / "models" / "osnet_x0_25_msmt17.onnx"
    for path in (pku, source_model):
        if not path.exists():
            raise SystemExit(f"{path} is missing: this benchmark needs the shared assets (--assets)")

    from tracklink.export.runtime import open_embedder

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="linking_pku_") as tmp:
        tmp = Path(tmp)
        model = tmp / source_model.name  # calibrate --write puts its sidecar here, not beside the shared file
        shutil.copyfile(source_model, model)
        cal_ids, test_ids = select(pku, CALIBRATION_IDS), select(pku, TEST_IDS)
        build_pku_open_world(pku, tmp / "cal_folder", cal_ids, layout="folder")
        cal_truth = build_pku_open_world(pku, tmp / "cal_crops", cal_ids, layout="crops")
        test_truth = build_pku_open_world(pku, tmp / "test", test_ids, layout="crops")

        calibration = cli_json(["calibrate", "--model", str(model), "--data", f"folder:{tmp / 'cal_folder'}",
                                "--write", "--no-progress"])
        result: dict = {"model": str(source_model), "calibration_ids": CALIBRATION_IDS, "test_ids": TEST_IDS,
                        "test_tracklets": len(test_truth), "test_people": len(set(test_truth.values())),
                        "calibration": {k: calibration[k] for k in ("threshold", "precision", "recall", "f1", "pairs")}}
        for mode in ("batch", "online"):
            out = tmp / f"{mode}.json"
            summary = cli_json(["match", "--data", str(tmp / "test"), "--model", str(model), "--out", str(out),
                                "--mode", mode, "--no-progress"])
            result[f"ours_{mode}"] = {"threshold": summary["threshold"], **scores(json.loads(out.read_text()), test_truth)}
            result["backend"] = summary["backend"]

        embedder = open_embedder(model)
        test_keys, test_feats = features(embedder, tmp / "test")
        labels = [test_truth[k] for k in test_keys]
        cams = [k.split("/", 1)[0] for k in test_keys]
        oracle = calibrate_threshold(test_feats, labels, cams, cross_camera_only=False)
        result["ours_oracle"] = {k: oracle[k] for k in ("threshold", "precision", "recall", "f1")}

        threshold, predicted = baseline_sweep(test_keys, test_feats, test_truth, cross_camera_only=False)
        result["baseline_oracle"] = {"threshold": round(threshold, 6), **scores(predicted, test_truth)}
        cal_keys, cal_feats = features(embedder, tmp / "cal_crops")
        cal_threshold, _ = baseline_sweep(cal_keys, cal_feats, cal_truth, cross_camera_only=True)
        tree = linkage(test_feats, method="average", metric="cosine")
        predicted = dict(zip(test_keys, (int(c) for c in fcluster(tree, 1.0 - cal_threshold, criterion="distance"))))
        result["baseline_calibrated"] = {"threshold": round(cal_threshold, 6), **scores(predicted, test_truth)}
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
