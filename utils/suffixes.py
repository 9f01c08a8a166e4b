"""File types by suffix, in one table each, so that every command accepts the same files."""

from __future__ import annotations

import os
from pathlib import Path

# Images that OpenCV decodes: crops, datasets, image-folder sources and dropped search images alike.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# The runtimes an embedder runs on, and the model file -> the runtime that runs it: checkpoints are PyTorch's,
# an engine is TensorRT's.
BACKENDS = ("torch", "onnxruntime", "tensorrt")
BACKEND_BY_SUFFIX = {".pt": "torch", ".pth": "torch", ".tar": "torch", ".onnx": "onnxruntime",
                     ".engine": "tensorrt", ".plan": "tensorrt"}
ENGINE_SUFFIXES = tuple(s for s, backend in BACKEND_BY_SUFFIX.items() if backend == "tensorrt")


def is_image(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


__all__ = ["BACKENDS", "BACKEND_BY_SUFFIX", "ENGINE_SUFFIXES", "IMAGE_SUFFIXES", "is_image"]
