"""The architecture holds: layers point down only (import-linter contracts), and no function is too long.

The contracts live in pyproject.toml ([tool.importlinter]); these tests run them, and show that an upward
import in a copy of the package breaks them, so the next change cannot quietly undo the layering.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
LAYERED = ("app", "export", "train", "models", "data", "utils")
MAX_FUNCTION_LINES = 80

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (pip install -e '.[dev]')")


def _lint(config: Path, cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([str(LINT_IMPORTS), "--config", str(config), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_layer_contracts_are_kept() -> None:
    result = _lint(REPO / "pyproject.toml", REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    """models/ importing app/ (what the weights catalogue once did) is reported with both module names."""
    package = tmp_path / "tracklink"
    shutil.copytree(REPO, package, ignore=shutil.ignore_patterns(".*", "tests", "bench", "__pycache__", "*.egg-info",
                                                                 "runs", "out", "build", "dist"))
    registry = package / "models" / "registry.py"
    registry.write_text(registry.read_text() + "\nfrom tracklink.app import records  # noqa: E402,F401\n")
    result = _lint(package / "pyproject.toml", tmp_path, pythonpath=tmp_path)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
    assert "tracklink.models.registry -> tracklink.app.records" in result.stdout


def _long_functions(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_80_lines() -> None:
    long = [f for folder in LAYERED for f in _long_functions(REPO / folder)]
    assert not long, "split these functions:\n" + "\n".join(long)
