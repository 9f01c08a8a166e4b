"""Re-link every finished camera in a store at once and rewrite its identities and global ids.

Runs over all cameras of all runs and machines that wrote into the store (a SQLite file or a
postgresql:// URL), so identities agree across them. With --out, writes <camera>.txt and <camera>.global.txt
for every finished camera, in the format of `tracklink batch`. The link threshold is --link-threshold, else
the one the batch runs recorded in the store. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tracklink.app.session import add_transit_argument

if TYPE_CHECKING:
    from tracklink.app.link import LinkConfig
    from tracklink.app.store import Store

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", required=True, metavar="URL_OR_PATH",
                   help="the store: a SQLite file (e.g. out/tracklink.db) or postgresql://user@host:port/db")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="also write <camera>.txt and <camera>.global.txt for every finished camera here")
    p.add_argument("--link-threshold", type=float, default=None,
                   help="cosine similarity for linking tracklets (default: the one recorded in the store)")
    add_transit_argument(p)


def run(args: argparse.Namespace) -> int:
    from tracklink import TracklinkError
    from tracklink.app.link import LinkConfig, load_transit
    from tracklink.app.store import is_server_url, open_store

    if not is_server_url(args.db) and not Path(args.db).is_file():
        raise TracklinkError(f"no store at {args.db}; pass the tracklink.db that `tracklink batch` wrote "
                             "(in its --out) or a postgresql:// URL")
    with open_store(args.db) as store:
        transit = load_transit(args.transit) if args.transit else {}
        link = LinkConfig(threshold=store_threshold(store, args.link_threshold), transit=transit)
        summary = relink_store(store, link, args.out)
    print(json.dumps(summary, indent=2))
    return 0


def store_threshold(store: "Store", cli_value: float | None) -> float:
    """--link-threshold, else the store's recorded one; a clear error when neither exists."""
    from tracklink import TracklinkError
    from tracklink.app.store import LINK_THRESHOLD_KEY

    if cli_value is not None:
        return cli_value
    recorded = store.meta(LINK_THRESHOLD_KEY)
    if recorded is None:
        raise TracklinkError("the store records no link threshold (no `tracklink batch` has written it); "
                             "pass --link-threshold")
    return float(recorded)


def relink_store(store: "Store", link: "LinkConfig", out: str | None = None) -> dict:
    """Cluster the tracklets of every finished camera in `store`, rewrite their global ids and the identities,
    and with `out` write the MOT files; returns a summary."""
    from tracklink.app.batch import revise_identities, write_mot

    cameras = store.cameras()
    done = [c.name for c in cameras if c.status == "done"]
    unfinished = {c.name: c.status for c in cameras if c.status != "done"}
    if unfinished:
        log.warning("left out, not finished: %s", ", ".join(f"{n} ({s})" for n, s in sorted(unfinished.items())))
    tracklets, mapping = revise_identities(store, done, link)
    rows = {}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        rows = {name: write_mot(store, name, Path(out)) for name in done}
    return {"cameras": done, "left_out": unfinished, "tracklets": len(tracklets),
            "identities": len(set(mapping.values())), "link_threshold": link.threshold, "rows": rows}
