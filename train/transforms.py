"""Clip-consistent augmentation: one set of random parameters per clip, applied to every frame.

Temporal models see motion between frames; flipping or shifting frames independently would invent motion
that is not there. Parameters come from an explicit `numpy.random.Generator`, so a clip is a pure function
of its frames and its seed (which is what makes resumed training bit-identical).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from tracklink.models.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from tracklink.models.preprocess import preprocess_crops


@dataclass(frozen=True)
class ClipParams:
    """The random choices for one clip."""

    flip: bool
    scale: float  # zoom about the centre, 1 = none
    shift: tuple[int, int]  # (dx, dy) in output pixels
    erase: tuple[int, int, int, int] | None  # (x, y, w, h) in output pixels
    jitter: tuple[float, float, float]  # brightness, contrast, saturation factors, 1 = none


def to_clip_tensor(frames: Sequence[np.ndarray], input_size: tuple[int, int] = (256, 128),
                   mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """BGR uint8 frames -> float32 (T, 3, H, W), exactly as at inference (the evaluation transform)."""
    return torch.from_numpy(preprocess_crops(frames, input_size, mean, std))


@dataclass(frozen=True)
class ClipAugment:
    """Training transform: resize + normalise (as at inference), then flip, shift/zoom and random erasing.

    Geometry runs after normalisation so that padding and erasing fill with 0, i.e. the dataset mean colour.
    """

    input_size: tuple[int, int] = (256, 128)  # (height, width)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    flip_p: float = 0.5
    pad: int = 10  # random translation of up to `pad` pixels each way: the usual pad-then-random-crop
    scale: tuple[float, float] = (1.0, 1.0)  # zoom range; e.g. (1.0, 1.1) for a small random zoom-in
    erase_p: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.4)  # fraction of the image (Zhong et al. 2020)
    erase_ratio: tuple[float, float] = (0.3, 3.3)  # aspect ratio h/w
    jitter: float = 0.0  # brightness/contrast/saturation factors drawn in [1 - jitter, 1 + jitter]

    def sample(self, rng: np.random.Generator) -> ClipParams:
        h, w = self.input_size
        flip = bool(rng.random() < self.flip_p)
        scale = float(rng.uniform(*self.scale))
        dx, dy = (int(v) for v in rng.integers(-self.pad, self.pad + 1, size=2))
        jitter = tuple(float(v) for v in rng.uniform(1 - self.jitter, 1 + self.jitter, size=3))
        erase = None
        if rng.random() < self.erase_p:
            for _ in range(100):  # rejection sampling, as in the original random-erasing recipe
                area = rng.uniform(*self.erase_area) * h * w
                ratio = rng.uniform(*self.erase_ratio)
                eh, ew = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
                if 0 < eh < h and 0 < ew < w:
                    erase = (int(rng.integers(0, w - ew + 1)), int(rng.integers(0, h - eh + 1)), ew, eh)
                    break
        return ClipParams(flip, scale, (dx, dy), erase, jitter)  # type: ignore[arg-type]

    def apply(self, frames: Sequence[np.ndarray], params: ClipParams) -> torch.Tensor:
        """BGR uint8 frames -> augmented float32 (T, 3, H, W), the same `params` for every frame."""
        if params.jitter != (1.0, 1.0, 1.0):
            frames = [_color_jitter(f, *params.jitter) for f in frames]
        clip = preprocess_crops(frames, self.input_size, self.mean, self.std)  # (T, 3, H, W)
        if params.flip:
            clip = clip[..., ::-1]
        if params.shift != (0, 0) or params.scale != 1.0:
            clip = _affine(clip, params.scale, params.shift)
        clip = np.ascontiguousarray(clip)
        if params.erase is not None:
            x, y, ew, eh = params.erase
            clip[:, :, y:y + eh, x:x + ew] = 0.0
        return torch.from_numpy(clip)

    def __call__(self, frames: Sequence[np.ndarray], rng: np.random.Generator) -> torch.Tensor:
        return self.apply(frames, self.sample(rng))


def _affine(clip: np.ndarray, scale: float, shift: tuple[int, int]) -> np.ndarray:
    """Zoom about the centre and translate every frame; the uncovered border becomes 0 (the mean)."""
    t, c, h, w = clip.shape
    cx, cy = (w - 1) / 2, (h - 1) / 2
    matrix = np.array([[scale, 0, cx - scale * cx + shift[0]], [0, scale, cy - scale * cy + shift[1]]])
    # cv2.warpAffine takes at most 4 channels, so warp each (H, W) plane; a plain shift stays exact.
    planes = clip.reshape(t * c, h, w)
    out = np.stack([cv2.warpAffine(p, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                   borderValue=0) for p in planes])
    return out.reshape(t, c, h, w)


def _color_jitter(img: np.ndarray, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """torchvision's brightness/contrast/saturation blends, on one BGR uint8 image."""
    x = img.astype(np.float32) * brightness
    gray = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
    x = (x - gray.mean()) * contrast + gray.mean()
    gray = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
    x = (x - gray[..., None]) * saturation + gray[..., None]
    return np.clip(x, 0, 255).astype(np.uint8)
