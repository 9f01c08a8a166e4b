"""The CMC curve of an evaluation as a PNG: matching rate by rank, image and tracklet level, and the
re-ranked or flip-augmented variants when they were computed (drawn on matplotlib's Agg canvas)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tracklink.utils.files import atomic_write

# Key prefix of each protocol `train.evaluate` reports -> its legend label and line style.
VARIANTS = (("", "", "-"), ("flip_", ", flip", "--"), ("rerank_", ", re-ranked", ":"),
            ("flip_rerank_", ", flip + re-ranked", "-."))


def plot_cmc(result: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Write the CMC curves found in `result` (keys like image_cmc, rerank_tracklet_cmc) to `path`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for level, colour in (("image", "tab:blue"), ("tracklet", "tab:orange")):
        for prefix, label, style in VARIANTS:
            cmc = result.get(f"{prefix}{level}_cmc")
            if not cmc:
                continue
            ranks = range(1, len(cmc) + 1)
            mean_ap = result.get(f"{prefix}{level}_mAP", float("nan"))
            ax.plot(ranks, cmc, style, color=colour, marker="o" if not prefix else None, markersize=3,
                    label=f"{level}{label}: rank-1 {cmc[0]:.3f}, mAP {mean_ap:.3f}")
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (CMC)")
    ax.set_ylim(0, 1.02)
    longest = max((len(result.get(f"{p}{lvl}_cmc") or []) for p, _, _ in VARIANTS for lvl in ("image", "tracklet")),
                  default=1)
    ax.set_xticks([1] + list(range(5, longest + 1, 5)) if longest >= 5 else list(range(1, longest + 1)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "CMC, cross-camera", fontsize=9)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


__all__ = ["plot_cmc"]
