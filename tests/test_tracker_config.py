"""`--tracker-config FILE.yaml` overrides keys of the tracker's YAML; `--conf` and `--nms-iou` set the detector's
thresholds; the measured defaults depend on the detector family."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracklink import TracklinkError
from tracklink.app.detect import YOLOX_DEFAULTS, DetectorConfig
from tracklink.app.session import SessionOptions, tracker_config
from tracklink.app.track import FAMILY_DEFAULTS, TrackerConfig, ultralytics_tracker_yaml
from tracklink.cli import main


def test_file_overrides_keys_over_family_defaults(tmp_path: Path) -> None:
    f = tmp_path / "tracker.yaml"
    f.write_text("track_buffer: 90\nmatch_thresh: 0.7\nreport_thresh: 0.8\n")
    config = tracker_config(SessionOptions(detector="yolox:x.onnx", tracker="bytetrack", tracker_config=str(f)))
    args = config.args()
    assert (args.track_buffer, args.match_thresh, args.report_thresh) == (90, 0.7, 0.8)
    # Keys the file leaves alone keep the YOLOX family's measured value, else ultralytics' own.
    expected = {**ultralytics_tracker_yaml("bytetrack"), **FAMILY_DEFAULTS["yolox"]}
    assert args.new_track_thresh == expected["new_track_thresh"]
    # ultralytics' YOLO keeps ultralytics' own thresholds and no report gate.
    plain = TrackerConfig("bytetrack").args()
    assert plain.new_track_thresh == ultralytics_tracker_yaml("bytetrack")["new_track_thresh"]
    assert plain.report_thresh is None


def test_tracker_type_in_the_file_picks_the_tracker(tmp_path: Path) -> None:
    f = tmp_path / "botsort.yaml"
    f.write_text("tracker_type: botsort\ngmc_method: none\n")
    config = tracker_config(SessionOptions(tracker="bytetrack", tracker_config=str(f)))
    assert config.kind == "botsort" and config.args().gmc_method == "none"


@pytest.mark.parametrize("text, message", [
    ("track_bufer: 60\n", r"unknown bytetrack option\(s\) \['track_bufer'\]"),
    ("gmc_method: none\n", r"unknown bytetrack option\(s\) \['gmc_method'\]"),  # a BoT-SORT key
    ("tracker_type: botsort\ngmc_method: bogus\n", "unknown gmc_method 'bogus'; choose one of backgroundFlow"),
    ("- track_buffer\n", "must be a mapping"),
    ("track_buffer: [\n", "not valid YAML"),
])
def test_bad_file_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "tracker.yaml"
    f.write_text(text)
    with pytest.raises(TracklinkError, match=message):
        tracker_config(SessionOptions(tracker="bytetrack", tracker_config=str(f)))


def test_detector_defaults_per_family() -> None:
    assert DetectorConfig.for_detector("yolox:models/yolox_nano.onnx") == YOLOX_DEFAULTS
    assert DetectorConfig.for_detector("yolo11n.pt") == DetectorConfig()
    assert DetectorConfig.for_detector(None) == YOLOX_DEFAULTS  # the default detector is the packaged YOLOX-nano


@pytest.mark.assets
def test_batch_takes_tracker_config_and_nms_flags(tmp_path: Path, mot17_dir: Path, yolox_onnx: Path,
                                                  osnet_onnx: Path, capsys) -> None:
    seq = str(mot17_dir / "MOT17-05-FRCNN")
    models = ["--detector", f"yolox:{yolox_onnx}", "--reid", str(osnet_onnx), "--no-progress", "--threads", "1"]
    good = tmp_path / "good.yaml"
    good.write_text("track_buffer: 60\nnew_track_thresh: 0.5\n")
    out = tmp_path / "out"
    assert main(["batch", seq, *models, "--out", str(out), "--tracker-config", str(good), "--nms-iou", "0.5",
                 "--conf", "0.2"]) == 0
    assert (out / "MOT17-05-FRCNN.txt").read_text().strip()

    bad = tmp_path / "bad.yaml"
    bad.write_text("new_track_tresh: 0.5\n")
    assert main(["batch", seq, *models, "--out", str(tmp_path / "bad"), "--tracker-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "new_track_tresh" in err and "known:" in err
    assert not (tmp_path / "bad" / "summary.json").exists()
    assert main(["batch", seq, *models, "--out", str(tmp_path / "iou"), "--nms-iou", "1.5"]) == 2
    assert "--nms-iou" in capsys.readouterr().err
