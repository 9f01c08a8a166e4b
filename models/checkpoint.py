"""Checkpoints: a plain state dict plus JSON-able metadata, loaded with `weights_only=True`.

The metadata carries everything a consumer needs to use the weights without guessing: architecture,
input size, normalisation, embedding size, the training classes and the linking threshold if calibrated.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tracklink import TracklinkError
from tracklink.models.registry import list_backbones
from tracklink.models.reid import ReIDModel, build_model
from tracklink.utils.files import atomic_write

FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelMeta:
    arch: str
    input_size: tuple[int, int] = (256, 128)  # (height, width)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # RGB, on 0-1 pixels
    std: tuple[float, float, float] = IMAGENET_STD
    embedding_dim: int = 512
    classes: list[str] = field(default_factory=list)  # training identities, index = class id
    pooling: str = "mean"
    # True when BN was folded into the convs (an ONNX import): eval output is exact, but BN statistics
    # must be re-estimated before training in train mode (see models/onnx_import.reinflate_batchnorm).
    bn_folded: bool = False
    link_threshold: float | None = None  # cosine similarity above which two tracklets are one person
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelMeta":
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        for key in ("input_size", "mean", "std"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """Write to a temp file and rename: a kill mid-write never leaves a truncated checkpoint behind."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(path: str | os.PathLike, model: ReIDModel, meta: ModelMeta,
                    extra: dict[str, Any] | None = None) -> None:
    payload = {"format": "tracklink", "version": FORMAT_VERSION, "meta": meta.to_dict(),
               "state_dict": model.state_dict()}
    if extra:
        payload.update(extra)
    atomic_torch_save(payload, path)


# Formats ultralytics opens without unpickling: ONNX (metadata read with ast.literal_eval) and its TensorRT
# engines (a JSON header). Everything else (.pt, .pth, .torchscript, ...) goes through torch.load with
# weights_only=False, i.e. runs whatever code the file names.
PICKLE_FREE_SUFFIXES = (".onnx", ".engine")


def untrusted_pickle_error(path: str | Path, flag: str = "--detector") -> TracklinkError:
    """The one-line refusal for a pickled model from an arbitrary path."""
    return TracklinkError(f"{flag} {path} is a pickled model, and loading a pickle runs any code it holds; "
                          "pass --trust-pickle if you trust this file, or export it to ONNX "
                          "(`yolo export model=... format=onnx` on a trusted machine) and pass the .onnx")


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def describe_load_error(exc: BaseException) -> str:
    """Why torch.load(weights_only=True) refused a file, without PyTorch's advice to retry unsafely.

    PyTorch's message suggests `weights_only=False`, which would run the very code it just refused.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if "Weights only load failed" in text:
        named = _UNSUPPORTED_GLOBAL.search(text)
        what = f" ({named.group(1)})" if named else ""
        return f"it holds Python objects{what}, not only tensors, and tracklink never unpickles those"
    first = text.strip().splitlines()[0][:200] if text.strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load the raw payload safely, with errors that name the file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise TracklinkError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights_only errors all mean "not a checkpoint we can trust"
        raise TracklinkError(
            f"cannot read checkpoint {path}: {describe_load_error(exc)}. Is it a tracklink checkpoint? Convert torchreid .pth or OSNet ONNX files with `tracklink import-weights`."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != "tracklink":
        raise TracklinkError(
            f"{path} is not a tracklink checkpoint; convert it with `tracklink import-weights {path} --out model.pt`"
        )
    return payload


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[ReIDModel, ModelMeta]:
    """Rebuild the model from its metadata and load its weights; returns it in eval mode."""
    payload = read_checkpoint(path)
    meta = ModelMeta.from_dict(payload["meta"])
    if meta.arch not in list_backbones():
        raise TracklinkError(f"{path}: unknown architecture {meta.arch!r} (known: {', '.join(list_backbones())})")
    model = build_model(meta.arch, num_classes=meta.num_classes, pooling=meta.pooling)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise TracklinkError(f"{path}: weights do not fit {meta.arch}: {str(exc).splitlines()[0]}") from None
    return model.to(map_location).eval(), meta


def update_meta(path: str | os.PathLike, **changes: Any) -> None:
    """Change metadata keys of a checkpoint in place (e.g. a calibrated link threshold).

    The raw payload is rewritten atomically, so any extra keys it holds (optimiser state, ...) survive.
    """
    payload = read_checkpoint(path)
    payload["meta"].update(changes)
    atomic_torch_save(payload, path)
