"""The training loop: P x K x T clips, OSM+CAA (or an ablation), checkpoints that resume bit-for-bit.

Resumability comes from making every random choice a pure function of (seed, epoch, batch): the sampler,
the frame choice and the augmentation. A checkpoint then only needs the weights, the optimiser state and
the position (epoch, batch); the learning rate is a function of the global step.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn
import yaml
from tqdm import tqdm

from tracklink import TracklinkError
from tracklink.models.checkpoint import ModelMeta, atomic_torch_save, load_checkpoint, read_checkpoint, save_checkpoint
from tracklink.models.onnx_import import import_weights, reinflate_batchnorm
from tracklink.models.preprocess import preprocess_crops, read_image
from tracklink.models.reid import ReIDModel, build_model
from tracklink.train import distributed
from tracklink.train.config import TrainConfig
from tracklink.data.datasets import LabelledTracklet, VideoDataset, load_identities
from tracklink.train.losses import build_criterion
from tracklink.train.results import write_results
from tracklink.train.sampler import ClipDataset, PKTSampler, make_loader
from tracklink.train.transforms import ClipAugment
from tracklink.utils.progress import bar_disabled

log = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"  # the epoch with the best held-out BEST_BY (with --eval-ids only)
# Image mAP, not tracklet mAP: held-out sets are small, and on PKU ids 29-40 (24 tracklets, one query moves
# tracklet mAP by 0.04) tracklet mAP hit 1.0 at epoch 2 of 10 and would have kept that epoch (image mAP
# 0.775), while image mAP, over 192 images, kept improving to 0.850 at epoch 10 (the README's fine-tune).
BEST_BY = "eval_image_mAP"
# Options a resumed run may change: they do not touch the batch plan, the schedule or the numbers.
RESUMABLE_CHANGES = {"workers", "progress", "checkpoint_seconds", "dist_timeout", "verify_sync", "device", "out"}


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name == "cuda":
        name = f"cuda:{local_rank}"  # under torchrun each rank has its own GPU
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TracklinkError(f"--device {name} asked for CUDA, but torch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def load_init(path: str) -> tuple[ReIDModel, ModelMeta]:
    """Start weights from a tracklink checkpoint, an OSNet ONNX or a torchreid .pth."""
    p = Path(path)
    if p.suffix.lower() in (".onnx", ".pth", ".tar") or p.name.endswith(".pth.tar"):
        return import_weights(p)
    return load_checkpoint(p)


def learning_rate(cfg: TrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine decay to 1% of the base rate (or the base rate throughout, "constant")."""
    warmup = max(1, int(round(cfg.warmup_epochs * steps_per_epoch)))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule != "cosine":
        raise TracklinkError(f"unknown learning-rate schedule {cfg.schedule!r}; choose cosine or constant")
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))


@dataclass
class Position:
    epoch: int = 0  # the epoch in progress
    batch: int = 0  # the next batch of that epoch
    step: int = 0  # optimiser steps done in total


class StopRequested(Exception):
    pass


@contextmanager
def _stop_on_signals(flag: dict[str, Any]) -> Iterator[None]:
    """SIGTERM/SIGINT ask the loop to save and stop at the next step instead of dying mid-write."""
    def handler(signum, _frame):
        if flag.get("signal"):
            raise KeyboardInterrupt  # a second signal means "now"
        flag["signal"] = signal.Signals(signum).name

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for s in previous:
            signal.signal(s, handler)
    except ValueError:  # not the main thread (e.g. inside a test runner thread): no handlers
        previous = {}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _TrainForward(nn.Module):
    """The training forward as a module's forward, so DDP sees (and synchronises) it."""

    def __init__(self, model: ReIDModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        out = self.model.forward_train(images)
        return out.feat, out.embedding, out.logits


def flush_denormals(model: nn.Module) -> None:
    """Zero the denormal values of the weights and BN statistics, as flush-to-zero arithmetic would read them:
    the starting state is then the same whichever thread first touches a value."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor[tensor.abs() < torch.finfo(tensor.dtype).tiny] = 0.0


def _param_checksum(model: nn.Module) -> str:
    """Bit-exact fingerprint of the weights: equal on every rank exactly when the weights are equal."""
    import hashlib

    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _unwrap_worker_error(exc: Exception) -> Exception:
    """DataLoader re-raises worker errors with the worker traceback in the message; keep our own message."""
    text = str(exc)
    if isinstance(exc, TracklinkError) and "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        return TracklinkError(last.split("TracklinkError: ", 1)[-1])
    return exc


class Trainer:
    def __init__(self, cfg: TrainConfig, resume_from: Path | None = None) -> None:
        """`resume_from`: a checkpoint whose training state `resume()` will load; the model is then built
        from its metadata instead of from --init, which may have moved since."""
        self.cfg = cfg
        torch.manual_seed(cfg.seed)  # weight init and the new classifier; the data order has its own seeds
        self.out = Path(cfg.out)
        self.dist = distributed.env_from_torchrun()
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        if self.device.type == "cpu":
            # Denormal weights make x86 kernels crawl. Flushing is a per-thread CPU mode that new threads
            # inherit, so it is set before any work that starts the thread pool (an --init's BN re-estimation
            # did, and its workers then computed without it): every thread of every run, fresh or resumed,
            # rounds alike, which is what makes a resume bit-for-bit.
            torch.set_flush_denormal(True)
        distributed.init(self.dist, self.device, cfg.dist_timeout)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.progress = cfg.progress and self.dist.is_main
        if not self.dist.is_main:
            logging.getLogger().setLevel(logging.WARNING)  # one log, from rank 0

        self.dataset = load_identities(cfg.data, cfg.ids)
        self.tracklets: list[LabelledTracklet] = self.dataset.train
        if not self.tracklets:
            raise TracklinkError(f"no training tracklets in {cfg.data} (ids: {cfg.ids or 'all'})")
        self.classes = self.dataset.identities("train")
        if len(self.classes) < 2:
            raise TracklinkError(f"training needs at least 2 identities, {cfg.data} gives {len(self.classes)}")
        if cfg.p * self.dist.world_size > len(self.classes):
            raise TracklinkError(f"--p {cfg.p} identities per batch on each of {self.dist.world_size} process(es), "
                                 f"but only {len(self.classes)} are selected")
        self.eval_dataset = load_identities(cfg.data, cfg.eval_ids) if cfg.eval_ids else None

        self.model, self.meta = self._build_model(resume_from)
        if self.device.type == "cpu":
            flush_denormals(self.model)  # imported weights hold some; flushed runs treat them as zero anyway
        # Channels-last on CPU: oneDNN's grouped 3x3 convs (all over OSNet) are much faster in that layout.
        self.memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.model.to(self.device, memory_format=self.memory_format)
        self.train_forward: nn.Module = _TrainForward(self.model)
        if self.dist.enabled:
            if self.device.type == "cuda":
                # BN statistics over the global batch. SyncBatchNorm is CUDA-only: on gloo/CPU each rank
                # normalises by its own batch (use --freeze-bn where that matters).
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
                self.train_forward = _TrainForward(self.model)
            # Without a classification loss the head (neck BN, classifier) gets no gradient: DDP must be
            # told, or it waits for those gradients forever.
            self.train_forward = nn.parallel.DistributedDataParallel(
                self.train_forward, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.cls_loss == "none")
        self.criterion = build_criterion(cfg.loss, cls=cfg.cls_loss, alpha=cfg.alpha, sigma=cfg.sigma,
                                         lam=cfg.lam, sigma_form=cfg.sigma_form, tracklet=cfg.tracklet_loss,
                                         margin=cfg.margin, label_smoothing=cfg.label_smoothing)
        # The classifier starts from scratch on every new label set: it gets a larger rate (torchreid's
        # "new layers" rule), so a short fine-tune does not spend its budget waiting for it.
        classifier = [p for n, p in self.model.named_parameters() if n.startswith("head.classifier") and p.requires_grad]
        others = [p for n, p in self.model.named_parameters() if not n.startswith("head.classifier") and p.requires_grad]
        self.optimizer = torch.optim.Adam([{"params": others, "lr_mult": 1.0},
                                           {"params": classifier, "lr_mult": cfg.classifier_rate()}],
                                          lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

        labels = {pid: i for i, pid in enumerate(self.classes)}
        augment = ClipAugment(input_size=tuple(self.meta.input_size), mean=tuple(self.meta.mean),
                              std=tuple(self.meta.std), erase_p=cfg.erase_p)
        self.clips = ClipDataset(self.tracklets, labels, t=cfg.t, input_size=self.meta.input_size,
                                 mean=self.meta.mean, std=self.meta.std, train=True, seed=cfg.seed, augment=augment)
        # One global plan of P * world identities per step; each rank takes its own P (a partition).
        self.sampler = PKTSampler(self.tracklets, p=cfg.p * self.dist.world_size, k=cfg.k, seed=cfg.seed,
                                  repeats=cfg.id_repeats)
        self.steps_per_epoch = self.sampler.batches_per_epoch()
        if cfg.max_batches_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_batches_per_epoch)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.position = Position()
        self.history: list[dict[str, Any]] = []
        self._epoch_sums: dict[str, float] = {}  # this epoch's loss sums and step count, kept across a resume

    # ------------------------------------------------------------------ setup

    def _build_model(self, resume_from: Path | None = None) -> tuple[ReIDModel, ModelMeta]:
        cfg = self.cfg
        if resume_from is not None:  # weights, classes and metadata all come with the checkpoint
            meta = ModelMeta.from_dict(read_checkpoint(resume_from)["meta"])
            return build_model(meta.arch, num_classes=len(self.classes), pooling=meta.pooling), meta
        if cfg.init:
            model, meta = load_init(cfg.init)
            if meta.arch != cfg.arch:
                log.warning("--init %s is %s; training that architecture, not --arch %s", cfg.init, meta.arch, cfg.arch)
            if tuple(meta.input_size) != tuple(cfg.input_size):
                log.warning("--init %s expects %s input; using it instead of %s", cfg.init, meta.input_size, cfg.input_size)
            if meta.bn_folded:
                self._reinflate(model, meta)
                meta.bn_folded = False
        else:
            model = build_model(cfg.arch)
            meta = ModelMeta(arch=cfg.arch, input_size=tuple(cfg.input_size), embedding_dim=0)
        model.head.reset_classifier(len(self.classes))
        model.pooling = cfg.pooling
        meta.classes = list(self.classes)
        meta.pooling = cfg.pooling
        meta.embedding_dim = model.embedding_dim
        meta.source = f"tracklink train on {cfg.data}"
        meta.link_threshold = None  # a new embedding space needs a new calibration
        return model, meta

    def _reinflate(self, model: ReIDModel, meta: ModelMeta, max_images: int = 256) -> None:
        """Imported ONNX weights have BN folded in; estimate real BN statistics on training images."""
        rng = np.random.default_rng(self.cfg.seed)
        frames = [f for t in self.tracklets for f in t.frames]
        chosen = [frames[i] for i in sorted(rng.choice(len(frames), min(max_images, len(frames)), replace=False))]
        batches = (torch.from_numpy(preprocess_crops([read_image(p) for p in chosen[i:i + 32]],
                                                     meta.input_size, meta.mean, meta.std))
                   for i in range(0, len(chosen), 32))
        reinflate_batchnorm(model, batches)
        log.info("re-estimated BN statistics of the imported model on %d training images", len(chosen))

    # ------------------------------------------------------------------ checkpoints

    def save(self, path: Path | None = None) -> Path:
        path = path or self.out / LAST
        if not self.dist.is_main:
            return path  # rank 0 writes; every rank holds the same weights and position
        atomic_torch_save({
            "format": "tracklink", "version": 1, "meta": self.meta.to_dict(),
            "state_dict": self.model.state_dict(),
            "train_state": {
                "config": self.cfg.to_dict(),
                "position": vars(self.position).copy(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "history": json.dumps(self.history),
                "world_size": self.dist.world_size,
                "epoch_sums": json.dumps(self._epoch_sums),
            },
        }, path)
        return path

    def resume(self, path: Path | None = None) -> None:
        path = path or self.out / LAST
        payload = read_checkpoint(path)
        state = payload.get("train_state")
        if state is None:
            raise TracklinkError(f"{path} holds no training state (an exported or imported model?); "
                                 "pass it as --init to start a new run from its weights")
        saved = TrainConfig.from_dict(state["config"])
        for key in sorted(set(vars(saved)) - RESUMABLE_CHANGES):
            if getattr(saved, key) != getattr(self.cfg, key):
                raise TracklinkError(f"--resume with a different {key} ({getattr(self.cfg, key)!r}) than the run in "
                                     f"{path} ({getattr(saved, key)!r}); resume with the same options or start a new --out")
        world = state.get("world_size", 1)
        if world != self.dist.world_size:
            raise TracklinkError(f"{path} was trained by {world} process(es), this resume has {self.dist.world_size}: "
                                 f"the batch plan would change. Resume with --nproc {world}")
        self.model.load_state_dict(payload["state_dict"])
        if self.device.type == "cpu":
            flush_denormals(self.model)  # a checkpoint from before flushing was set up front may hold some
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        self.position = Position(**state["position"])
        self.history = json.loads(state["history"])
        self._epoch_sums = json.loads(state.get("epoch_sums", "{}"))
        if self.dist.is_main:
            self._truncate_logs()
        log.info("resumed %s at epoch %d, batch %d (step %d)", path, self.position.epoch + 1,
                 self.position.batch, self.position.step)

    def _truncate_logs(self) -> None:
        """Steps and epochs logged after the checkpoint will run again; drop them so the logs hold no duplicates."""
        (self.out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.history))
        steps = self.out / "steps.jsonl"
        if steps.exists():
            kept = [line for line in steps.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= self.position.step]
            steps.write_text("".join(line + "\n" for line in kept))

    # ------------------------------------------------------------------ loop

    def _set_train_mode(self) -> None:
        self.model.train()
        if self.cfg.freeze_bn:
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def _step(self, clips: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        b, t = clips.shape[:2]
        clips, labels = clips.to(self.device, non_blocking=True), labels.to(self.device)
        lr = learning_rate(self.cfg, self.position.step, self.total_steps, self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.use_amp else nullcontext()
        with autocast:
            feat, embedding, logits = self.train_forward(clips.flatten(0, 1).contiguous(memory_format=self.memory_format))
            scale = 1.0
            if self.cfg.gather_embeddings and self.dist.enabled:
                # The loss of the global batch on every rank, backpropagated into local samples only;
                # DDP averages gradients over ranks, so scaling by the world size gives the full gradient.
                feat, embedding, logits, labels = (distributed.all_gather_with_grad(x)
                                                   for x in (feat, embedding, logits, labels))
                scale = float(self.dist.world_size)
            loss, parts = self.criterion(feat, embedding, logits, labels, clip_len=t)
        if not torch.isfinite(loss):
            raise TracklinkError(
                f"loss became {loss.item()} at epoch {self.position.epoch + 1}, batch {self.position.batch} "
                f"({parts}); the last good checkpoint is {self.out / LAST}. Lower --lr, or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss * scale).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        record = {"loss": float(loss.detach()), "lr": lr, **{k: float(v) for k, v in parts.items()}}
        if self.cfg.verify_sync and self.dist.enabled:
            record["param_checksums"] = distributed.all_gather_objects(_param_checksum(self.model))
            if len(set(record["param_checksums"])) != 1:
                raise TracklinkError(f"ranks diverged at step {self.position.step + 1}: parameter checksums "
                                     f"{record['param_checksums']}")
        return record

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        main = self.dist.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        stop: dict[str, Any] = {}
        last_save = time.monotonic()
        if self.eval_dataset is not None and self.position.step == 0 and not self.history:
            # Epoch 0: the starting point, so every run reports before and after on the held-out ids.
            self._log_epoch({"epoch": 0, "steps": 0, **self._eval_record()})
        # Logs, checkpoints and progress bars come from rank 0 only.
        with _stop_on_signals(stop), open(self.out / "steps.jsonl" if main else os.devnull, "a") as step_log:
            while self.position.epoch < cfg.epochs:
                epoch = self.position.epoch
                self._set_train_mode()
                sums = self._epoch_sums
                started = time.monotonic()
                loader = make_loader(self.clips, self.sampler, epoch, self.position.batch, cfg.workers,
                                     rank=self.dist.rank, world_size=self.dist.world_size)
                bar = tqdm(total=self.steps_per_epoch, initial=self.position.batch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           unit="batch", disable=bar_disabled(self.progress), dynamic_ncols=True)
                try:
                    for _batch, (clips, labels, _cams) in loader:
                        if self.position.batch >= self.steps_per_epoch:
                            break
                        parts = self._step(clips, labels)
                        self.position.batch += 1
                        self.position.step += 1
                        step_log.write(json.dumps({"epoch": epoch + 1, "batch": self.position.batch,
                                                   "step": self.position.step, **parts}) + "\n")
                        step_log.flush()
                        for k, v in parts.items():
                            if isinstance(v, float):
                                sums[k] = sums.get(k, 0.0) + v
                        sums["_steps"] = sums.get("_steps", 0.0) + 1
                        bar.update(1)
                        bar.set_postfix(loss=f"{parts['loss']:.4f}")
                        if distributed.any_rank(bool(stop.get("signal")), self.device):
                            raise StopRequested(stop.get("signal") or "a signal to another rank")
                        if time.monotonic() - last_save > cfg.checkpoint_seconds:
                            self.save()
                            last_save = time.monotonic()
                except StopRequested as exc:
                    path = self.save()
                    raise TracklinkError(f"stopped by {exc}; progress saved to {path}. Continue with "
                                         f"`tracklink train --resume --out {self.out}`") from None
                except TracklinkError as exc:
                    raise _unwrap_worker_error(exc) from None
                finally:
                    bar.close()
                count = max(sums.pop("_steps", 1.0), 1.0)
                record = {"epoch": epoch + 1, "steps": self.position.step, "seconds": round(time.monotonic() - started, 2),
                          **{f"mean_{k}": v / count for k, v in sums.items()}}
                self._epoch_sums = {}
                self.position = Position(epoch + 1, 0, self.position.step)
                self._finish_epoch(record)
                last_save = time.monotonic()
                log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})
        best = self.out / BEST
        return {"out": str(self.out / LAST), "best": str(best) if best.is_file() else None,
                "results": str(self.out / "results.csv"), "link_threshold": self.meta.link_threshold,
                "epochs": cfg.epochs, "steps": self.position.step, "history": self.history}

    def close(self) -> None:
        distributed.shutdown()

    def _finish_epoch(self, record: dict[str, Any]) -> None:
        """Evaluate and calibrate on the held-out ids, log, write last.pt, best.pt and the results files."""
        if self.eval_dataset is not None:
            record.update(self._eval_record())
            if self.dist.is_main:
                record.update(self._calibrate())
        improved = self.eval_dataset is not None and record.get(BEST_BY) is not None and all(
            record[BEST_BY] > r.get(BEST_BY, -1.0) for r in self.history if r["epoch"] > 0)
        self._log_epoch(record)
        self.save()
        if improved and self.dist.is_main:
            save_checkpoint(self.out / BEST, self.model, self.meta)
            log.info("epoch %d: best held-out %s so far (%.4f), saved %s", record["epoch"], BEST_BY,
                     record[BEST_BY], self.out / BEST)

    def _calibrate(self) -> dict[str, float]:
        """The link threshold of the current weights, calibrated on the held-out identities as `tracklink
        calibrate` would (same embedding, pooling and clustering), stored in the metadata of the checkpoints
        written next, so `tracklink batch` and `match` accept the model as it is."""
        from tracklink.data.link_threshold import calibrate_on_tracklets, unique_tracklets

        embedder = self._embedder()
        embed = embedder.embed_for(self.meta.pooling)
        try:
            result = calibrate_on_tracklets(embed, unique_tracklets(self.eval_dataset), self.meta.pooling,
                                            progress=self.progress)
        except TracklinkError as exc:  # e.g. held-out ids seen by one camera only: no pair to calibrate on
            log.warning("no link threshold calibrated on --eval-ids %s: %s", self.cfg.eval_ids, exc)
            return {}
        finally:
            self._set_train_mode()
        self.meta.link_threshold = result["threshold"]
        return {"link_threshold": result["threshold"], "link_f1": result["f1"]}

    def _embedder(self):
        from tracklink.export.runtime import Embedder, TorchRunner

        classifier = self.model.head.classifier
        weights = classifier.weight.detach().float().cpu().numpy() if classifier is not None else None
        return Embedder(TorchRunner(self.model, str(self.device)), self.meta, f"torch:{self.device}",
                        classifier=weights)

    def _log_epoch(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if not self.dist.is_main:
            return
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        write_results(self.history, self.out, title=f"{self.meta.arch} on {self.cfg.data}", best_by=BEST_BY)

    def _eval_record(self) -> dict[str, float]:
        return {f"eval_{k}": v for k, v in self.evaluate(self.eval_dataset).items()
                if k.startswith(("image_", "tracklet_")) and isinstance(v, float)}

    def evaluate(self, dataset: VideoDataset) -> dict[str, Any]:
        """The same embedder `tracklink eval` uses, on the weights in training."""
        from tracklink.train.evaluate import evaluate

        embedder = self._embedder()
        try:
            # Each rank embeds its shard of the frames; rank 0 scores the gathered features.
            return evaluate(embedder.embed, dataset, progress=self.progress, rank=self.dist.rank,
                            world_size=self.dist.world_size, gather=distributed.all_gather_objects)
        finally:
            self._set_train_mode()
