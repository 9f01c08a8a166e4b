"""Watch cameras live: a grid of cameras with people labelled by global identity, and the people seen so far.

Runs the same pipeline as `tracklink batch` (same models, defaults and store) in a worker thread. Sources
can be added and removed while it runs. With --frames N --screenshot PNG it runs N pipeline steps (one
frame from every camera each), saves a picture of the whole window and exits 0: for automation and docs.
Remembered settings (models, backend, thresholds, recent sources) live in QSettings; flags override them.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

# Flags whose value, when given, overrides the remembered setting of the same name.
_OVERRIDES = ("db", "detector", "reid", "backend", "device", "tracker", "conf", "link_threshold", "threads", "transit",
              "pooling", "nms_iou", "tracker_config", "gallery_ttl", "embed_every")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tracklink.app.session import add_session_arguments

    p.add_argument("--source", dest="sources", action="extend", nargs="+", default=[], metavar="S",
                   help="video file, MOTChallenge/image folder, camera index or rtsp/http URL; NAME=S names it; "
                        "repeat for more cameras (up to 16)")
    p.add_argument("--db", default=None,
                   help="SQLite store shared with batch mode (default: remembered, else out/tracklink.db)")
    add_session_arguments(p, remembered=True)
    p.add_argument("--frames", type=int, default=None, metavar="N",
                   help="stop the pipeline after N steps (with --screenshot: then save it and exit)")
    p.add_argument("--screenshot", default=None, metavar="PNG",
                   help="save a picture of the whole window once --frames steps ran (or every source ended), then exit 0")
    p.add_argument("--forget-settings", action="store_true", help="ignore and clear the remembered settings")


def run(args: argparse.Namespace) -> int:
    from tracklink import TracklinkError

    if args.frames is not None and args.frames < 1:
        raise TracklinkError(f"--frames must be at least 1, got {args.frames}")
    if args.screenshot and not args.screenshot.lower().endswith((".png", ".jpg", ".jpeg", ".bmp")):
        raise TracklinkError(f"--screenshot {args.screenshot}: give a .png (or .jpg/.bmp) file name")
    _check_display(bool(args.screenshot))

    from PyQt6.QtWidgets import QApplication

    from tracklink.app.viewer.settings import ViewerOptions, ViewerSettings
    from tracklink.app.viewer.window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setOrganizationName("tracklink")
    app.setApplicationName("tracklink view")
    settings = ViewerSettings()
    if args.forget_settings:
        settings.qs.clear()
    given = {k for k in _OVERRIDES if getattr(args, k) is not None}
    cli = ViewerOptions(sources=list(args.sources), max_steps=args.frames,
                        **{k: getattr(args, k) for k in given})
    # per run, never remembered
    options = replace(settings.merged(cli, given), trust_pickle=args.trust_pickle, read_ahead=args.read_ahead)
    window = MainWindow(options, settings, screenshot=args.screenshot)
    window.show()
    code = app.exec()
    if window.exit_code is not None:
        return window.exit_code
    return code


def _check_display(offscreen_ok: bool) -> None:
    """Fail with a message, not Qt's abort, when there is no screen; a screenshot run needs none."""
    from tracklink import TracklinkError

    if sys.platform != "linux" or os.environ.get("QT_QPA_PLATFORM"):
        return
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    if offscreen_ok:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        return
    raise TracklinkError("no display: DISPLAY and WAYLAND_DISPLAY are unset. Run it on a desktop, under "
                         "`xvfb-run tracklink view ...`, or with --frames N --screenshot FILE.png for a headless picture")
