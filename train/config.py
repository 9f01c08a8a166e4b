"""Training configuration: one dataclass, filled from defaults < YAML file < command-line flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tracklink import TracklinkError


@dataclass
class TrainConfig:
    data: str = ""  # KIND:PATH, e.g. folder:../shared/assets/reid/pku-reid-40 or mars:/data/MARS
    out: str = "runs/train"
    arch: str = "osnet_x0_25"
    init: str | None = None  # tracklink checkpoint, OSNet ONNX or torchreid .pth to start from
    ids: str | None = None  # training identities: split file, or pids / 1-based ranges like "1-28"
    eval_ids: str | None = None  # held-out identities evaluated after each epoch (folder layout)
    epochs: int = 10
    p: int = 8  # identities per batch
    k: int = 2  # tracklets per identity
    t: int = 4  # frames per tracklet
    input_size: tuple[int, int] = (256, 128)
    # Loss: metric in {osm_caa, osm, contrastive, triplet}; cls in {ce, caa_ce, none}.
    loss: str = "osm_caa"
    cls_loss: str = "ce"
    alpha: float = 1.2
    sigma: float = 0.8
    lam: float = 0.5
    sigma_form: str = "paper"
    tracklet_loss: bool = True
    pooling: str = "mean"
    # Optimiser: Adam with linear warm-up then cosine decay, as a pure function of the step (resumable).
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    classifier_lr_mult: float = 1.0  # rate multiplier of the new classifier (10 suits short fine-tunes)
    freeze_bn: bool = False  # keep BN statistics fixed: safer for tiny fine-tuning batches
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA; ignored on CPU
    checkpoint_seconds: float = 60.0  # mid-epoch checkpoint interval, so a kill loses at most this much
    max_batches_per_epoch: int | None = None
    progress: bool = True
    # Distributed (torchrun): pair mining over the global batch instead of each rank's own.
    gather_embeddings: bool = False
    verify_sync: bool = False  # compare weight checksums across ranks after every step (debugging)
    dist_timeout: float = 600.0  # seconds any collective may wait before the job is ended

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise TracklinkError(f"unknown training option(s): {', '.join(unknown)}; known: {', '.join(known)}")
        d = dict(d)
        if "input_size" in d:
            d["input_size"] = tuple(d["input_size"])
        return cls(**d)


def load_config(yaml_path: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults, then the YAML file, then every flag the user actually gave (None means not given)."""
    values: dict[str, Any] = {}
    if yaml_path:
        path = Path(yaml_path)
        if not path.is_file():
            raise TracklinkError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise TracklinkError(f"cannot parse config {path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise TracklinkError(f"config {path} must be a mapping of option: value")
        values.update({k.replace("-", "_"): v for k, v in loaded.items()})
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values)
