"""Cross-camera identity (MTMC IDF1) of `tracklink batch` on the semi-synthetic two-camera scene, seeds 0-9.

One scene is one or two linking decisions (about 0.06 IDF1 each), so a change to embedding or linking is
judged on the mean over ten scenes (tests/synthetic_mtmc.py builds them from the shared PKU-Reid people).
Extra arguments go to `tracklink batch`. Prints JSON.

    .venv/bin/python bench/mtmc_seeds.py                    # the defaults
    .venv/bin/python bench/mtmc_seeds.py --embed-every 1    # any batch flags
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO.parent / "shared" / "assets"
SEEDS = range(10)


def main(extra: list[str]) -> int:
    sys.path.insert(0, str(REPO / "tests"))
    from synthetic_mtmc import CAMERAS, build_scene

    if not (ASSETS / "reid" / "pku-reid-40").is_dir():
        raise SystemExit(f"{ASSETS} is missing the shared PKU-Reid people")
    scores = []
    with tempfile.TemporaryDirectory(prefix="tracklink-mtmc-") as tmp:
        for seed in SEEDS:
            scene = build_scene(ASSETS / "reid" / "pku-reid-40", Path(tmp) / f"s{seed}", seed=seed).root
            out = Path(tmp) / f"out{seed}"
            subprocess.run([sys.executable, "-m", "tracklink", "batch", *[str(scene / c) for c in CAMERAS],
                            "--detector", f"yolox:{ASSETS / 'models' / 'yolox_nano.onnx'}", "--reid",
                            str(ASSETS / "models" / "osnet_x0_25_msmt17.onnx"), "--out", str(out), "--no-progress",
                            "--threads", "1", *extra], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
            done = subprocess.run([sys.executable, "-m", "tracklink", "eval-mot", "--gt", str(scene), "--pred",
                                   str(out), "--multi-camera", "--json"], check=True, cwd=REPO, capture_output=True,
                                  text=True)
            scores.append(json.loads(done.stdout)["scores"]["MTMC"]["IDF1"])
    print(json.dumps({"flags": extra, "mtmc_idf1": [round(s, 4) for s in scores],
                      "mean": round(sum(scores) / len(scores), 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
