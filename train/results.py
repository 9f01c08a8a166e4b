"""A training run's results beside its weights: results.csv (one row per epoch) and results.png (its curves).

Both are rewritten whole from the run's history after every epoch, so a resumed run never holds duplicate
rows. The figure is drawn on matplotlib's Agg canvas (`Figure`, not pyplot): no display, no global state.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from tracklink.utils.files import atomic_write

CSV_NAME = "results.csv"
PNG_NAME = "results.png"
# Held-out retrieval curves: (title, [(history key, legend label)]).
EVAL_PANELS = (
    ("held-out rank-1", [("eval_image_rank1", "image"), ("eval_tracklet_rank1", "tracklet")]),
    ("held-out mAP", [("eval_image_mAP", "image"), ("eval_tracklet_mAP", "tracklet")]),
    ("held-out link calibration", [("link_threshold", "threshold"), ("link_f1", "pairwise F1")]),
)


def _columns(history: Sequence[dict[str, Any]]) -> list[str]:
    """Every scalar key, in order of first appearance (epoch 0 has only the evaluation, epoch 1 adds losses)."""
    columns: list[str] = []
    for record in history:
        columns += [k for k, v in record.items() if k not in columns and isinstance(v, (int, float))]
    return columns


def write_results_csv(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """One row per epoch; a value an epoch did not have (losses at epoch 0) is left empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(history), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return atomic_write(path, buffer.getvalue())


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    rows = [r for r in history if isinstance(r.get(key), (int, float))]
    return [r["epoch"] for r in rows], [float(r[key]) for r in rows]


def loss_keys(history: Sequence[dict[str, Any]]) -> list[str]:
    """The per-epoch mean of each loss part (mean_loss first), without the learning rate or a part that only
    repeats the total."""
    keys = [k for k in _columns(history) if k.startswith("mean_") and k != "mean_lr"]
    total = _series(history, "mean_loss")
    keys = [k for k in keys if k == "mean_loss" or _series(history, k) != total]
    return sorted(keys, key=lambda k: (k != "mean_loss", k))


def best_epoch(history: Sequence[dict[str, Any]], key: str) -> int | None:
    """The first trained epoch (> 0) with the highest `key`, as training picks best.pt; None without it."""
    epochs, values = _series([r for r in history if r["epoch"] > 0], key)
    return epochs[values.index(max(values))] if values else None


def plot_results(history: Sequence[dict[str, Any]], path: str | Path, title: str = "",
                 best_by: str | None = None) -> Path:
    """A grid of small panels: one per loss part, then held-out rank-1 and mAP when the run evaluated; a
    dashed line marks the epoch kept as best.pt (the best `best_by`)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels: list[tuple[str, list[tuple[str, str]]]] = [(k.removeprefix("mean_"), [(k, "train")])
                                                       for k in loss_keys(history)]
    panels += [(name, lines) for name, lines in EVAL_PANELS if any(_series(history, k)[0] for k, _ in lines)]
    cols = min(4, max(1, len(panels)))
    rows = -(-len(panels) // cols) if panels else 1
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows), dpi=100, layout="constrained")
    for i, (name, lines) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for key, label in lines:
            epochs, values = _series(history, key)
            if epochs:
                ax.plot(epochs, values, marker="o", markersize=3, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if name.startswith("held-out"):
            ax.set_ylim(0, 1.02)
            best = best_epoch(history, best_by) if best_by else None
            if best is not None:
                ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best.pt (epoch {best})")
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def write_results(history: Sequence[dict[str, Any]], out: str | Path, title: str = "",
                  best_by: str | None = None) -> tuple[Path, Path]:
    out = Path(out)
    return write_results_csv(history, out / CSV_NAME), plot_results(history, out / PNG_NAME, title, best_by)


__all__ = ["CSV_NAME", "PNG_NAME", "best_epoch", "loss_keys", "plot_results", "write_results", "write_results_csv"]
