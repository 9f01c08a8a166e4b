"""Tracking defaults by measurement: tracklink against ultralytics' own trackers on the same detections.

Sequences (every real one we have, and the semi-synthetic scenes):
- tune:  MOT17-02, -04, -05, -09 (MOT17-mini), TUD-Campus (71 frames, full ground truth) and the two
         cameras of synthetic scene seed 0;
- check: MOT17-10, -11, -13 and synthetic scene seed 1 (other PKU people, other backgrounds).
Values are chosen on "tune" only; "check" says whether they generalise. TUD-Campus is in "tune" because it
is the only real sequence long enough to measure what happens after a track's first frames: MOT17-mini has
4-8 frames a sequence, where any rule that waits before reporting a track (the report gate) can only lose.

Detector YOLOX-nano (ONNX), re-ID OSNet-x0.25 (for BoT-SORT's appearance cue). Stages:

    sweep   coordinate descent over detector score, NMS IoU (one pass, or two with `strict_iou`: app/detect.py
            `two_pass_nms`), the tracker's thresholds and the report gate
            (app/report_gate.py), per tracker kind, scored on the tune sequences against the peers: a
            sequence's margin is min(MOTA - better peer's MOTA, IDF1 - better peer's IDF1), the objective
            the worst margin plus the mean margin (the done-when test, made smooth).
            It starts from ByteTrack's published thresholds (what the peers run) and the gate off.
            Detections are computed once per NMS IoU at the lowest score (NMS keeps a box only against
            higher-scoring ones, so a higher score threshold is an exact filter of that list; two-pass NMS
            is computed at each score) and replayed through tracklink's own Pipeline; embeddings are cached
            per crop.
    gate    the report gate on and off at the chosen values (or with --set KEY=VALUE changes), per
            sequence (MOTA, IDF1, HOTA, precision IDP, FP, FN).
    try     the defaults with --set KEY=VALUE changes beside the peers, every sequence, with the verdict.
    table   `tracklink batch` (the real command) with tracklink's defaults, then `tracklink eval-mot`, beside
            ultralytics' BYTETracker and BOTSORT (from their YAML, re-ID off as ultralytics runs them) with
            ByteTrack's published thresholds: score 0.3, NMS 0.45, high 0.5, low 0.1, new track 0.6.
            `--before DIR` adds an earlier run's table (what the defaults were) for comparison.

    .venv/bin/python bench/tracking.py --out runs/tracking sweep
    .venv/bin/python bench/tracking.py --out runs/tracking gate
    .venv/bin/python bench/tracking.py --out runs/tracking gate --set new_track_thresh=0.25 --set track_high_thresh=0.25
    .venv/bin/python bench/tracking.py --out runs/tracking table --label after
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO.parent / "shared" / "assets"
YOLOX = ASSETS / "models" / "yolox_nano.onnx"
OSNET = ASSETS / "models" / "osnet_x0_25_msmt17.onnx"
TUNE_MOT17 = ("MOT17-02-FRCNN", "MOT17-04-FRCNN", "MOT17-05-FRCNN", "MOT17-09-FRCNN")
MIN_SCORE = 0.05  # lowest detector score swept; detections are cached at this score
# ByteTrack's published thresholds (Zhang et al. 2022), for the peers.
PEER_DETECTOR = {"conf": 0.3, "iou": 0.45}
PEER_TRACKER = {"track_high_thresh": 0.5, "track_low_thresh": 0.1, "new_track_thresh": 0.6,
                "match_thresh": 0.8, "track_buffer": 30}
# Coordinate-descent grid, in the order visited: BoT-SORT's camera-motion compensation, the detector's keys,
# the tracker's YAML keys, then the report gate.
GRID: dict[str, tuple] = {
    "gmc_method": ("sparseOptFlow", "none", "backgroundFlow"),  # BoT-SORT only: camera-motion compensation
    "conf": (0.05, 0.1, 0.2, 0.3),
    "iou": (0.45, 0.5, 0.55, 0.6, 0.65, 0.7),
    "strict_iou": (None, 0.4, 0.45, 0.5),  # two-pass NMS (app/detect.py `two_pass_nms`); None: one pass
    "track_high_thresh": (0.25, 0.35, 0.4, 0.45, 0.5, 0.55),
    "track_low_thresh": (0.05, 0.1, 0.2),
    "new_track_thresh": (0.25, 0.35, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7),
    "match_thresh": (0.7, 0.8, 0.85, 0.9),
    "track_buffer": (30, 60),
    "report_thresh": (None, 0.5, 0.6, 0.7, 0.8),
    "report_motion": (0.25, 0.5, 1.0),
}


@dataclass(frozen=True)
class Sequence:
    name: str
    folder: Path
    split: str  # "tune" or "check"


def build_sequences(out: Path) -> list[Sequence]:
    """Every sequence, with a gt/ folder of links named as the sequences (what eval-mot reads)."""
    sys.path.insert(0, str(REPO / "tests"))
    from synthetic_mtmc import build_scene

    pku = ASSETS / "reid" / "pku-reid-40"
    everyone = sorted(p.name for p in pku.iterdir() if p.is_dir())
    seqs = [Sequence(d.name, d, "tune" if d.name in TUNE_MOT17 else "check")
            for d in sorted((ASSETS / "mot" / "MOT17-mini").iterdir()) if (d / "img1").is_dir()]
    seqs.append(Sequence("TUD-Campus", ASSETS / "mot" / "TUD-Campus", "tune"))
    for seed, split, ids in ((0, "tune", everyone[::5][:8]), (1, "check", everyone[2::5][:8])):
        root = out / "scenes" / f"synth-s{seed}"
        if not (root / "cam2" / "gt" / "gt.txt").is_file():
            build_scene(pku, root, ids=ids, seed=seed)
        seqs += [Sequence(f"synth-s{seed}-{cam}", root / cam, split) for cam in ("cam1", "cam2")]
    gt = out / "gt"
    gt.mkdir(parents=True, exist_ok=True)
    for s in seqs:
        link = gt / s.name
        if not link.exists():
            link.symlink_to(s.folder.resolve())
    return seqs


# ------------------------------------------------------------------------------------------------ caches


class Frames:
    """Decoded frames of every sequence, read once."""

    def __init__(self) -> None:
        self._cache: dict[str, list] = {}

    def __call__(self, seq: Sequence) -> list:
        if seq.name not in self._cache:
            from tracklink.app.sources import ImageFolderSource, parse_source

            source = ImageFolderSource(parse_source(f"{seq.name}={seq.folder}"))
            source.open()
            frames = []
            while (frame := source.read()) is not None:
                frames.append(frame)
            source.close()
            self._cache[seq.name] = frames
        return self._cache[seq.name]


class DetectionCache:
    """YOLOX detections per (sequence, NMS IoU) at MIN_SCORE, which a score threshold filters exactly. Two-pass
    NMS is not such a filter (a box under the threshold can keep a higher one out), so with `strict_iou` the
    detections are computed at the threshold itself."""

    def __init__(self, frames: Frames, model: Path = YOLOX) -> None:
        self.frames, self.model = frames, model
        self._cache: dict[tuple, list] = {}
        self._detectors: dict[tuple, Any] = {}

    def __call__(self, seq: Sequence, conf: float, iou: float, strict_iou: float | None = None) -> list:
        config = (MIN_SCORE if strict_iou is None else conf, iou, strict_iou)
        key = (seq.name, *config)
        if key not in self._cache:
            from tracklink.app.detect import DetectorConfig, make_detector

            if config not in self._detectors:
                self._detectors[config] = make_detector(f"yolox:{self.model}", DetectorConfig(*config), threads=1)
            self._cache[key] = [self._detectors[config]([f.image])[0] for f in self.frames(seq)]
        return [d[d.confidence >= conf] for d in self._cache[key]]


class CachedEmbedder:
    """OSNet, remembered per crop (a crop's bytes), so BoT-SORT runs of a sweep embed each box once."""

    def __init__(self) -> None:
        from tracklink.export.runtime import open_embedder

        self._embedder = open_embedder(OSNET, backend="onnxruntime", intra_op_threads=1)
        self._cache: dict[bytes, np.ndarray] = {}

    def embed(self, crops) -> np.ndarray:
        keys = [hashlib.blake2b(np.ascontiguousarray(c).tobytes() + bytes(str(c.shape), "ascii"),
                                digest_size=16).digest() for c in crops]
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        if todo:
            for i, e in zip(todo, self._embedder.embed([crops[i] for i in todo])):
                self._cache[keys[i]] = np.asarray(e, np.float32)
        return np.stack([self._cache[k] for k in keys])


# ------------------------------------------------------------------------------------------------ runs


def mot_row(frame: int, track_id: int, xyxy, score: float) -> str:
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return f"{frame},{track_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{score:.4f},-1,-1,-1\n"


class _ListSource:
    """A Source over frames already decoded (the pipeline's read/open/close/status surface)."""

    def __init__(self, name: str, frames: list) -> None:
        from tracklink.app.sources import parse_source

        self.spec = parse_source(f"{name}=.")
        self.name, self.frames, self.live = name, frames, False
        self.size, self.fps, self._pos, self.status = None, 30.0, 0, _Status()

    def open(self) -> None:
        self._pos = 0

    def read(self, timeout: float = 0.0):
        if self._pos >= len(self.frames):
            self.status.finished = True
            return None
        self._pos += 1
        return self.frames[self._pos - 1]

    def close(self) -> None:
        pass


@dataclass
class _Status:
    finished: bool = False
    state: str = "ended"
    reason: str = ""


def run_tracklink(seq: Sequence, frames: Frames, dets: DetectionCache, embedder: CachedEmbedder | None,
                  kind: str, params: dict) -> str:
    """tracklink's Pipeline (no store, no linker) over the cached frames and detections; MOT rows."""
    from tracklink.app.pipeline import Pipeline, PipelineConfig
    from tracklink.app.track import TrackerConfig

    replay = iter(dets(seq, params["conf"], params["iou"], params.get("strict_iou")))
    options = {k: v for k, v in params.items() if k not in ("conf", "iou", "strict_iou")}
    config = PipelineConfig(tracker=TrackerConfig(kind, options, family="yolox"))
    pipeline = Pipeline([_ListSource(seq.name, frames(seq))], lambda images: [next(replay) for _ in images],
                        embedder if kind == "botsort" else None, config)
    rows = []
    for step in pipeline:
        for cam in step.cameras:
            rows += [mot_row(t.frame, t.track_id, t.xyxy, t.confidence) for t in cam.backfill + cam.tracks]
    return "".join(rows)


def run_peer(seq: Sequence, frames: Frames, dets: DetectionCache, kind: str) -> str:
    """ultralytics' own tracker as `model.track(tracker=...)` builds it, with ByteTrack's thresholds."""
    from ultralytics.engine.results import Boxes
    from ultralytics.trackers import BOTSORT, BYTETracker
    from ultralytics.utils import IterableSimpleNamespace

    from tracklink.app.track import ultralytics_tracker_yaml

    args = IterableSimpleNamespace(**{**ultralytics_tracker_yaml(kind), **PEER_TRACKER})
    tracker = BOTSORT(args) if kind == "botsort" else BYTETracker(args)
    rows = []
    for frame, det in zip(frames(seq), dets(seq, PEER_DETECTOR["conf"], PEER_DETECTOR["iou"])):
        boxes = Boxes(np.concatenate([det.xyxy, det.confidence[:, None], det.class_id[:, None]], axis=1)
                      .astype(np.float32), frame.image.shape[:2])
        for x1, y1, x2, y2, tid, score, *_ in tracker.update(boxes, frame.image):
            rows.append(mot_row(frame.index, int(tid), (x1, y1, x2, y2), score))
    return "".join(rows)


def score(gt: Path, results: dict[str, str]) -> dict[str, dict]:
    """eval-mot's scores (TrackEval) of {sequence: MOT rows}."""
    from tracklink.app.evalmot import evaluate

    with tempfile.TemporaryDirectory(prefix="tracklink-bench-") as tmp:
        for name, rows in results.items():
            (Path(tmp) / f"{name}.txt").write_text(rows)
        gt_dir = Path(tmp) / "gt"
        gt_dir.mkdir()
        for name in results:
            (gt_dir / name).symlink_to((gt / name).resolve())
        return evaluate(gt_dir, tmp)["scores"]


def objective(scores: dict[str, dict], names: list[str], peers: dict[str, dict[str, dict]]) -> float:
    """Good on all, not best on one: a sequence's margin is min(MOTA - the better peer's MOTA, IDF1 - the
    better peer's IDF1); the objective is the worst margin plus the mean margin over `names`."""
    margins = [min(scores[n][k] - max(p[n][k] for p in peers.values()) for k in ("MOTA", "IDF1")) for n in names]
    return float(min(margins) + np.mean(margins))


class Bench:
    """The sequences, caches and scorer of one bench run."""

    def __init__(self, out: Path, detector: Path = YOLOX) -> None:
        self.out = out
        self.seqs = build_sequences(out)
        self.frames = Frames()
        self.dets = DetectionCache(self.frames, detector)
        self._embedder: CachedEmbedder | None = None
        self._peers: dict[str, dict[str, dict]] | None = None

    @property
    def embedder(self) -> CachedEmbedder:
        if self._embedder is None:
            self._embedder = CachedEmbedder()
        return self._embedder

    def names(self, split: str | None = None) -> list[str]:
        return [s.name for s in self.seqs if split is None or s.split == split]

    def tracklink(self, kind: str, params: dict, split: str | None = None) -> dict[str, dict]:
        seqs = [s for s in self.seqs if split is None or s.split == split]
        embedder = self.embedder if kind == "botsort" else None
        return score(self.out / "gt", {s.name: run_tracklink(s, self.frames, self.dets, embedder, kind, params)
                                       for s in seqs})

    def peer(self, kind: str) -> dict[str, dict]:
        return score(self.out / "gt", {s.name: run_peer(s, self.frames, self.dets, kind) for s in self.seqs})

    @property
    def peers(self) -> dict[str, dict[str, dict]]:
        if self._peers is None:
            self._peers = {f"peer {kind}": self.peer(kind) for kind in ("bytetrack", "botsort")}
        return self._peers


# ------------------------------------------------------------------------------------------------ stages


def start_point(kind: str) -> dict:
    """ByteTrack's published thresholds, the rest from ultralytics' YAML, no report gate."""
    from tracklink.app.track import ultralytics_tracker_yaml

    yaml = ultralytics_tracker_yaml(kind)
    return {**{k: yaml[k] for k in GRID if k in yaml}, **PEER_DETECTOR, **PEER_TRACKER, "strict_iou": None,
            "report_thresh": None, "report_motion": 0.5}


def sweep(bench: Bench, kind: str, rounds: int, log) -> dict:
    """Coordinate descent on the tune split: each key in turn takes its best grid value."""
    best = start_point(kind)
    tune = bench.names("tune")
    memo: dict[str, float] = {}

    def evaluate(params: dict) -> float:
        key = json.dumps(params, sort_keys=True)
        if key not in memo:
            memo[key] = objective(bench.tracklink(kind, params, "tune"), tune, bench.peers)
            log({"kind": kind, "params": params, "objective": round(memo[key], 4)})
        return memo[key]

    best_value = evaluate(best)
    for _ in range(rounds):
        changed = False
        for key, values in GRID.items():
            if key not in best:
                continue  # a key of the other tracker (gmc_method)
            for value in values:
                trial = {**best, key: value}
                if trial["track_low_thresh"] > trial["track_high_thresh"]:
                    continue
                v = evaluate(trial)
                if v > best_value + 1e-6:
                    best, best_value, changed = trial, v, True
        if not changed:
            break
    return {"kind": kind, "params": best, "objective": best_value, "evaluations": len(memo)}


def gate_effect(bench: Bench, kind: str, params: dict) -> dict:
    """The given values with the report gate on and off, every sequence."""
    on = bench.tracklink(kind, params)
    off = bench.tracklink(kind, {**params, "report_thresh": None})
    keys = ("MOTA", "IDF1", "HOTA", "IDP", "FP", "FN")
    return {name: {"on": {k: on[name][k] for k in keys}, "off": {k: off[name][k] for k in keys}}
            for name in bench.names()}


def cli_tracklink(bench: Bench, label: str, tracker: str | None, extra: list[str]) -> dict[str, dict]:
    """`tracklink batch` over every sequence (one camera each) and `tracklink eval-mot` on its files."""
    run_dir = bench.out / f"cli-{label}"
    cmd = [sys.executable, "-m", "tracklink", "batch", *[f"{s.name}={s.folder}" for s in bench.seqs],
           "--detector", f"yolox:{YOLOX}", "--reid", str(OSNET), "--out", str(run_dir), "--fresh",
           "--no-progress", "--threads", "1", *(["--tracker", tracker] if tracker else []), *extra]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    ev = [sys.executable, "-m", "tracklink", "eval-mot", "--gt", str(bench.out / "gt"), "--pred", str(run_dir),
          "--json"]
    print("$", " ".join(ev), flush=True)
    done = subprocess.run(ev, check=True, cwd=REPO, capture_output=True, text=True)
    return json.loads(done.stdout)["scores"]


def verdict(after: dict, peers: dict[str, dict]) -> dict:
    """The done-when test per sequence: within 0.02 of the better peer on MOTA and IDF1; beats both."""
    best = {k: max(p[k] for p in peers.values()) for k in ("MOTA", "IDF1")}
    within = all(after[k] >= best[k] - 0.02 for k in best)
    beats = all(after[k] > best[k] for k in best)
    return {"within_0.02": within, "beats_both": beats}


def print_table(bench: Bench, columns: dict[str, dict[str, dict]], after: str) -> list[str]:
    names = list(columns)
    lines = ["| sequence | split | " + " | ".join(f"{n} MOTA / IDF1 / HOTA" for n in names)
             + " | within 0.02 | beats both |", "|---" * (len(names) + 4) + "|"]
    peers = {n: c for n, c in columns.items() if n.startswith("peer")}
    wins = 0
    for s in bench.seqs:
        cells = []
        for n in names:
            r = columns[n].get(s.name)
            cells.append(f"{r['MOTA']:.3f} / {r['IDF1']:.3f} / {r['HOTA']:.3f}" if r else "-")
        v = verdict(columns[after][s.name], {n: p[s.name] for n, p in peers.items()})
        wins += v["beats_both"]
        lines.append(f"| {s.name} | {s.split} | " + " | ".join(cells)
                     + f" | {'yes' if v['within_0.02'] else 'NO'} | {'yes' if v['beats_both'] else 'no'} |")
    lines.append(f"beats both peers on MOTA and IDF1: {wins} of {len(bench.seqs)} sequences")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("sweep", "gate", "try", "table"))
    p.add_argument("--out", type=Path, default=REPO / "runs" / "tracking")
    p.add_argument("--kinds", default="bytetrack,botsort", help="tracker kinds to sweep")
    p.add_argument("--rounds", type=int, default=2, help="coordinate-descent rounds")
    p.add_argument("--label", default="after", help="table: name of this run of tracklink's defaults")
    p.add_argument("--tracker", default=None, help="table: pass --tracker to tracklink batch")
    p.add_argument("--before", default="", help="table: comma-separated labels of earlier runs to show")
    p.add_argument("--detector", type=Path, default=YOLOX,
                   help="sweep/gate/try: the YOLOX ONNX for every tracker, peers included (e.g. an INT8 one)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="gate: change one of the defaults first (e.g. new_track_thresh=0.25)")
    args = p.parse_args(argv)
    if not YOLOX.is_file() or not OSNET.is_file():
        raise SystemExit(f"shared models not found under {ASSETS / 'models'}")
    args.out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.out, args.detector)
    log_file = (args.out / f"{args.stage}.jsonl").open("a")

    def log(record: dict) -> None:
        print(json.dumps(record), flush=True)
        log_file.write(json.dumps(record) + "\n")

    if args.stage == "sweep":
        for kind in args.kinds.split(","):
            best = sweep(bench, kind, args.rounds, log)
            best["check"] = objective(bench.tracklink(kind, best["params"], "check"), bench.names("check"),
                                      bench.peers)
            log({"best": best})
    elif args.stage == "try":
        kind, params = _defaults_with(args.tracker, args.set)
        columns = {"try": bench.tracklink(kind, params), **bench.peers}
        log({"try": columns["try"], "params": params})
        print("\n".join(print_table(bench, columns, "try")))
    elif args.stage == "gate":
        kind, params = _defaults_with(args.tracker, args.set)
        effect = gate_effect(bench, kind, params)
        log({"gate": effect, "params": params})
        print(f"| sequence | gate off MOTA / IDF1 / precision / FP | gate on (report_thresh {params['report_thresh']}) |")
        print("|---|---|---|")
        for name, r in effect.items():
            print(f"| {name} | " + " | ".join(f"{r[w]['MOTA']:.3f} / {r[w]['IDF1']:.3f} / {r[w]['IDP']:.2f} / "
                                              f"{r[w]['FP']:.0f}" for w in ("off", "on")) + " |")
    else:
        scores = {args.label: cli_tracklink(bench, args.label, args.tracker, [])}
        (args.out / f"scores-{args.label}.json").write_text(json.dumps(scores[args.label], indent=1))
        columns = {lab: json.loads((args.out / f"scores-{lab}.json").read_text())
                   for lab in args.before.split(",") if lab}
        columns.update(scores)
        columns.update(bench.peers)
        print("\n".join(print_table(bench, columns, args.label)))
    return 0


def _defaults_with(tracker: str | None, changes: list[str]) -> tuple[str, dict]:
    """The tracker kind and tracklink's default values for it, with KEY=VALUE changes applied."""
    from tracklink.app.session import DEFAULT_TRACKER
    from tracklink.app.track import TrackerConfig

    tcfg = TrackerConfig(tracker or DEFAULT_TRACKER, family="yolox").args()
    params = {**{k: getattr(tcfg, k) for k in GRID if hasattr(tcfg, k)}, **_detector_defaults()}
    params.update({k: json.loads(v) if v[:1].isdigit() or v == "null" else v
                   for k, v in (item.split("=", 1) for item in changes)})
    return tcfg.tracker_type, params


def _detector_defaults() -> dict:
    from tracklink.app.detect import DetectorConfig

    d = DetectorConfig.for_detector(f"yolox:{YOLOX}")
    return {"conf": d.conf, "iou": d.iou, "strict_iou": d.strict_iou}


if __name__ == "__main__":
    sys.exit(main())
