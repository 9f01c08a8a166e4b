"""INT8 against FP32 on this CPU, for the embedder and the detector, with their accuracy gates. Prints JSON.

Embedder (OSNet-x0.25): `tracklink export --model osnet.onnx --format onnx --int8 --calib PKU` (static QDQ,
uint8 activations, int8 per-channel weights: the U8S8 pairing ONNX Runtime's x86 VNNI kernels take), plus
variants quantised here from the same ONNX (QDQ, QDQ on convolutions only, the older QOperator format).
Speed: crops/s at batch 16 on 1 and 2 threads, the median of --repeat rounds in which every variant runs in
turn for about 0.2 s. Gate: image rank-1 within 0.01 of FP32 on the shared PKU ids
(`tracklink eval`).

Detector (YOLOX-nano): tracklink has no INT8 path for it; this quantises the ONNX here the same way (after
moving it to opset 13, which per-channel QDQ needs), calibrated on 40 real frames of the tuning sequences
(MOT17-02/04/05/09 and TUD-Campus); variants: QDQ, QDQ on convolutions only, and QDQ with the head's
prediction convolutions and everything after them left in FP32 (`yolox_head`). Speed: frames/s at 416x416.
Gate: the tracking benchmark's MOTA and IDF1 within 0.01 on every sequence (`bench/tracking.py try
--detector`), run only when --detector-gate is given (several minutes).

    .venv/bin/python bench/int8.py [--repeat 5] [--detector-gate]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO.parent / "shared" / "assets"
OSNET = ASSETS / "models" / "osnet_x0_25_msmt17.onnx"
YOLOX = ASSETS / "models" / "yolox_nano.onnx"
PKU = ASSETS / "reid" / "pku-reid-40"
CALIB_FRAMES = ("mot/MOT17-mini/MOT17-02-FRCNN", "mot/MOT17-mini/MOT17-04-FRCNN", "mot/MOT17-mini/MOT17-05-FRCNN",
                "mot/MOT17-mini/MOT17-09-FRCNN")


def tracklink(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "tracklink", *args], cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1])
    return done.stdout


def speeds(paths: dict[str, Path], feed: np.ndarray, threads: int, repeat: int, per_run: int) -> dict[str, float]:
    """`timed_rounds` in a fresh process. Quantisation's calibration opened sessions here without denormals
    as zero, after which ONNX Runtime no longer sets it for a session of this process, and the FP32 OSNet
    (whose weights hold denormals) then ran 5x slower than in tracklink (88 against 465 crops/s)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(timed_rounds, paths, feed, threads, repeat, per_run).result()


def timed_rounds(paths: dict[str, Path], feed: np.ndarray, threads: int, repeat: int,
                 per_run: int) -> dict[str, float]:
    """Items/s of each model on `feed`: `repeat` rounds, each timing every model in turn for about 0.2 s (so a
    slow spell of the machine falls on all of them); the median round of each."""
    from tracklink.export.ort_session import open_session

    sessions = {label: open_session(path, intra_op_threads=threads) for label, path in paths.items()}
    runs: dict[str, tuple[int, list[float]]] = {}
    for label, session in sessions.items():
        name = session.get_inputs()[0].name
        t0 = time.perf_counter()
        session.run(None, {name: feed})  # warm-up, and how many runs make 0.2 s
        runs[label] = (max(1, int(0.2 / max(time.perf_counter() - t0, 1e-4))), [])
    for _ in range(repeat):
        for label, session in sessions.items():
            name, (n, rates) = session.get_inputs()[0].name, runs[label]
            t0 = time.perf_counter()
            for _ in range(n):
                session.run(None, {name: feed})
            rates.append(n * per_run / (time.perf_counter() - t0))
    return {label: round(float(np.median(rates)), 1) for label, (_, rates) in runs.items()}


def quantize_variants(fp32: Path, out: Path, feeds: list[np.ndarray], variants: dict[str, dict]) -> dict[str, Path]:
    """onnxruntime.quantization static INT8 of `fp32`, calibrated on `feeds`, one file per variant."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(fp32))
    if model.opset_import[0].version < 13:  # per-channel DequantizeLinear needs opset 13
        model = version_converter.convert_version(model, 13)
    onnx.save(model, str(out / "op13.onnx"))
    quant_pre_process(str(out / "op13.onnx"), str(out / "prep.onnx"), skip_symbolic_shape=True)
    name = onnx.load(str(out / "prep.onnx")).graph.input[0].name

    class Reader:
        def __init__(self) -> None:
            self._feeds = iter([{name: f} for f in feeds])

        def get_next(self):
            return next(self._feeds, None)

    paths = {"fp32": out / "op13.onnx"}
    for variant, options in variants.items():
        options = dict(options)
        fmt = options.pop("quant_format", QuantFormat.QDQ)
        if options.pop("head_fp32", False):
            options["nodes_to_exclude"] = yolox_head(onnx.load(str(out / "prep.onnx")))
        paths[variant] = out / f"{variant}.onnx"
        quantize_static(str(out / "prep.onnx"), str(paths[variant]), Reader(), quant_format=fmt, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, extra_options={"WeightSymmetric": True}, **options)
    return paths


def yolox_head(model) -> list[str]:
    """YOLOX's prediction convolutions and every node after them. Their outputs are concatenated into one
    tensor, box offsets in pixels beside scores in 0..1: one 8-bit scale over both leaves the scores a few steps."""
    producers = {o: n for n in model.graph.node for o in n.output}
    head = {n.name for n in model.graph.node if n.op_type == "Conv" and "_preds" in n.input[1]}
    grown = True
    while grown:
        after = {n.name for n in model.graph.node if any(producers.get(i) is not None and producers[i].name in head
                                                         for i in n.input)}
        grown = not after <= head
        head |= after
    return sorted(head)


def embedder(tmp: Path, repeat: int) -> dict:
    from onnxruntime.quantization import QuantFormat

    from tracklink.export.onnx_export import load_crops
    from tracklink.models.preprocess import preprocess_crops

    crops = preprocess_crops(load_crops(PKU, None), (256, 128), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    paths = quantize_variants(OSNET, tmp, [crops[i:i + 16] for i in range(0, 256, 16)],
                              {"qdq": {}, "qdq_conv_only": {"op_types_to_quantize": ["Conv"]},
                               "qoperator": {"quant_format": QuantFormat.QOperator}})
    out: dict = {}
    shipped = tmp / "osnet_int8.onnx"  # the product's own path, from the PyTorch import of the same weights
    try:
        tracklink("export", "--model", str(OSNET), "--format", "onnx", "--int8", "--calib", str(PKU), "--out",
                  str(shipped))
        paths["tracklink export --int8"] = shipped
    except RuntimeError as exc:
        out["tracklink export --int8"] = {"error": str(exc)}
    paths = {"fp32": OSNET, **{k: v for k, v in paths.items() if k != "fp32"}}
    rates = {t: speeds(paths, crops[:16], t, repeat, 16) for t in (1, 2)}
    for label, path in paths.items():
        scores = json.loads(tracklink("eval", "--model", str(path), "--data", f"folder:{PKU}", "--json",
                                      "--no-progress"))
        out[label] = {f"crops_per_s_{t}t": rates[t][label] for t in (1, 2)}
        out[label].update({"image_rank1": round(scores["image_rank1"], 4), "image_mAP": round(scores["image_mAP"], 4)})
    return out


def detector(tmp: Path, repeat: int, gate: bool) -> dict:
    import cv2

    from tracklink.app.detect import YoloxDetector

    yolox = YoloxDetector(YOLOX, threads=1, rect=False)  # calibrated and timed at the export's own 416x416
    files = [f for seq in CALIB_FRAMES for f in sorted((ASSETS / seq / "img1").glob("*.jpg"))]
    files += sorted((ASSETS / "mot" / "TUD-Campus" / "img1").glob("*.jpg"))[::4]
    feeds = [yolox.preprocess(cv2.imread(str(f)))[0] for f in files]
    paths = quantize_variants(YOLOX, tmp, feeds, {"qdq": {}, "qdq_conv_only": {"op_types_to_quantize": ["Conv"]},
                                                  "qdq_head_fp32": {"head_fp32": True}})
    rates = {t: speeds(paths, feeds[0], t, repeat, 1) for t in (1, 2)}
    out = {}
    for label, path in paths.items():
        out[label] = {f"frames_per_s_{t}t": rates[t][label] for t in (1, 2)}
        if gate:
            runs = REPO / "runs" / f"int8-{label}"
            subprocess.run([sys.executable, str(REPO / "bench" / "tracking.py"), "--out", str(runs), "--detector",
                            str(path), "try"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
            out[label]["tracking"] = json.loads((runs / "try.jsonl").read_text().splitlines()[-1])["try"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--detector-gate", action="store_true", help="also run the tracking benchmark per variant")
    args = p.parse_args(argv)
    for path in (OSNET, YOLOX, PKU):
        if not path.exists():
            raise SystemExit(f"{path} is missing (the shared assets live in ../shared/assets)")
    cpu = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    report = {"cpus": os.cpu_count(), "avx512_vnni": "avx512_vnni" in cpu, "load_avg_1m": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="tracklink-int8-") as tmp:
        (Path(tmp) / "emb").mkdir()
        (Path(tmp) / "det").mkdir()
        report["embedder"] = embedder(Path(tmp) / "emb", args.repeat)
        report["detector"] = detector(Path(tmp) / "det", args.repeat, args.detector_gate)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
