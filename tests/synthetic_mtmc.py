"""A semi-synthetic two-camera scene with known global identities (issue 4, acceptance item 3).

Real people on synthetic backgrounds: each person is a shared PKU-Reid identity, whose 48x128 crops are
pasted, scaled up, walking across the frames of two "cameras". Camera k shows only that person's crops
from PKU camera 0k, so the cross-camera appearance change (light, colour, viewpoint) is the real one of the
dataset; the orientation shown changes as the person walks. Some people appear in both cameras, some in one
only, and they enter and leave at different times, several at once, sometimes crossing.

The backgrounds are smooth random textures (a tinted low-frequency field plus fine noise, one per camera)
instead of real street frames, which would hold real, unlabelled people. Written in MOTChallenge layout:

    DST/<camera>/img1/000001.jpg ...   frames
    DST/<camera>/seqinfo.ini
    DST/<camera>/gt/gt.txt             frame,global_id,x,y,w,h,1,1,visibility

so `tracklink batch DST/cam1 DST/cam2` runs on it and `tracklink eval-mot --gt DST --multi-camera` scores it.
Boxes are the pasted crop rectangles, clipped to the frame (PKU crops are tight: the person spans the crop).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

CAMERAS = ("cam1", "cam2")
FRAME_SIZE = (640, 360)  # (W, H): small, so a test runs in seconds on a CPU
FPS = 10.0
CROP_SIZE = (48, 128)  # (W, H) of the PKU crops


@dataclass(frozen=True)
class Walk:
    """One person crossing one camera: in view from frame `start` (1-based) for `frames` frames."""

    person: int  # global id, 1-based; the person is the `person`-th id of the chosen PKU ids
    camera: int  # 0 or 1: CAMERAS[camera], showing the person's PKU camera 01 or 02 crops
    start: int
    frames: int
    left_to_right: bool
    foot_y: int  # y of the box bottom (a lane: nearer the camera is lower)
    scale: float  # crop size multiplier (1.5: 72x192 px)


# Eight people over 90 frames (9 s at 10 fps) per camera: 1-5 cross both cameras (camera 2 a few seconds
# later), 6 and 7 only camera 1, 8 only camera 2. Lanes differ so people pass in front of each other.
DEFAULT_WALKS: tuple[Walk, ...] = (
    Walk(1, 0, 1, 40, True, 300, 1.50), Walk(1, 1, 41, 40, False, 320, 1.55),
    Walk(2, 0, 8, 45, False, 340, 1.60), Walk(2, 1, 50, 38, True, 300, 1.45),
    Walk(3, 0, 20, 50, True, 330, 1.55), Walk(3, 1, 5, 35, True, 340, 1.60),
    Walk(4, 0, 45, 42, False, 310, 1.45), Walk(4, 1, 15, 45, False, 300, 1.50),
    Walk(5, 0, 55, 35, True, 350, 1.65), Walk(5, 1, 1, 30, False, 350, 1.60),
    Walk(6, 0, 1, 35, False, 320, 1.50),
    Walk(7, 0, 30, 45, False, 300, 1.45),
    Walk(8, 1, 25, 50, True, 330, 1.55),
)
DEFAULT_FRAMES = 90
FRAMES_PER_ORIENTATION = 5  # the shown PKU orientation (1-8) changes this often while walking


@dataclass
class Scene:
    root: Path
    cameras: dict[str, Path]  # camera name -> sequence folder
    people: dict[int, str]  # global id -> PKU id
    walks: tuple[Walk, ...]


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


def walk_box(walk: Walk, frame: int, size: tuple[int, int] = FRAME_SIZE) -> tuple[float, float, float, float] | None:
    """xyxy of the person at `frame` (unclipped), or None when out of view at that frame."""
    k = frame - walk.start
    if not 0 <= k < walk.frames:
        return None
    w, h = CROP_SIZE[0] * walk.scale, CROP_SIZE[1] * walk.scale
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


def build_scene(pku_dir: Path, dst: Path, ids: Sequence[str] | None = None,
                walks: Sequence[Walk] = DEFAULT_WALKS, frames: int = DEFAULT_FRAMES, seed: int = 0) -> Scene:
    """Render the walks into DST/<camera>/ (MOTChallenge layout); returns where everything is.

    `ids` are PKU ids for global ids 1, 2, ...; by default every 5th of the sorted ids, so the people
    are a spread of the dataset rather than its first few.
    """
    pku_dir, dst = Path(pku_dir), Path(dst)
    everyone = sorted(p.name for p in pku_dir.iterdir() if p.is_dir())
    n_people = max(w.person for w in walks)
    chosen = list(ids) if ids is not None else everyone[::5][:n_people]
    if len(chosen) < n_people:
        raise ValueError(f"{n_people} people need {n_people} PKU ids, got {len(chosen)}")
    crops = {(p, cam): [cv2.imread(str(pku_dir / chosen[p - 1] / f"0{cam + 1}_{k}.png")) for k in range(1, 9)]
             for p in range(1, n_people + 1) for cam in range(len(CAMERAS))}
    missing = [k for k, images in crops.items() if any(im is None for im in images)]
    if missing:
        raise FileNotFoundError(f"PKU crops missing for (person, camera) {missing} under {pku_dir}")
    rng = np.random.default_rng(seed)
    tints = ((1.0, 0.95, 0.9), (0.85, 0.95, 1.1))  # a cool and a warm camera
    cameras = {}
    for cam, name in enumerate(CAMERAS):
        seq = dst / name
        (seq / "img1").mkdir(parents=True, exist_ok=True)
        (seq / "gt").mkdir(exist_ok=True)
        bg = background(seed * 10 + cam, tints[cam])
        # Each person starts at a random orientation, so cameras do not line up orientation by orientation.
        phase = {w: int(rng.integers(8)) for w in walks if w.camera == cam}
        rows = []
        for f in range(1, frames + 1):
            image = bg.copy()
            # Far lanes first, so nearer people are drawn over them.
            visible = sorted((w for w in walks if w.camera == cam and walk_box(w, f) is not None),
                             key=lambda w: w.foot_y)
            drawn: list[tuple[Walk, tuple[int, ...]]] = []
            for w in visible:
                k = (phase[w] + (f - w.start) // FRAMES_PER_ORIENTATION) % 8
                box = _paste(image, crops[(w.person, cam)][k], walk_box(w, f))
                if box is not None:
                    drawn.append((w, box))
            for i, (w, box) in enumerate(drawn):
                x1, y1, x2, y2 = box
                vis = _visible(box, [b for _, b in drawn[i + 1:]])
                rows.append(f"{f},{w.person},{x1},{y1},{x2 - x1},{y2 - y1},1,1,{vis:.3f}\n")
            cv2.imwrite(str(seq / "img1" / f"{f:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        (seq / "gt" / "gt.txt").write_text("".join(rows))
        (seq / "seqinfo.ini").write_text(
            f"[Sequence]\nname={name}\nimDir=img1\nframeRate={FPS:g}\nseqLength={frames}\n"
            f"imWidth={FRAME_SIZE[0]}\nimHeight={FRAME_SIZE[1]}\nimExt=.jpg\n")
        cameras[name] = seq
    return Scene(dst, cameras, {p: chosen[p - 1] for p in range(1, n_people + 1)}, tuple(walks))


__all__ = ["CAMERAS", "DEFAULT_WALKS", "Scene", "Walk", "background", "build_scene", "walk_box"]
