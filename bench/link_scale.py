"""Linking at scale (issue 10): batch clustering and online linking of 10^3 to 10^6 synthetic tracklets.

Data (tests/synthetic_tracklets.py): 512-d tracklets of P people x 8 cameras over 24 h, each person seen
once by each camera, at the threshold that separates the two populations. Each configuration runs in a
subprocess of its own, so its peak RSS (`ru_maxrss`) is its own; "data" is the peak before linking starts
(the tracklets themselves), "peak" the peak of the whole run.

- batch: `cluster_tracklets`, method "graph" (the k-nearest-neighbour graph) and "exact" (the dense
  reference) where it fits in memory; the graph method's partition is compared with the exact one's;
- online: `OnlineLinker.link_many` with the tracklets in order of their end, 8 per call, each linked once;
  the CPU time of a call (thread time: online faiss calls are single-threaded) is shared by its tracklets;
  mean link time over the first and last 1,000, and the
  linker's own counts of work per link. With --ttl also with a gallery TTL. A call is one pipeline step,
  in which two tracklets never join one identity; at 1,000 tracklets 8 of them span about 11 minutes of
  the day, so a person's tracklets often share a call and the F1 there is low by construction (0.996 at
  1 a call); at 100,000 a call spans about 7 s.

Prints one JSON object per configuration as it finishes, then a Markdown table.

    .venv/bin/python bench/link_scale.py --sizes 1000 10000 100000 [--exact-max 10000] [--ttl 3600]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the data generator is a test helper

from synthetic_tracklets import THRESHOLD, pairwise_f1, synthetic_tracklets  # noqa: E402

from tracklink.app.link import LinkConfig, OnlineLinker, cluster_tracklets  # noqa: E402


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def run_batch(n: int, method: str, labels_out: str | None) -> dict:
    tracklets, truth = synthetic_tracklets(n)
    data_gb = _peak_gb()
    start = time.perf_counter()
    ids = cluster_tracklets(tracklets, LinkConfig(THRESHOLD), method=method)
    seconds = time.perf_counter() - start
    labels = np.array([ids[t.key] for t in tracklets])
    if labels_out:
        np.save(labels_out, labels)
    return {"mode": "batch", "method": method, "tracklets": len(tracklets), "seconds": round(seconds, 2),
            "data_gb": round(data_gb, 2), "peak_gb": round(_peak_gb(), 2),
            "f1_vs_truth": round(pairwise_f1(labels, truth), 4), "identities": int(len(np.unique(labels)))}


def run_online(n: int, ttl: float | None, per_call: int = 8) -> dict:
    tracklets, truth = synthetic_tracklets(n)
    data_gb = _peak_gb()
    order = sorted(tracklets, key=lambda t: t.end_time)
    linker = OnlineLinker(LinkConfig(THRESHOLD, gallery_ttl=ttl))
    per_link = np.empty(len(order))
    start = time.perf_counter()
    for i in range(0, len(order), per_call):
        t0 = time.thread_time()  # CPU time of this thread: on shared cores wall time mostly measures the others
        linker.link_many(order[i:i + per_call])
        per_link[i:i + per_call] = (time.thread_time() - t0) / len(order[i:i + per_call])
    seconds = time.perf_counter() - start
    first, last = per_link[:1000].mean() * 1e3, per_link[-1000:].mean() * 1e3
    labels = np.array([t.global_id for t in tracklets])
    stats = linker.stats
    return {"mode": "online", "method": f"ttl {ttl:g} s" if ttl else "no ttl", "tracklets": len(order),
            "seconds": round(seconds, 2), "data_gb": round(data_gb, 2), "peak_gb": round(_peak_gb(), 2),
            "first_1000_ms": round(first, 3), "last_1000_ms": round(last, 3), "last_over_first": round(last / first, 2),
            "scored_per_link": round(stats["scored"] / stats["links"], 1),
            "checks_per_link": round(stats["checks"] / stats["links"], 2),
            "in_index_at_end": len(linker.searchable), "f1_vs_truth": round(pairwise_f1(labels, truth), 4)}


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| tracklets | mode | method | seconds | peak RSS (data) | notes |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["mode"] == "batch":
            notes = f"F1 vs truth {r['f1_vs_truth']}"
            if "f1_vs_exact" in r:
                notes += f", vs exact {r['f1_vs_exact']}"
        else:
            notes = (f"{r['first_1000_ms']} / {r['last_1000_ms']} ms CPU a link (first / last 1,000), "
                     f"{r['scored_per_link']} scores and {r['checks_per_link']} checks a link, "
                     f"F1 vs truth {r['f1_vs_truth']}")
        lines.append(f"| {r['tracklets']:,} | {r['mode']} | {r['method']} | {r['seconds']} | "
                     f"{r['peak_gb']} GB ({r['data_gb']}) | {notes} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--exact-max", type=int, default=10000, help="largest size the exact method runs at")
    p.add_argument("--modes", nargs="+", default=["batch", "online"], choices=["batch", "online"])
    p.add_argument("--ttl", type=float, default=None, help="also run online linking with this gallery TTL")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, n, option = args.child[0], int(args.child[1]), args.child[2] if len(args.child) > 2 else None
        result = run_batch(n, option, args.child[3] if len(args.child) > 3 else None) if kind == "batch" \
            else run_online(n, float(option) if option not in (None, "none") else None)
        print(json.dumps(result))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            if "batch" in args.modes:
                graph = _child(["batch", str(n), "graph", f"{tmp}/graph.npy"])
                if n <= args.exact_max:
                    exact = _child(["batch", str(n), "exact", f"{tmp}/exact.npy"])
                    graph["f1_vs_exact"] = round(pairwise_f1(np.load(f"{tmp}/graph.npy"), np.load(f"{tmp}/exact.npy")), 4)
                    rows.append(exact)
                    print(json.dumps(exact), flush=True)
                rows.append(graph)
                print(json.dumps(graph), flush=True)
            if "online" in args.modes:
                for ttl in ["none"] + ([f"{args.ttl:g}"] if args.ttl else []):
                    rows.append(_child(["online", str(n), ttl]))
                    print(json.dumps(rows[-1]), flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
