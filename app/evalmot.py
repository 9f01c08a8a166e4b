"""MOTA, IDF1 and HOTA of tracking results against MOTChallenge ground truth, with TrackEval.

--gt is a gt.txt, a sequence folder (gt/gt.txt inside), or a folder of sequences (MOT17-mini's layout).
--pred is a results file, or a folder of <sequence>.txt files (what `tracklink batch` writes). Sequences
are matched by name; ground truth without predictions is listed as missing, not scored.

--multi-camera scores cross-camera identity (MTMC IDF1): the ground truth's ids must then be global (one
person, one id in every camera), the predictions are the <sequence>.global.txt files, and all cameras are
concatenated into one sequence with frame numbers offset past the previous camera's last frame. A global id
that is right in camera A but wrong in camera B then costs identity matches exactly as a switch within one
long video would, which is the usual way MTMC benchmarks compute IDF1.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import tempfile
from pathlib import Path

from tracklink import TracklinkError

log = logging.getLogger(__name__)

# The numbers reported; TrackEval computes many more (all are in the JSON under "details").
HEADLINE = {"HOTA": "HOTA", "MOTA": "MOTA", "IDF1": "IDF1", "DetA": "DetA", "AssA": "AssA", "IDP": "IDP",
            "IDR": "IDR", "IDSW": "IDSW", "FP": "CLR_FP", "FN": "CLR_FN"}  # shown name -> TrackEval's key
COUNTS = ("IDSW", "FP", "FN")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gt", required=True, help="gt.txt, a sequence folder, or a folder of sequence folders")
    p.add_argument("--pred", required=True, help="results file, or a folder of <sequence>.txt")
    p.add_argument("--multi-camera", action="store_true",
                   help="MTMC scores over all cameras with global ids (<sequence>.global.txt)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    result = evaluate(args.gt, args.pred, multi_camera=args.multi_camera)
    if args.json:
        print(json.dumps(result))
    else:
        sys.stdout.write(format_table(result))
    return 0


# ------------------------------------------------------------------------------------------------ inputs


def _gt_file(folder: Path) -> Path | None:
    f = folder / "gt" / "gt.txt"
    return f if f.is_file() else None


def find_gt(gt: str | Path) -> dict[str, Path]:
    """{sequence: gt file} from a gt.txt, a sequence folder or a folder of sequences."""
    path = Path(gt)
    if path.is_file():
        name = path.parent.parent.name if path.name == "gt.txt" and path.parent.name == "gt" else path.stem
        return {name: path}
    if not path.is_dir():
        raise TracklinkError(f"ground truth not found: {path}")
    if (f := _gt_file(path)) is not None:
        return {path.name: f}
    found = {d.name: f for d in sorted(path.iterdir()) if d.is_dir() and (f := _gt_file(d)) is not None}
    if not found:
        found = {f.stem: f for f in sorted(path.glob("*.txt"))}
    if not found:
        raise TracklinkError(f"no ground truth in {path}: expected gt/gt.txt, <sequence>/gt/gt.txt or <sequence>.txt")
    return found


def find_pred(pred: str | Path, sequences: list[str], multi_camera: bool) -> dict[str, Path]:
    """{sequence: results file}: a folder of <sequence>.txt (or .global.txt), or one file for one sequence."""
    path = Path(pred)
    if path.is_file():
        if len(sequences) != 1:
            raise TracklinkError(f"--pred {path} is one file but --gt has {len(sequences)} sequences; "
                                 "pass a folder of <sequence>.txt files")
        return {sequences[0]: path}
    if not path.is_dir():
        raise TracklinkError(f"predictions not found: {path}")
    suffix = ".global.txt" if multi_camera else ".txt"
    found = {seq: path / f"{seq}{suffix}" for seq in sequences if (path / f"{seq}{suffix}").is_file()}
    if not found:
        raise TracklinkError(f"no predictions in {path} for any of {', '.join(sequences)} "
                             f"(expected <sequence>{suffix}{', written by tracklink batch' if multi_camera else ''})")
    return found


def _read_rows(path: Path, is_gt: bool) -> list[list[str]]:
    """MOTChallenge rows; short gt rows (frame,id,x,y,w,h) get consider=1, class=1 (pedestrian), visibility=1."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        cols = [c.strip() for c in line.replace(" ", ",").split(",") if c.strip()]
        if len(cols) < 6:
            raise TracklinkError(f"{path}:{n}: expected frame,id,x,y,w,h,... but got {line!r}")
        try:
            [float(c) for c in cols]
        except ValueError:
            raise TracklinkError(f"{path}:{n}: not numbers: {line!r}") from None
        if is_gt and len(cols) < 9:
            cols = cols[:6] + ["1", "1", "1"]
        rows.append(cols)
    return rows


# ------------------------------------------------------------------------------------------------ scoring


def _trackeval(gt_rows: dict[str, list[list[str]]], pred_rows: dict[str, list[list[str]]]) -> dict[str, dict]:
    """Run TrackEval's MOTChallenge evaluation (HOTA, CLEAR, Identity) on rows laid out in a temp folder."""
    import numpy as np
    import trackeval

    with tempfile.TemporaryDirectory(prefix="tracklink-eval-") as tmp:
        root = Path(tmp)
        lengths = {}
        for seq in gt_rows:
            (root / "gt" / seq / "gt").mkdir(parents=True)
            (root / "pred" / "tracklink" / "data").mkdir(parents=True, exist_ok=True)
            (root / "gt" / seq / "gt" / "gt.txt").write_text("".join(",".join(r) + "\n" for r in gt_rows[seq]))
            (root / "pred" / "tracklink" / "data" / f"{seq}.txt").write_text(
                "".join(",".join(r) + "\n" for r in pred_rows[seq]))
            frames = [int(float(r[0])) for r in gt_rows[seq] + pred_rows[seq]]
            lengths[seq] = max(frames, default=1)
        dataset = trackeval.datasets.MotChallenge2DBox({
            "GT_FOLDER": str(root / "gt"), "TRACKERS_FOLDER": str(root / "pred"), "OUTPUT_FOLDER": str(root / "out"),
            "TRACKERS_TO_EVAL": ["tracklink"], "BENCHMARK": "MOT17", "SKIP_SPLIT_FOL": True, "SEQ_INFO": lengths,
            "PRINT_CONFIG": False, "DO_PREPROC": True})
        evaluator = trackeval.Evaluator({
            "USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False, "TIME_PROGRESS": False,
            "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False, "PLOT_CURVES": False, "LOG_ON_ERROR": None,
            "BREAK_ON_ERROR": True, "DISPLAY_LESS_PROGRESS": True})
        metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
                   trackeval.metrics.Identity({"PRINT_CONFIG": False})]
        chatter = io.StringIO()  # TrackEval prints progress unconditionally
        try:
            with contextlib.redirect_stdout(chatter):
                results, messages = evaluator.evaluate([dataset], metrics)
        except trackeval.utils.TrackEvalException as exc:
            raise TracklinkError(f"TrackEval: {exc}") from None
        per_seq = results["MotChallenge2DBox"]["tracklink"]
        if not isinstance(per_seq, dict):
            raise TracklinkError(f"TrackEval failed: {messages}")
    out = {}
    for seq, by_class in per_seq.items():
        res = by_class["pedestrian"]
        flat: dict[str, float] = {}
        for group in ("HOTA", "CLEAR", "Identity"):
            for key, value in res[group].items():
                value = np.asarray(value)
                # HOTA's fields are curves over 19 IoU thresholds; the reported score is their mean.
                flat[key] = float(value.mean()) if value.ndim else float(value)
        out["COMBINED" if seq == "COMBINED_SEQ" else seq] = flat
    return out


def evaluate(gt: str | Path, pred: str | Path, multi_camera: bool = False) -> dict:
    """Scores per sequence and combined; with `multi_camera`, one MTMC score over all cameras."""
    gt_files = find_gt(gt)
    pred_files = find_pred(pred, list(gt_files), multi_camera)
    missing = [seq for seq in gt_files if seq not in pred_files]
    if missing:
        log.warning("no predictions for %s; scoring only %s", ", ".join(missing), ", ".join(pred_files))
    seqs = [seq for seq in gt_files if seq in pred_files]
    gt_rows = {seq: _read_rows(gt_files[seq], True) for seq in seqs}
    pred_rows = {seq: _read_rows(pred_files[seq], False) for seq in seqs}
    result: dict = {"sequences": seqs, "missing": missing, "multi_camera": multi_camera}
    if not multi_camera:
        scores = _trackeval(gt_rows, pred_rows)
        result["scores"] = {seq: _headline(s) for seq, s in scores.items()}
        result["details"] = scores
        return result
    # One long sequence: each camera's frames shifted past the previous camera's last frame.
    merged_gt, merged_pred, offset, offsets = [], [], 0, {}
    for seq in seqs:
        offsets[seq] = offset
        for src, dst in ((gt_rows[seq], merged_gt), (pred_rows[seq], merged_pred)):
            dst.extend([str(int(float(r[0])) + offset), *r[1:]] for r in src)
        offset += max(int(float(r[0])) for r in gt_rows[seq] + pred_rows[seq]) if gt_rows[seq] + pred_rows[seq] else 0
    scores = _trackeval({"MTMC": merged_gt}, {"MTMC": merged_pred})
    result["frame_offsets"] = offsets
    result["scores"] = {"MTMC": _headline(scores["MTMC"])}
    result["details"] = {"MTMC": scores["MTMC"]}
    return result


def _headline(scores: dict[str, float]) -> dict[str, float]:
    return {name: scores[key] for name, key in HEADLINE.items()}


def format_table(result: dict) -> str:
    rows = result["scores"]
    lines = [f"{'sequence':<24}" + "".join(f"{k:>9}" for k in HEADLINE)]
    for seq, s in rows.items():
        cells = "".join(f"{s[k]:>9.0f}" if k in COUNTS else f"{100 * s[k]:>9.2f}" for k in HEADLINE)
        lines.append(f"{seq:<24}{cells}")
    if result.get("missing"):
        lines.append(f"no predictions for: {', '.join(result['missing'])}")
    return "\n".join(lines) + "\n"


__all__ = ["evaluate", "find_gt", "find_pred", "format_table"]
