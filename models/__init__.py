"""Backbones, temporal pooling and heads for video person re-ID.

Like timm: one file per architecture, plain constructor functions, and a small name registry.
Exports resolve lazily so that the CLI's argument parsing does not pay for importing torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "create_backbone": "tracklink.models.registry",
    "list_backbones": "tracklink.models.registry",
    "register_backbone": "tracklink.models.registry",
    "ReIDModel": "tracklink.models.reid",
    "build_model": "tracklink.models.reid",
    "ModelMeta": "tracklink.models.checkpoint",
    "load_checkpoint": "tracklink.models.checkpoint",
    "save_checkpoint": "tracklink.models.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tracklink.models' has no attribute {name!r}")
