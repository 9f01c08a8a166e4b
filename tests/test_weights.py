"""Default models a new user meets: the detector and re-ID model shipped in the package (offline, pinned by
checksum), and published files fetched by name into the user cache, pinned the same way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tracklink import TracklinkError
from tracklink.cli import main
from tracklink.models import weights


def _clip(mot17_dir: Path, tmp_path: Path) -> Path:
    clip = tmp_path / "clip"
    clip.mkdir()
    for f in sorted((mot17_dir / "MOT17-05-FRCNN" / "img1").glob("*.jpg"))[:2]:
        shutil.copy(f, clip / f.name)
    return clip


def test_no_model_flags_run_offline_on_the_packaged_models(tmp_path: Path, monkeypatch, mot17_dir: Path,
                                                           no_network):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # an empty user cache: nothing downloaded
    monkeypatch.chdir(tmp_path)
    assert main(["batch", str(_clip(mot17_dir, tmp_path)), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["cameras"]["clip"]["frames"] == 2
    assert summary["detector"] == f"yolox:{weights.ASSETS / 'yolox_nano.onnx'}"
    assert Path(summary["reid"]) == weights.ASSETS / "osnet_x0_25_msmt17.onnx"
    assert summary["link_threshold"] == weights.CATALOGUE[weights.DEFAULT_REID].link_threshold
    assert not (tmp_path / "cache" / "tracklink").exists()  # nothing fetched into the user cache


def test_a_damaged_packaged_model_is_refused(tmp_path: Path, monkeypatch):
    damaged = tmp_path / "assets"
    damaged.mkdir()
    (damaged / "yolox_nano.onnx").write_bytes((weights.ASSETS / "yolox_nano.onnx").read_bytes()[:-100])
    monkeypatch.setattr(weights, "ASSETS", damaged)
    with pytest.raises(TracklinkError, match="does not match its sha256.*reinstall"):
        weights.default_detector()
    with pytest.raises(TracklinkError, match="missing: reinstall"):
        weights.fetch(weights.DEFAULT_REID)


def test_packaged_files_match_their_checksums() -> None:
    for entry in [*weights.CATALOGUE.values(), *weights.DETECTORS.values()]:
        if entry.packaged:
            assert weights.packaged(entry) == weights.ASSETS / entry.filename
    assert (weights.ASSETS / "README.md").is_file()  # provenance and licences travel with the files


def test_published_files_are_fetched_into_the_user_cache_and_checked(tmp_path: Path, monkeypatch,
                                                                    osnet_onnx: Path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    entry = weights.CATALOGUE["osnet_x0_25_msmt17_boxmot"]
    assert weights.identify(osnet_onnx) == entry  # the shared file is that published one

    def offline(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(weights.urllib.request, "urlopen", offline)
    cached = tmp_path / "tracklink" / entry.filename
    cached.parent.mkdir(parents=True)
    shutil.copy(osnet_onnx, cached)
    assert weights.fetch(entry.name) == cached  # verified, no download
    cached.write_bytes(cached.read_bytes()[:-10])  # a truncated cache is not used...
    with pytest.raises(TracklinkError, match="--reid"):  # ...and offline it cannot be replaced
        weights.fetch(entry.name)
    assert list(cached.parent.glob("*.part")) == []  # no partial download left behind
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert weights.cache_dir() == tmp_path / "home" / ".cache" / "tracklink"
