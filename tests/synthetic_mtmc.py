"""A semi-synthetic two-camera scene with known global identities, from PKU-Reid people (tracklink.app.scene).

Each person is a shared PKU-Reid identity, whose 48x128 crops are pasted, scaled up, walking across the frames
of two "cameras". Camera k shows only that person's crops from PKU camera 0k, so the cross-camera appearance
change (light, colour, viewpoint) is the real one of the dataset; the orientation shown changes as the person
walks. Some people appear in both cameras, some in one only, and they enter and leave at different times,
several at once, sometimes crossing. Boxes are the pasted crop rectangles, clipped to the frame (PKU crops are
tight: the person spans the crop).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from tracklink.app.scene import FRAME_SIZE, Walk, background, render_camera
from tracklink.app.scene import walk_box as _walk_box

CAMERAS = ("cam1", "cam2")
FPS = 10.0
CROP_SIZE = (48, 128)  # (W, H) of the PKU crops


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


def walk_box(walk: Walk, frame: int, size: tuple[int, int] = FRAME_SIZE) -> tuple[float, float, float, float] | None:
    """xyxy of the person at `frame` (unclipped), or None when out of view at that frame."""
    return _walk_box(walk, frame, CROP_SIZE, size)


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
        # Each person starts at a random orientation, so cameras do not line up orientation by orientation.
        phase = {w: int(rng.integers(8)) for w in walks if w.camera == cam}

        def crop_for(w: Walk, f: int) -> np.ndarray:
            return crops[(w.person, w.camera)][(phase[w] + (f - w.start) // FRAMES_PER_ORIENTATION) % 8]

        cameras[name] = render_camera(dst / name, cam, walks, crop_for, frames, background(seed * 10 + cam, tints[cam]),
                                      CROP_SIZE, FPS)
    return Scene(dst, cameras, {p: chosen[p - 1] for p in range(1, n_people + 1)}, tuple(walks))


__all__ = ["CAMERAS", "DEFAULT_WALKS", "Scene", "Walk", "background", "build_scene", "walk_box"]
