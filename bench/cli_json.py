"""Run a `tracklink` subcommand in this process and return the JSON object it printed last."""

from __future__ import annotations

import contextlib
import io
import json

from tracklink.cli import main as tracklink


def cli_json(argv: list[str]) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = tracklink(argv)
    if code != 0:
        raise SystemExit(f"tracklink {' '.join(argv)} exited {code}")
    return json.loads(out.getvalue().strip().splitlines()[-1])
