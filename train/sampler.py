"""P x K x T sampling: P identities, K tracklets each, T frames per tracklet.

Every random choice is a pure function of (seed, epoch[, batch, slot]), so a run resumed at any batch sees
exactly the clips an uninterrupted run would have seen, whatever the number of DataLoader workers.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, NamedTuple, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from tracklink import TracklinkError
from tracklink.models.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from tracklink.models.preprocess import read_image
from tracklink.data.datasets import LabelledTracklet, natsorted, natural_key
from tracklink.train.transforms import ClipAugment, to_clip_tensor


class ClipKey(NamedTuple):
    """Address of one training clip: which tracklet, and where in the schedule (which seeds its randomness)."""

    epoch: int
    batch: int
    slot: int
    index: int  # into the tracklet list


class PKTSampler:
    """Batches of P distinct identities x K tracklets; each identity appears once per epoch.

    The K tracklets of an identity are taken round-robin over its cameras (in random order), so they span
    as many cameras as it has; an identity with fewer than K tracklets repeats that round-robin order.
    Identities left over after the last full batch are dropped for this epoch (the next shuffle differs).
    With `repeats` > 1 an epoch is that many such passes, each over its own shuffle.
    """

    def __init__(self, tracklets: Sequence[LabelledTracklet], p: int, k: int, seed: int = 0, repeats: int = 1):
        if p < 1 or k < 1 or repeats < 1:
            raise TracklinkError(f"P, K and the identity repeats must be at least 1, got P={p}, K={k}, "
                                 f"repeats={repeats}")
        by_pid: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i, t in enumerate(tracklets):
            by_pid[t.pid][t.cam].append(i)
        self.pids = natsorted(by_pid)
        if len(self.pids) < p:
            raise TracklinkError(f"P={p} identities per batch, but the training set has only {len(self.pids)}; "
                                 "lower P or add identities")
        # Cameras and tracklets in a canonical order, so the plan does not depend on how the list was ordered.
        self._cams = [[sorted(by_pid[pid][cam], key=lambda i: natural_key(tracklets[i].key))
                       for cam in natsorted(by_pid[pid])] for pid in self.pids]
        self.p, self.k, self.seed, self.repeats = p, k, seed, repeats
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches_per_epoch(self) -> int:
        return len(self.pids) // self.p * self.repeats

    def __len__(self) -> int:
        return self.batches_per_epoch()

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The whole plan of one epoch; cheap (no image I/O), so resuming simply recomputes it."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
        batches = []
        for _ in range(self.repeats):
            order = rng.permutation(len(self.pids))
            for b in range(len(self.pids) // self.p):
                batch: list[int] = []
                for pid_idx in order[b * self.p:(b + 1) * self.p].tolist():
                    batch.extend(self._draw(rng, self._cams[pid_idx]))
                batches.append(batch)
        return batches

    def _draw(self, rng: np.random.Generator, cams: list[list[int]]) -> list[int]:
        queues = [[cams[c][i] for i in rng.permutation(len(cams[c]))] for c in rng.permutation(len(cams))]
        longest = max(len(q) for q in queues)
        round_robin = [q[j] for j in range(longest) for q in queues if j < len(q)]
        return [round_robin[i % len(round_robin)] for i in range(self.k)]

    def iter_from(self, epoch: int, start_batch: int = 0) -> Iterator[list[int]]:
        """Batches `start_batch`.. of `epoch`, identical to those of a full pass over that epoch."""
        yield from self.epoch_batches(epoch)[start_batch:]

    def __iter__(self) -> Iterator[list[int]]:
        return self.iter_from(self.epoch)


class ClipDataset(Dataset):
    """Tracklets as (clip (T, 3, H, W) float32, label, camera index).

    Training items are addressed by `ClipKey`: frame choice and augmentation are seeded by
    (seed, epoch, batch, slot). Evaluation items are plain tracklet indices (a `ClipKey` works too), with
    T evenly spaced frames and no augmentation.
    """

    def __init__(self, tracklets: Sequence[LabelledTracklet], labels: dict[str, int] | None = None, t: int = 8,
                 input_size: tuple[int, int] = (256, 128), mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, train: bool = True, seed: int = 0,
                 augment: ClipAugment | None = None):
        if t < 1:
            raise TracklinkError(f"clip length T must be at least 1, got {t}")
        self.tracklets = list(tracklets)
        self.labels = labels if labels is not None else {p: i for i, p in enumerate(
            natsorted({tr.pid for tr in self.tracklets}))}
        missing = {tr.pid for tr in self.tracklets} - set(self.labels)
        if missing:
            raise TracklinkError(f"identities {natsorted(missing)[:10]} have no label; the label map covers "
                                 f"{len(self.labels)} identities")
        self.cam_index = {c: i for i, c in enumerate(natsorted({tr.cam for tr in self.tracklets}))}
        self.t, self.train, self.seed = t, train, seed
        self.input_size, self.mean, self.std = tuple(input_size), tuple(mean), tuple(std)
        self.augment = augment or ClipAugment(input_size=self.input_size, mean=self.mean, std=self.std)

    def __len__(self) -> int:
        return len(self.tracklets)

    def frame_indices(self, n: int, rng: np.random.Generator | None) -> np.ndarray:
        if rng is None:  # evaluation: evenly spaced over the whole tracklet
            return np.linspace(0, n - 1, self.t).round().astype(np.int64)
        return np.sort(rng.choice(n, size=self.t, replace=n < self.t))

    def __getitem__(self, key: ClipKey | int) -> tuple[torch.Tensor, int, int]:
        if self.train and not isinstance(key, tuple):
            raise TypeError("a training ClipDataset is indexed by ClipKey(epoch, batch, slot, index); "
                            "iterate it through make_loader")
        index = key.index if isinstance(key, tuple) else int(key)
        tracklet = self.tracklets[index]
        rng = (np.random.default_rng(np.random.SeedSequence([self.seed, key.epoch, key.batch, key.slot]))
               if self.train else None)
        picks = self.frame_indices(len(tracklet.frames), rng).tolist()
        images = {i: read_image(tracklet.frames[i]) for i in set(picks)}  # raises naming the bad file
        frames = [images[i] for i in picks]
        if self.train:
            clip = self.augment(frames, rng)
        else:
            clip = to_clip_tensor(frames, self.input_size, self.mean, self.std)
        return clip, self.labels[tracklet.pid], self.cam_index[tracklet.cam]


class _EpochBatches:
    """The batch sampler handed to DataLoader: one epoch's plan from `start_batch` on, as ClipKeys."""

    def __init__(self, sampler: PKTSampler, epoch: int, start_batch: int, rank: int = 0, world_size: int = 1):
        self.plan = sampler.epoch_batches(epoch)
        if not 0 <= start_batch <= len(self.plan):
            raise TracklinkError(f"cannot resume at batch {start_batch}: epoch {epoch} has {len(self.plan)} batches")
        if sampler.p % world_size:
            raise TracklinkError(f"a global batch of P={sampler.p} identities does not split over {world_size} ranks")
        self.epoch, self.start = epoch, start_batch
        # Each rank takes a contiguous block of whole identities (P / world of them, K slots each). Slots keep
        # their global index, so a rank's clips are exactly those of a single process on the global batch.
        share = sampler.p // world_size * sampler.k
        self.slots = range(rank * share, (rank + 1) * share)

    def __len__(self) -> int:
        return len(self.plan) - self.start

    def __iter__(self) -> Iterator[list[ClipKey]]:
        for b in range(self.start, len(self.plan)):
            yield [ClipKey(self.epoch, b, slot, self.plan[b][slot]) for slot in self.slots]


class _Keyed(Dataset):
    """Carries the batch index alongside each sample so the loader can yield it."""

    def __init__(self, dataset: ClipDataset):
        self.dataset = dataset

    def __getitem__(self, key: ClipKey):
        return key.batch, self.dataset[key]


def _collate(samples: list[tuple[int, tuple[torch.Tensor, int, int]]]):
    batch_idx = samples[0][0]
    return batch_idx, tuple(default_collate([s for _, s in samples]))


def _worker_init(_: int) -> None:
    # OpenCV's own thread pool in every worker oversubscribes the CPU and can deadlock after fork.
    cv2.setNumThreads(0)


def make_loader(dataset: ClipDataset, sampler: PKTSampler, epoch: int, start_batch: int = 0,
                num_workers: int = 0, pin_memory: bool = False, rank: int = 0, world_size: int = 1) -> DataLoader:
    """A DataLoader over one epoch from `start_batch`, yielding ``(batch_idx, (clips, labels, cams))``.

    `clips` is (P*K, T, 3, H, W) float32; `labels` and `cams` are int64 (P*K,). With `world_size` > 1 the
    sampler's P identities are split over the ranks: this rank gets P / world_size of them.
    """
    return DataLoader(_Keyed(dataset), batch_sampler=_EpochBatches(sampler, epoch, start_batch, rank, world_size),
                      num_workers=num_workers, collate_fn=_collate, pin_memory=pin_memory,
                      worker_init_fn=_worker_init if num_workers > 0 else None)
