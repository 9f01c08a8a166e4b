"""Drawing people on frames, for annotated videos and `--show` windows, with the viewer's conventions.

A box linked to a global identity is labelled `G<id>` in that identity's colour, the same colour in every camera
and in the viewer; a track not linked to anyone is grey and labelled `t<track id>`. Line width and font scale
follow the frame's size, and labels are placed so that neighbouring boxes do not write over each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from tracklink.app.records import Track

UNLINKED = (160, 160, 160)  # BGR grey, as the viewer paints an unlinked track


def color(key: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per id (golden-ratio hue steps), so an identity keeps its colour."""
    import cv2

    hue = int((key * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


@dataclass(frozen=True)
class Box:
    """One labelled box to draw."""

    xyxy: tuple[float, float, float, float]
    track_id: int
    global_id: int | None

    @property
    def label(self) -> str:
        return f"G{self.global_id}" if self.global_id is not None else f"t{self.track_id}"

    @property
    def colour(self) -> tuple[int, int, int]:
        return color(self.global_id) if self.global_id is not None else UNLINKED


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label_spot(box: tuple[int, int, int, int], size: tuple[int, int], frame: tuple[int, int],
                taken: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    """Where the label of `box` goes: above it, else inside its top, else below it, else stacked upwards;
    the first spot that no earlier label covers and that stays in the frame."""
    x1, y1, x2, y2 = box
    w, h = size
    fw, fh = frame
    x = min(max(x1, 0), max(fw - w, 0))
    for y in (y1 - h, y1, y2, *range(y1 - 2 * h, -h, -h)):
        spot = (x, y, x + w, y + h)
        if 0 <= y and y + h <= fh and not any(_overlaps(spot, t) for t in taken):
            return spot
    return (x, max(min(y1, fh - h), 0), x + w, max(min(y1, fh - h), 0) + h)


@dataclass(frozen=True)
class Style:
    """Line width and font for a frame size: readable at 360p and at 4K alike."""

    thickness: int
    scale: float

    @classmethod
    def for_frame(cls, shape: tuple[int, ...]) -> "Style":
        side = min(shape[:2])
        return cls(thickness=max(2, round(side / 360)), scale=max(0.45, side / 800))


def layout_labels(boxes: Sequence[Box], shape: tuple[int, ...]) -> list[tuple[Box, tuple[int, int, int, int]]]:
    """Each box with its label's rectangle, nearer people (lower feet) first: their labels get the best spots."""
    import cv2

    style, (fh, fw) = Style.for_frame(shape), shape[:2]
    taken: list[tuple[int, int, int, int]] = []
    placed = []
    for b in sorted(boxes, key=lambda b: -b.xyxy[3]):
        (tw, th), base = cv2.getTextSize(b.label, cv2.FONT_HERSHEY_SIMPLEX, style.scale, style.thickness)
        x1, y1, x2, y2 = (int(round(v)) for v in b.xyxy)
        spot = _label_spot((x1, y1, x2, y2), (tw + 6, th + base + 6), (fw, fh), taken)
        taken.append(spot)
        placed.append((b, spot))
    return placed


def draw_boxes(image: np.ndarray, boxes: Sequence[Box], copy: bool = True) -> np.ndarray:
    """Boxes in their identity's colour (grey when unlinked), each with a readable label."""
    import cv2

    out = image.copy() if copy else image
    style = Style.for_frame(out.shape)
    placed = layout_labels(boxes, out.shape)
    for b, _ in placed:
        x1, y1, x2, y2 = (int(round(v)) for v in b.xyxy)
        cv2.rectangle(out, (x1, y1), (x2, y2), b.colour, style.thickness)
    for b, (sx1, sy1, sx2, sy2) in placed:  # labels last, so no box line crosses one
        (_, th), base = cv2.getTextSize(b.label, cv2.FONT_HERSHEY_SIMPLEX, style.scale, style.thickness)
        cv2.rectangle(out, (sx1, sy1), (sx2 - 1, sy2 - 1), b.colour, -1)
        cv2.putText(out, b.label, (sx1 + 3, sy2 - base - 3), cv2.FONT_HERSHEY_SIMPLEX, style.scale, (0, 0, 0),
                    style.thickness, cv2.LINE_AA)
    return out


def draw_tracks(image: np.ndarray, tracks: Sequence[Track], global_ids: Mapping[int, int | None] | None = None,
                copy: bool = True) -> np.ndarray:
    """A pipeline step's tracks, with their global ids so far (a live `--show` window)."""
    boxes = [Box(tuple(float(v) for v in t.xyxy), t.track_id, (global_ids or {}).get(t.track_id)) for t in tracks]
    return draw_boxes(image, boxes, copy)


__all__ = ["Box", "Style", "UNLINKED", "color", "draw_boxes", "draw_tracks", "layout_labels"]
