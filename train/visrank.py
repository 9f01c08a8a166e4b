"""Ranked-gallery sheets: a query image, then its top-N gallery images, framed green when they are the same
person and red when not. One PNG per query, for a handful of queries spread over the query set.

Image level and the plain protocol (cosine similarity, other cameras only), the ranking `cmc_map` scores.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tracklink.models.preprocess import read_image
from tracklink.train.evaluate import EmbeddedSplits
from tracklink.train.metrics import allowed_pairs
from tracklink.utils.files import atomic_write

CELL = (64, 128)  # (width, height) of each picture, a person's aspect
BORDER, GAP, HEADER = 4, 6, 20
CORRECT, WRONG, QUERY = (40, 170, 40), (40, 40, 220), (160, 160, 160)  # BGR


def _cell(path: str, colour: tuple[int, int, int], caption: str) -> np.ndarray:
    w, h = CELL
    image = cv2.resize(read_image(path), (w, h), interpolation=cv2.INTER_AREA)
    framed = cv2.copyMakeBorder(image, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_CONSTANT, value=colour)
    cell = np.full((HEADER + framed.shape[0], framed.shape[1], 3), 255, np.uint8)
    cell[HEADER:] = framed
    cv2.putText(cell, caption, (2, HEADER - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
    return cell


def _sheet(cells: list[np.ndarray]) -> np.ndarray:
    gap = np.full((cells[0].shape[0], GAP, 3), 255, np.uint8)
    parts = [cells[0], gap, gap]  # a wider gap after the query
    for cell in cells[1:]:
        parts += [cell, gap]
    return np.concatenate(parts, axis=1)


def pick_queries(valid: np.ndarray, count: int) -> np.ndarray:
    """`count` query indices spread evenly over the valid ones (deterministic, every identity has a chance)."""
    if len(valid) <= count:
        return valid
    return valid[np.unique(np.linspace(0, len(valid) - 1, count).round().astype(int))]


def write_visrank(splits: EmbeddedSplits, out_dir: str | Path, top_n: int = 10, num_queries: int = 10) -> list[Path]:
    """One sheet per chosen query: the query, then its top_n gallery images by similarity; returns the files."""
    q_pid, q_cam = splits.frame_labels("query")
    g_pid, g_cam = splits.frame_labels("gallery")
    q_paths, g_paths = splits.frame_paths("query"), splits.frame_paths("gallery")
    allowed = allowed_pairs(q_cam, g_cam, 0, len(q_pid), splits.same_set)
    valid = np.flatnonzero(((g_pid[None, :] == q_pid[:, None]) & allowed).any(axis=1))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    q = splits.q.feats / np.maximum(np.linalg.norm(splits.q.feats, axis=1, keepdims=True), 1e-12)
    g = splits.g.feats / np.maximum(np.linalg.norm(splits.g.feats, axis=1, keepdims=True), 1e-12)
    written = []
    for n, i in enumerate(pick_queries(valid, num_queries), start=1):
        sim = np.where(allowed[i], g @ q[i], -np.inf)
        top = np.argsort(-sim, kind="stable")[:min(top_n, int(allowed[i].sum()))]
        cells = [_cell(q_paths[i], QUERY, f"query {q_pid[i]}")]
        cells += [_cell(g_paths[j], CORRECT if g_pid[j] == q_pid[i] else WRONG, f"#{r} {sim[j]:.2f}")
                  for r, j in enumerate(top, start=1)]
        ok, png = cv2.imencode(".png", _sheet(cells))
        path = out_dir / f"{n:02d}_query_{q_pid[i]}_cam{q_cam[i]}_{Path(q_paths[i]).stem}.png"
        written.append(atomic_write(path, png.tobytes()))
    return written


__all__ = ["pick_queries", "write_visrank"]
