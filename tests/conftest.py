"""Shared fixtures: the real assets beside the repository, skipped with a reason when absent."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

# Qt tests run without a display.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("TRACKLINK_ASSETS", REPO.parent / "shared" / "assets"))
PKU = ASSETS / "reid" / "pku-reid-40"
OSNET_ONNX = ASSETS / "models" / "osnet_x0_25_msmt17.onnx"
YOLOX_ONNX = ASSETS / "models" / "yolox_nano.onnx"
MOT17 = ASSETS / "mot" / "MOT17-mini"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared asset {path} is absent (a user's clone has no ../shared/assets)")
    return path


@pytest.fixture(scope="session")
def pku_dir() -> Path:
    return _need(PKU)


@pytest.fixture(scope="session")
def osnet_onnx() -> Path:
    return _need(OSNET_ONNX)


@pytest.fixture(scope="session")
def yolox_onnx() -> Path:
    return _need(YOLOX_ONNX)


@pytest.fixture(scope="session")
def mot17_dir() -> Path:
    return _need(MOT17)


@pytest.fixture(scope="session")
def osnet_checkpoint(osnet_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared OSNet ONNX imported into a tracklink checkpoint, once per session."""
    from tracklink.models.checkpoint import save_checkpoint
    from tracklink.models.onnx_import import import_weights

    model, meta = import_weights(osnet_onnx)
    path = tmp_path_factory.mktemp("models") / "osnet_x0_25_msmt17.pt"
    save_checkpoint(path, model, meta)
    return path


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a connection fails: proves the run needs no network."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
