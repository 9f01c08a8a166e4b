"""Semi-synthetic multi-camera footage with known identities: real people walking over person-free textures.

Each person is a set of real crops, pasted (scaled) so that they walk across the frames of several
"cameras"; people enter and leave at different times, several at once, passing in front of each other. The
backgrounds are smooth random textures (a tinted low-frequency field, a floor gradient and fine noise, one
tint per camera) rather than real street frames, which would hold real, unlabelled people. Written in
MOTChallenge layout, so `tracklink batch` reads it and `tracklink eval-mot` scores it:

    DST/<camera>/img1/000001.jpg ...   frames
    DST/<camera>/seqinfo.ini
    DST/<camera>/gt/gt.txt             frame,global_id,x,y,w,h,1,1,visibility

`tracklink demo` renders its footage with this; the test suite renders its MTMC scenes from PKU-Reid crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

FRAME_SIZE = (640, 360)  # (W, H): small, so a scene runs in seconds on a CPU


@dataclass(frozen=True)
class Walk:
    """One person crossing one camera: in view from frame `start` (1-based) for `frames` frames."""

    person: int  # global id, 1-based
    camera: int  # index into the scene's cameras
    start: int
    frames: int
    left_to_right: bool
    foot_y: int  # y of the box bottom (a lane: nearer the camera is lower)
    scale: float  # crop size multiplier


# crop_for(walk, frame) -> the BGR crop that shows the walker at that frame
CropFn = Callable[[Walk, int], np.ndarray]


def background(seed: int, tint: Sequence[float], size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """A smooth, person-free texture: a tinted low-frequency field, a floor gradient and fine noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    field = cv2.resize(rng.uniform(0, 1, (6, 10)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    floor = np.linspace(0.75, 1.15, h, dtype=np.float32)[:, None]
    base = (90 + 110 * field) * floor
    image = base[..., None] * np.asarray(tint, np.float32)[None, None, :]
    image += rng.normal(0, 6, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def walk_box(walk: Walk, frame: int, crop_size: tuple[int, int], size: tuple[int, int] = FRAME_SIZE
             ) -> tuple[float, float, float, float] | None:
    """xyxy of the person at `frame` (unclipped), or None when out of view at that frame."""
    k = frame - walk.start
    if not 0 <= k < walk.frames:
        return None
    w, h = crop_size[0] * walk.scale, crop_size[1] * walk.scale
    # From half out of one side to half out of the other, at constant speed.
    x0, x1 = -w / 2, size[0] - w / 2
    t = k / max(walk.frames - 1, 1)
    x = x0 + (x1 - x0) * (t if walk.left_to_right else 1 - t)
    return (x, walk.foot_y - h, x + w, float(walk.foot_y))


def _paste(image: np.ndarray, crop: np.ndarray, box: tuple[float, float, float, float]) -> tuple[int, ...] | None:
    """Scale the crop to the box and draw it, clipped to the frame; returns the clipped integer box."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    resized = cv2.resize(crop, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    h, w = image.shape[:2]
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if cx2 - cx1 < 2 or cy2 - cy1 < 2:
        return None
    image[cy1:cy2, cx1:cx2] = resized[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
    return cx1, cy1, cx2, cy2


def _visible(box: tuple[int, ...], front: list[tuple[int, ...]]) -> float:
    """Fraction of `box` not covered by the boxes drawn over it."""
    x1, y1, x2, y2 = box
    mask = np.ones((y2 - y1, x2 - x1), bool)
    for fx1, fy1, fx2, fy2 in front:
        mask[max(fy1 - y1, 0):max(fy2 - y1, 0), max(fx1 - x1, 0):max(fx2 - x1, 0)] = False
    return float(mask.mean())


def render_camera(seq: Path, camera: int, walks: Sequence[Walk], crop_for: CropFn, frames: int,
                  backdrop: np.ndarray, crop_size: tuple[int, int], fps: float) -> Path:
    """One camera's frames, ground truth and seqinfo.ini in `seq` (MOTChallenge layout)."""
    size = (backdrop.shape[1], backdrop.shape[0])
    (seq / "img1").mkdir(parents=True, exist_ok=True)
    (seq / "gt").mkdir(exist_ok=True)
    rows = []
    for f in range(1, frames + 1):
        image = backdrop.copy()
        # Far lanes first, so nearer people are drawn over them.
        visible = sorted((w for w in walks if w.camera == camera and walk_box(w, f, crop_size, size) is not None),
                         key=lambda w: w.foot_y)
        drawn: list[tuple[Walk, tuple[int, ...]]] = []
        for w in visible:
            box = _paste(image, crop_for(w, f), walk_box(w, f, crop_size, size))
            if box is not None:
                drawn.append((w, box))
        for i, (w, box) in enumerate(drawn):
            x1, y1, x2, y2 = box
            vis = _visible(box, [b for _, b in drawn[i + 1:]])
            rows.append(f"{f},{w.person},{x1},{y1},{x2 - x1},{y2 - y1},1,1,{vis:.3f}\n")
        cv2.imwrite(str(seq / "img1" / f"{f:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    (seq / "gt" / "gt.txt").write_text("".join(rows))
    (seq / "seqinfo.ini").write_text(
        f"[Sequence]\nname={seq.name}\nimDir=img1\nframeRate={fps:g}\nseqLength={frames}\n"
        f"imWidth={size[0]}\nimHeight={size[1]}\nimExt=.jpg\n")
    return seq


__all__ = ["CropFn", "FRAME_SIZE", "Walk", "background", "render_camera", "walk_box"]
