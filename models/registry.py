"""Name -> backbone constructor. Plain functions, no config objects."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from tracklink import TracklinkError

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _BACKBONES[fn.__name__] = fn
    return fn


def _register_builtin() -> None:
    # Importing the architecture modules runs their @register_backbone decorators.
    from tracklink.models import osnet, resnet  # noqa: F401


def list_backbones() -> list[str]:
    _register_builtin()
    return sorted(_BACKBONES)


def create_backbone(name: str, **kwargs) -> nn.Module:
    """Build a backbone whose forward maps images (B, 3, H, W) to features (B, out_dim)."""
    _register_builtin()
    try:
        fn = _BACKBONES[name]
    except KeyError:
        raise TracklinkError(
            f"unknown architecture {name!r}; choose one of: {', '.join(list_backbones())}"
        ) from None
    return fn(**kwargs)
