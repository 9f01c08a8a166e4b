"""Viewer responsiveness on this machine: UI frame rate, pipeline fps and event-loop latency under load.

Two 640x480 cameras are cut from the shared MOT17-mini sequences (centre-cropped to 4:3, played forth and
back to the wanted length) and shown in the real viewer window with the shared YOLOX-nano and OSNet-x0.25.
While the pipeline runs, a 5 ms precise QTimer on the UI thread records how late each tick fires: that
lateness is the stall a user would feel. Runs offscreen unless a display is set (e.g. under xvfb-run).

    .venv/bin/python bench/viewer_responsiveness.py [--frames 150] [--seconds 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("TRACKLINK_ASSETS", REPO.parent / "shared" / "assets"))
SIZE = (640, 480)
sys.path.insert(0, str(REPO / "tests"))  # the test videos are cut by a test fixture

from fixtures_video import write_camera  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150, help="frames per camera video")
    parser.add_argument("--seconds", type=float, default=90.0, help="stop after this long even if not done")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    if not (ASSETS / "mot" / "MOT17-mini").is_dir():
        print(f"shared assets not found at {ASSETS}", file=sys.stderr)
        return 2
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PyQt6.QtCore import QSettings, QTimer
    from PyQt6.QtWidgets import QApplication

    from tracklink.app.viewer.settings import ViewerOptions, ViewerSettings
    from tracklink.app.viewer.window import MainWindow

    tmp = Path(tempfile.mkdtemp(prefix="tracklink-viewer-bench-"))
    mot = ASSETS / "mot" / "MOT17-mini"
    sources = [write_camera(mot / "MOT17-05-FRCNN", tmp / "street.avi", args.frames),
               write_camera(mot / "MOT17-04-FRCNN", tmp / "square.avi", args.frames)]
    app = QApplication.instance() or QApplication([sys.argv[0]])
    settings = ViewerSettings(QSettings(str(tmp / "viewer.ini"), QSettings.Format.IniFormat))
    options = ViewerOptions(sources=[str(s) for s in sources], db=str(tmp / "tracklink.db"),
                            detector=f"yolox:{ASSETS / 'models' / 'yolox_nano.onnx'}",
                            reid=str(ASSETS / "models" / "osnet_x0_25_msmt17.onnx"))
    window = MainWindow(options, settings, probe_interval_ms=5)
    window.probe.window_s = 1e9  # keep every sample
    window.show()

    marks: dict[str, float] = {}
    result: dict = {}

    def measure() -> dict:
        """Read the numbers while the window and its worker still exist."""
        lags = [s[1] for s in window.probe.samples]
        worker = window.worker
        stats = worker.pipeline.stats
        busy = sum(stats.seconds.values())
        wall = marks["last"] - marks["first"]
        return {
            "platform": os.environ.get("QT_QPA_PLATFORM") or ("xcb" if os.environ.get("DISPLAY") else "offscreen"),
            "cameras": len(sources), "size": f"{SIZE[0]}x{SIZE[1]}", "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "steps": worker._steps, "camera_frames": stats.frames,
            "ui_fps": round((marks["ui_frames1"] - marks["ui_frames0"]) / wall, 2),
            "pipeline_fps": round(stats.frames / busy, 2) if busy else None,  # camera-frames per busy second
            "pipeline_fps_wall": round(stats.frames / wall, 2),
            "ms_per_step": {k: round(1000 * v / max(worker._steps, 1), 1) for k, v in stats.seconds.items()},
            "event_loop_latency_ms": {"max": round(max(lags, default=0.0), 1), "p99": round(percentile(lags, 99), 1),
                                      "p95": round(percentile(lags, 95), 1), "p50": round(percentile(lags, 50), 1),
                                      "samples": len(lags)},
            "measured_s": round(wall, 1),
        }

    def poll() -> None:
        if "first" not in marks and window.ui_frames > 0:
            marks["first"] = time.perf_counter()
            marks["ui_frames0"] = window.ui_frames
            window.probe.reset()  # measure while inference runs, not while models load
        worker = window.worker
        ended = worker is not None and worker.pipeline is not None and not worker.pipeline.active
        if "first" in marks and (ended or time.perf_counter() - marks["first"] > args.seconds):
            marks["last"] = time.perf_counter()
            marks["ui_frames1"] = window.ui_frames
            result.update(measure())
            timer.stop()
            window.close()
            app.quit()

    timer = QTimer()
    timer.timeout.connect(poll)
    timer.start(50)
    app.exec()
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
