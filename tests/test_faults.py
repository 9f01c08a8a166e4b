"""Faults an unlucky operator meets, end to end through `tracklink`: models that cannot work, damaged
recordings, colliding names, read-only or full output folders, kills and SIGTERM. Each must end in a clear
one-line error or an honest status, never a traceback or outputs that look finished when they are not."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tracklink.cli import main


def _one_channel_reid(path: Path) -> Path:
    """A re-ID-shaped ONNX whose input has 1 channel instead of 3 (loads fine, fails on a real crop)."""
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [8, 1, 256, 128], np.zeros(8 * 256 * 128, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["c"]), helper.make_node("Flatten", ["c"], ["out"])], "reid",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 256, 128])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 8])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("case", ["garbage_detector", "one_channel_reid", "detector_as_reid"])
def test_unusable_models_fail_before_any_video_opens(case: str, tmp_path: Path, yolox_onnx: Path, osnet_onnx: Path,
                                                     capsys):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a model" * 200)
    models = {"garbage_detector": (str(garbage), str(osnet_onnx), "garbage.onnx"),
              "one_channel_reid": (f"yolox:{yolox_onnx}", str(_one_channel_reid(tmp_path / "gray.onnx")), "gray.onnx"),
              "detector_as_reid": (f"yolox:{yolox_onnx}", str(yolox_onnx), yolox_onnx.name)}
    detector, reid, named = models[case]
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"\x00" * 1000)  # opening it would be an error of its own
    out = tmp_path / "out"
    rc = main(["batch", str(video), "--detector", detector, "--reid", reid, "--out", str(out), "--no-progress",
               "--link-threshold", "0.5"])  # a threshold given, so that only the model itself can fail
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    message = [line for line in err.splitlines() if "error:" in line]
    assert len(message) == 1 and named in message[0] and "broken.mp4" not in err, err[-2000:]
    assert "Traceback" not in err
    assert not (out / "tracklink.db").exists()


def test_yolox_without_its_prefix_is_recognised(tmp_path: Path, yolox_onnx: Path, osnet_onnx: Path, mot17_dir: Path,
                                                capsys, caplog):
    out = tmp_path / "out"
    rc = main(["batch", str(mot17_dir / "MOT17-05-FRCNN"), "--detector", str(yolox_onnx), "--reid", str(osnet_onnx),
               "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err[-2000:]
    assert "YOLOX" in caplog.text and f"yolox:{yolox_onnx}" in caplog.text  # what it assumed, how to say so
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cameras"]["MOT17-05-FRCNN"]["status"] == "done" and summary["cameras"]["MOT17-05-FRCNN"]["rows"] > 0
    status = sqlite3.connect(str(out / "tracklink.db")).execute("SELECT status FROM cameras").fetchall()
    assert status == [("done",)]
