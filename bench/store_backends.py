"""The same batch run into SQLite and into PostgreSQL (issue 10): pipeline speed, and store write rates.
Prints one JSON object.

Two parts, each per backend:
- `batch`: `tracklink batch`'s own code path (`run_batch`) with the real YOLOX and OSNet on MOT17-mini cameras
  (480x360, played back and forth to --frames frames), into a fresh store; the pipeline's camera-frames/s
  (busy and wall time, from summary.json), the store stage's seconds, and the appearance rows the run wrote
  per second of that stage. Runs alternate between the backends --repeat times; the fastest run of each is
  kept (the CPU is shared: the fastest is the least disturbed).
- `writes`: the store alone: --rows synthetic appearance rows added 25 per call (a crowded frame) with
  `maybe_commit` after each call, as the pipeline does, then a final commit; rows per second.

PostgreSQL is a throwaway local server (initdb/pg_ctl, as the tests start it) unless --db names one; each
run gets a new database. Over a network the server's round trip adds to each commit.

    .venv/bin/python bench/store_backends.py [--cameras 2] [--frames 150] [--repeat 3] [--rows 200000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO.parent / "shared" / "assets"
SEQUENCES = ("MOT17-04-FRCNN", "MOT17-11-FRCNN", "MOT17-13-FRCNN", "MOT17-02-FRCNN")


def batch_once(db: str, videos: list[Path], out: Path, args: argparse.Namespace) -> dict:
    from tracklink.app.batch import BatchOptions, run_batch
    from tracklink.app.store import open_store

    options = BatchOptions([f"cam{k + 1}={v}" for k, v in enumerate(videos)], out=str(out), db=db,
                           detector=f"yolox:{args.detector}", reid=str(args.reid), fresh=True, progress=False,
                           threads=args.threads)
    with contextlib.redirect_stderr(io.StringIO()):
        summary = run_batch(options)
    if summary["errors"]:
        raise SystemExit(f"batch failed: {summary['errors']}")
    with open_store(db) as store:
        rows = sum(1 for name in summary["cameras"] for _ in store.appearances(name))
    store_s = summary["seconds"]["store"]
    return {"fps": {k: summary["fps"][k] for k in ("pipeline", "overall", "store")},
            "camera_frames": summary["frames_processed"], "store_s": store_s, "appearance_rows": rows,
            "appearance_rows_per_store_s": round(rows / store_s) if store_s else None,
            "tracklets": summary["tracklets"], "identities": summary["identities"]}


def writes_once(db: str, rows: int) -> dict:
    from tracklink.app.records import Track
    from tracklink.app.store import CameraRecord, open_store

    per_call = 25
    box = np.array([10, 20, 50, 120], np.float32)
    with open_store(db) as store:
        store.start_camera(CameraRecord("cam", "synthetic", "fp", "running"))
        t0 = time.perf_counter()
        for frame in range(1, rows // per_call + 1):
            store.add_appearances([Track("cam", frame, frame / 30, tid, box, 0.9) for tid in range(per_call)])
            store.maybe_commit()
        store.commit()
        seconds = time.perf_counter() - t0
    return {"rows": rows // per_call * per_call, "seconds": round(seconds, 3),
            "rows_per_s": round(rows // per_call * per_call / seconds)}


class Databases:
    """New, empty stores: SQLite files in a temp folder, PostgreSQL databases on one server."""

    def __init__(self, root: Path, url: str | None):
        self.root, self.url, self.server, self.n = root, url, None, 0
        if url is None:
            sys.path.insert(0, str(REPO / "tests"))
            from fixtures_postgres import PostgresServer, postgres_bindir

            bindir = postgres_bindir()
            if bindir is None:
                raise SystemExit("no PostgreSQL server binaries: apt-get install postgresql, or pass --db URL")
            self.server = PostgresServer(bindir)
            self.server.start()

    def new(self, backend: str) -> str:
        self.n += 1
        if backend == "sqlite":
            return str(self.root / f"s{self.n}.db")
        if self.server is not None:
            return self.server.new_database()
        import psycopg

        name = f"tracklink_bench_{os.getpid()}_{self.n}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mot", type=Path, default=ASSETS / "mot" / "MOT17-mini")
    p.add_argument("--detector", type=Path, default=ASSETS / "models" / "yolox_nano.onnx", help="YOLOX ONNX")
    p.add_argument("--reid", type=Path, default=ASSETS / "models" / "osnet_x0_25_msmt17.onnx")
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument("--frames", type=int, default=150, help="frames per camera")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per model")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--rows", type=int, default=200_000, help="appearance rows of the store-only part")
    p.add_argument("--db", default=None, help="postgresql:// URL of a server that may create databases "
                                              "(default: a throwaway local one)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO / "bench"))
    from pipeline_speed import make_video

    logging.disable(logging.WARNING)
    report: dict = {"cpus": os.cpu_count(), "load_avg_1m_before": round(os.getloadavg()[0], 2),
                    "input": {"cameras": args.cameras, "frames_per_camera": args.frames, "size": [480, 360]},
                    "threads": args.threads, "repeat": args.repeat}
    with tempfile.TemporaryDirectory(prefix="tracklink-stores-") as tmp:
        root = Path(tmp)
        videos = [make_video(args.mot / SEQUENCES[k % len(SEQUENCES)], root / f"cam{k + 1}.mp4", (480, 360),
                             args.frames) for k in range(args.cameras)]
        databases = Databases(root, args.db)
        try:
            runs: dict[str, list[dict]] = {"sqlite": [], "postgresql": []}
            for r in range(args.repeat):
                for backend in runs:
                    runs[backend].append(batch_once(databases.new(backend), videos, root / f"out-{r}", args))
            report["batch"] = {b: {**max(rs, key=lambda x: x["fps"]["overall"]),
                                   "overall_fps_runs": [x["fps"]["overall"] for x in rs]} for b, rs in runs.items()}
            report["writes"] = {b: max((writes_once(databases.new(b), args.rows) for _ in range(2)),
                                       key=lambda x: x["rows_per_s"]) for b in runs}
        finally:
            databases.close()
    sqlite, pg = (report["batch"][b]["fps"]["overall"] for b in ("sqlite", "postgresql"))
    report["postgresql_vs_sqlite_overall_fps"] = round(pg / sqlite, 3)
    report["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
