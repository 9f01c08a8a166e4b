"""Default models a new user meets: the published re-ID file pinned by checksum in the user cache, and the
default detector; offline, the error names --detector and --reid."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tracklink import TracklinkError
from tracklink.models import weights
from tracklink.app.detect import github_reachable
from tracklink.cli import main


def test_defaults_offline_name_both_flags(tmp_path: Path, monkeypatch, mot17_dir: Path, capsys):
    if github_reachable():
        pytest.skip("online: the defaults would download instead of failing")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    t0 = time.monotonic()
    rc = main(["batch", str(mot17_dir / "MOT17-05-FRCNN"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - t0 < 30
    assert "--detector" in err and "--reid" in err and "yolox:" in err
    assert not (tmp_path / "out" / "tracklink.db").exists()


def test_defaults_resolve_from_the_user_cache(tmp_path: Path, monkeypatch, mot17_dir: Path, osnet_onnx: Path,
                                              no_network):
    """With both default models in the user cache (as a first online run leaves them), the no-flag command
    runs offline: the re-ID file is the published one (checksum), its threshold the catalogue's."""
    from ultralytics import YOLO

    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.chdir(tmp_path)
    (cache / "tracklink" / "ultralytics").mkdir(parents=True)
    shutil.copy(osnet_onnx, cache / "tracklink" / "osnet_x0_25_msmt17.onnx")
    YOLO("yolo11n.yaml").save(str(cache / "tracklink" / "ultralytics" / "yolo11n.pt"))  # an untrained stand-in
    clip = tmp_path / "clip"
    clip.mkdir()
    for f in sorted((mot17_dir / "MOT17-05-FRCNN" / "img1").glob("*.jpg"))[:2]:
        shutil.copy(f, clip / f.name)
    rc = main(["batch", str(clip), "--no-progress"])
    assert rc == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["detector"] == "yolo11n.pt" and summary["cameras"]["clip"]["frames"] == 2
    assert Path(summary["reid"]) == cache / "tracklink" / "osnet_x0_25_msmt17.onnx"
    assert summary["link_threshold"] == weights.CATALOGUE["osnet_x0_25_msmt17"].link_threshold


def test_weights_catalogue_checksums(tmp_path: Path, monkeypatch, osnet_onnx: Path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    entry = weights.CATALOGUE[weights.DEFAULT_REID]
    assert weights.identify(osnet_onnx) == entry  # the shared file is the published one
    assert weights.cache_dir() == tmp_path / "tracklink"

    def offline(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(weights.urllib.request, "urlopen", offline)
    cached = tmp_path / "tracklink" / entry.filename
    cached.parent.mkdir(parents=True)
    shutil.copy(osnet_onnx, cached)
    assert weights.fetch() == cached  # verified, no download
    cached.write_bytes(cached.read_bytes()[:-10])  # a truncated cache is not used...
    with pytest.raises(TracklinkError, match="--reid"):  # ...and offline it cannot be replaced
        weights.fetch()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert weights.cache_dir() == tmp_path / "home" / ".cache" / "tracklink"
