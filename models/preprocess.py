"""Crop preprocessing, driven by the model's metadata, in one place for every backend.

Crops arrive as BGR uint8 arrays (OpenCV's order); models take RGB float tensors normalised by mean/std.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from tracklink import TracklinkError


def preprocess_crops(crops: Sequence[np.ndarray], input_size: tuple[int, int], mean: Sequence[float],
                     std: Sequence[float]) -> np.ndarray:
    """BGR uint8 crops of any size -> float32 (N, 3, H, W), resized with bilinear interpolation."""
    h, w = input_size
    batch = np.empty((len(crops), h, w, 3), dtype=np.uint8)
    for i, crop in enumerate(crops):
        if crop is None or crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] == 0 or crop.shape[1] == 0:
            shape = None if crop is None else crop.shape
            raise TracklinkError(f"crop {i} has shape {shape}; expected a non-empty HxWx3 BGR image")
        batch[i] = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
    rgb = batch[..., ::-1].astype(np.float32) * (1.0 / 255.0)
    rgb -= np.asarray(mean, dtype=np.float32)
    rgb /= np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))


def read_image(path) -> np.ndarray:
    """cv2.imread that fails loudly with the path instead of returning None."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise TracklinkError(f"cannot decode image {path}: the file is missing, corrupt or not an image")
    return img
