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
    epochs: int = 12
    p: int = 8  # identities per batch
    k: int = 2  # tracklets per identity
    t: int = 4  # frames per tracklet
    id_repeats: int = 2  # times each identity is drawn per epoch (4 = torchreid's epoch at K=4, 16 images per id)
    input_size: tuple[int, int] = (256, 128)
    # Loss: metric in {osm_caa, osm, contrastive, triplet, none}; cls in {ce, caa_ce, none}.
    loss: str = "osm_caa"
    cls_loss: str = "ce"
    label_smoothing: float = 0.1  # of the (CAA-weighted) cross-entropy
    margin: float = 0.3  # batch-hard triplet only
    alpha: float = 1.2
    sigma: float = 0.8
    lam: float = 0.5
    sigma_form: str = "paper"
    tracklet_loss: bool = True
    pooling: str = "mean"
    # Optimiser: Adam with linear warm-up then cosine decay (or a constant rate), a pure function of the step.
    lr: float = 3.5e-4
    schedule: str = "cosine"  # cosine | constant
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    # Rate multiplier of the new classifier; None: 10 for a fine-tune from --init (torchreid's new-layer rule), else 1.
    classifier_lr_mult: float | None = None
    erase_p: float = 0.5  # probability of random erasing per clip
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

    def classifier_rate(self) -> float:
        """The classifier's learning-rate multiplier: as given, else 10 when fine-tuning from --init, else 1."""
        if self.classifier_lr_mult is not None:
            return self.classifier_lr_mult
        return 10.0 if self.init else 1.0

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


PRESETS_DIR = Path(__file__).resolve().parent / "configs"


def presets() -> list[str]:
    """Names of the recipes shipped with the package (train/configs/NAME.yaml)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def resolve_config(spec: str | Path) -> Path:
    """A YAML path, or the name of a shipped preset (``softmax_triplet`` or ``softmax_triplet.yaml``)."""
    path = Path(spec)
    if path.is_file():
        return path
    name = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if path.parent == Path(".") and name in presets():
        return PRESETS_DIR / f"{name}.yaml"
    raise TracklinkError(f"config {spec} is neither a file nor a preset; presets: {', '.join(presets()) or 'none'}")


def load_config(yaml_path: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults, then the YAML file, then every flag the user actually gave (None means not given)."""
    values: dict[str, Any] = {}
    if yaml_path:
        path = resolve_config(yaml_path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise TracklinkError(f"cannot parse config {path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise TracklinkError(f"config {path} must be a mapping of option: value")
        values.update({k.replace("-", "_"): v for k, v in loaded.items()})
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values)
