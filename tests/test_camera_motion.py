"""Camera-motion compensation from background corners: a pan is measured, a walking person is not."""

from __future__ import annotations

import cv2
import numpy as np
from ultralytics.trackers.utils.gmc import GMC

from tracklink.app.camera_motion import BackgroundFlow


def textured(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 8, w // 8), np.uint8)
    return cv2.cvtColor(cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR)


def plain(h: int, w: int) -> np.ndarray:
    """A smooth background: hardly a corner in it (a wall, a floor)."""
    ramp = np.linspace(80, 160, w, dtype=np.float32)[None, :].repeat(h, 0)
    return cv2.cvtColor(ramp.astype(np.uint8), cv2.COLOR_GRAY2BGR)


def walker_frames(n: int, with_box: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """A textured 'person' patch walking 6 px a frame over a plain background; fixed camera."""
    person = textured(160, 64, seed=3)
    frames = []
    for k in range(n):
        image = plain(360, 480)
        x = 100 + 6 * k
        image[120:280, x:x + 64] = person
        boxes = np.array([[x + 8, 125, x + 56, 275]], np.float32) if with_box else np.zeros((0, 4), np.float32)
        frames.append((image, boxes))
    return frames


def run(estimator, frames) -> list[np.ndarray]:
    warps = []
    for image, boxes in frames:
        if isinstance(estimator, BackgroundFlow):
            estimator.boxes = boxes
        warps.append(estimator.apply(image, boxes))
    return warps


def test_a_pan_is_measured():
    scene = textured(400, 560, seed=1)
    frames = [(scene[20:380, 40 + 5 * k:520 + 5 * k].copy(), np.zeros((0, 4), np.float32)) for k in range(4)]
    warps = run(BackgroundFlow(), frames)
    assert np.allclose(warps[0], np.eye(2, 3))
    for warp in warps[1:]:  # the picture moves 5 px left a frame
        assert abs(warp[0, 2] + 5) < 1.0 and abs(warp[1, 2]) < 1.0, warp


def test_a_walking_person_on_a_plain_background_is_not_camera_motion():
    """ultralytics' sparse flow takes the walker's corners for the camera's motion; ours keeps the camera
    still, whether the detector found the walker (its box is masked) or missed them (too few cells agree)."""
    theirs = run(GMC(method="sparseOptFlow"), walker_frames(4, with_box=False))
    assert max(abs(w[0, 2]) for w in theirs[1:]) > 3, "the peer estimator is fooled (what this guards against)"
    for with_box in (True, False):
        ours = run(BackgroundFlow(), walker_frames(4, with_box))
        assert all(np.allclose(w, np.eye(2, 3)) for w in ours), (with_box, ours)


def test_a_change_of_resolution_starts_over():
    flow = BackgroundFlow()
    flow.apply(textured(360, 480, seed=1))
    assert np.allclose(flow.apply(textured(240, 320, seed=1)), np.eye(2, 3))
    scene = textured(400, 560, seed=2)
    flow.apply(scene[20:260, 40:360].copy())
    warp = flow.apply(scene[20:260, 45:365].copy())  # the new size's first pan is measured
    assert abs(warp[0, 2] + 5) < 1.0, warp
