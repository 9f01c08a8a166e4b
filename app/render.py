"""Drawing tracks on frames, for annotated videos and the viewer alike."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from tracklink.app.records import Track


def color(key: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per id (golden-ratio hue steps), so an identity keeps its colour."""
    import cv2

    hue = int((key * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_tracks(image: np.ndarray, tracks: Sequence[Track], global_ids: Mapping[int, int | None] | None = None,
                copy: bool = True) -> np.ndarray:
    """Boxes coloured by global id (track id while unlinked), labelled `track_id` or `track_id:Gglobal_id`."""
    import cv2

    out = image.copy() if copy else image
    thickness = max(1, round(min(out.shape[:2]) / 400))
    for t in tracks:
        gid = (global_ids or {}).get(t.track_id)
        x1, y1, x2, y2 = (int(round(v)) for v in t.xyxy)
        c = color(gid if gid is not None else 100_000 + t.track_id)
        label = f"{t.track_id}" if gid is None else f"{t.track_id}:G{gid}"
        cv2.rectangle(out, (x1, y1), (x2, y2), c, thickness)
        scale = 0.4 * thickness
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(out, (x1, max(y1 - th - 4, 0)), (x1 + tw + 2, max(y1, th + 4)), c, -1)
        cv2.putText(out, label, (x1 + 1, max(y1 - 3, th + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return out


__all__ = ["color", "draw_tracks"]
