from __future__ import annotations

import re
from collections import Counter

import cv2
import numpy as np
import pytest
import torch

from tracklink import TracklinkError
from tracklink.data.datasets import LabelledTracklet, load_dataset
from tracklink.train.sampler import ClipDataset, ClipKey, PKTSampler, make_loader
from tracklink.train.transforms import ClipAugment, to_clip_tensor

SIZE = (32, 16)  # small clips keep the loader tests fast


def _fake(pid: str, cam: str, n: int, i: int) -> LabelledTracklet:
    return LabelledTracklet(pid, cam, tuple(f"/nowhere/{pid}/{cam}_{i}_{f}.png" for f in range(n)), f"{pid}/{cam}/{i}")


def _two_camera_set(n_ids: int = 10, per_cam: int = 3) -> list[LabelledTracklet]:
    return [_fake(f"{p:03d}", cam, 5, i) for p in range(n_ids) for cam in ("01", "02") for i in range(per_cam)]


@pytest.fixture(scope="module")
def image_set(tmp_path_factory) -> list[LabelledTracklet]:
    """6 identities x 2 cameras x 1 tracklet of 3-6 distinct random frames."""
    root = tmp_path_factory.mktemp("pk")
    rng = np.random.default_rng(0)
    for p in range(6):
        for cam in ("01", "02"):
            for f in range(3 + p % 4):
                img = rng.integers(0, 256, size=(24 + p, 12, 3), dtype=np.uint8)
                path = root / f"{p:02d}" / f"{cam}_{f}.png"
                path.parent.mkdir(exist_ok=True)
                assert cv2.imwrite(str(path), img)
    return load_dataset(str(root)).train


# ------------------------------------------------------------------------------------------------ PKTSampler


def test_batches_are_p_distinct_ids_times_k():
    tracklets = _two_camera_set(n_ids=10) + [_fake("solo", "01", 4, 0)]
    sampler = PKTSampler(tracklets, p=4, k=3, seed=1)
    batches = list(sampler)
    assert len(batches) == sampler.batches_per_epoch() == len(sampler) == 11 // 4
    seen = Counter()
    for batch in batches:
        assert len(batch) == 12
        pids = [tracklets[i].pid for i in batch]
        groups = [pids[j:j + 3] for j in range(0, 12, 3)]
        assert all(len(set(g)) == 1 for g in groups)  # K consecutive slots per identity
        assert len({g[0] for g in groups}) == 4  # P distinct identities
        seen.update(g[0] for g in groups)
    assert max(seen.values()) == 1  # each identity at most once per epoch
    with pytest.raises(TracklinkError, match="only 11"):
        PKTSampler(tracklets, p=12, k=2, seed=0)


def test_camera_aware_draw():
    tracklets = _two_camera_set(n_ids=4, per_cam=3) + [_fake("solo", "01", 4, 0)]
    for seed in range(5):
        for k, expected in ((2, {"01": 1, "02": 1}), (4, {"01": 2, "02": 2})):
            for batch in PKTSampler(tracklets, p=5, k=k, seed=seed):
                for j in range(0, len(batch), k):
                    group = [tracklets[i] for i in batch[j:j + k]]
                    if group[0].pid == "solo":  # fewer than K tracklets: repeated
                        assert batch[j:j + k] == [len(tracklets) - 1] * k
                        continue
                    assert dict(Counter(t.cam for t in group)) == expected
                    assert len(set(batch[j:j + k])) == k  # distinct while the identity has enough
    # 3 tracklets for K=4: all three, then one repeat
    small = [_fake("a", "01", 2, 0), _fake("a", "01", 2, 1), _fake("a", "02", 2, 0)]
    (batch,) = list(PKTSampler(small, p=1, k=4, seed=0))
    assert sorted(Counter(batch).values()) == [1, 1, 2]


def test_sampler_determinism_and_resume():
    tracklets = _two_camera_set(n_ids=12)
    a, b = PKTSampler(tracklets, 3, 4, seed=7), PKTSampler(list(reversed(tracklets)), 3, 4, seed=7)
    a.set_epoch(2)
    assert list(a) == a.epoch_batches(2) == PKTSampler(tracklets, 3, 4, seed=7).epoch_batches(2)
    # the plan depends on content, not listing order (indices differ, tracklets agree)
    rev = list(reversed(tracklets))
    assert [[tracklets[i].key for i in bt] for bt in a.epoch_batches(2)] == \
        [[rev[i].key for i in bt] for bt in b.epoch_batches(2)]
    assert a.epoch_batches(2) != a.epoch_batches(3)
    assert a.epoch_batches(2) != PKTSampler(tracklets, 3, 4, seed=8).epoch_batches(2)
    for j in range(a.batches_per_epoch() + 1):
        assert list(a.iter_from(2, j)) == a.epoch_batches(2)[j:]


# ------------------------------------------------------------------------------------------------ transforms


def test_augmentation_is_identical_across_frames_of_a_clip():
    img = np.zeros((64, 32, 3), np.uint8)
    img[:20, :10] = (0, 0, 255)  # asymmetric, so flips and shifts are visible
    aug = ClipAugment(input_size=SIZE, jitter=0.3, scale=(1.0, 1.1))
    flips, outputs = set(), []
    for seed in range(12):
        params = aug.sample(np.random.default_rng(seed))
        clip = aug.apply([img] * 5, params)
        assert clip.shape == (5, 3, *SIZE) and clip.dtype == torch.float32
        assert all(torch.equal(clip[0], clip[t]) for t in range(1, 5))
        assert torch.equal(clip, aug([img] * 5, np.random.default_rng(seed)))  # reproducible from the seed
        flips.add(params.flip)
        outputs.append(clip)
    assert flips == {True, False}
    assert not torch.equal(outputs[0], outputs[1])


def test_flip_and_erase_are_exact():
    img = np.random.default_rng(0).integers(0, 256, size=(32, 16, 3), dtype=np.uint8)
    plain = to_clip_tensor([img, img[::-1].copy()], SIZE)
    flip = ClipAugment(input_size=SIZE, flip_p=1.0, pad=0, erase_p=0.0)
    assert torch.equal(flip([img, img[::-1].copy()], np.random.default_rng(0)), plain.flip(-1))
    erase = ClipAugment(input_size=SIZE, flip_p=0.0, pad=0, erase_p=1.0)
    params = erase.sample(np.random.default_rng(3))
    x, y, w, h = params.erase
    out = erase.apply([img, img], params)
    assert torch.all(out[:, :, y:y + h, x:x + w] == 0)  # mean-filled (0 after normalisation)
    out[:, :, y:y + h, x:x + w] = plain[:1, :, y:y + h, x:x + w]
    assert torch.equal(out, plain[:1].expand(2, -1, -1, -1))


def test_shift_moves_the_image_and_fills_with_mean():
    img = np.random.default_rng(1).integers(0, 256, size=SIZE + (3,), dtype=np.uint8)
    aug = ClipAugment(input_size=SIZE, flip_p=0.0, erase_p=0.0)
    params = aug.sample(np.random.default_rng(0))
    params = type(params)(False, 1.0, (3, -2), None, (1.0, 1.0, 1.0))
    out, plain = aug.apply([img], params), to_clip_tensor([img], SIZE)
    assert torch.equal(out[..., :-2, 3:], plain[..., 2:, :-3])
    assert torch.all(out[..., :3] == 0) and torch.all(out[..., -2:, :] == 0)


# ------------------------------------------------------------------------------------------------ ClipDataset


def test_frame_indices():
    ds = ClipDataset([_fake("a", "01", 3, 0)], t=8, input_size=SIZE)
    rng = np.random.default_rng(0)
    short = ds.frame_indices(3, rng)
    assert len(short) == 8 and list(short) == sorted(short) and set(short) <= {0, 1, 2}
    long = ds.frame_indices(100, rng)
    assert list(long) == sorted(set(long.tolist())) and len(long) == 8  # distinct when long enough
    assert ds.frame_indices(15, None).tolist() == [0, 2, 4, 6, 8, 10, 12, 14]


def test_eval_clip_is_preprocessed_evenly_spaced_frames(image_set):
    ds = ClipDataset(image_set, t=4, input_size=SIZE, train=False)
    i = next(j for j, t in enumerate(image_set) if len(t.frames) == 6)
    clip, label, cam = ds[i]
    picks = [0, 2, 3, 5]  # round(linspace(0, 5, 4))
    expected = to_clip_tensor([cv2.imread(image_set[i].frames[f]) for f in picks], SIZE)
    assert torch.equal(clip, expected)
    assert label == ds.labels[image_set[i].pid] and cam == ds.cam_index[image_set[i].cam]
    assert torch.equal(ds[i][0], clip)
    with pytest.raises(TypeError, match="ClipKey"):
        ClipDataset(image_set, t=4, input_size=SIZE)[0]


def _collect(loader):
    return [(b, clips.clone(), labels.clone(), cams.clone()) for b, (clips, labels, cams) in loader]


def test_loader_resume_is_bit_identical(image_set):
    ds = ClipDataset(image_set, t=4, input_size=SIZE, train=True, seed=5)
    sampler = PKTSampler(image_set, p=2, k=2, seed=5)
    full = _collect(make_loader(ds, sampler, epoch=1))
    assert [b for b, *_ in full] == [0, 1, 2]
    b, clips, labels, cams = full[0]
    assert clips.shape == (4, 4, 3, *SIZE) and labels.dtype == cams.dtype == torch.int64
    assert labels.tolist() == [ds.labels[image_set[i].pid] for i in sampler.epoch_batches(1)[0]]
    assert sorted(cams[:2].tolist()) == [0, 1]  # camera-aware: one tracklet from each camera
    resumed = _collect(make_loader(ds, sampler, epoch=1, start_batch=1))
    assert [b for b, *_ in resumed] == [1, 2]
    for x, y in zip(full[1:], resumed):
        assert all(torch.equal(u, v) for u, v in zip(x[1:], y[1:]))
    worker = _collect(make_loader(ds, sampler, epoch=1, start_batch=2, num_workers=1))
    assert all(torch.equal(u, v) for u, v in zip(full[2][1:], worker[0][1:]))
    other_epoch = _collect(make_loader(ds, sampler, epoch=2))
    assert not torch.equal(other_epoch[0][1], full[0][1])
    # the same tracklet in two slots is two different clips (frames and augmentation seeded by slot)
    key_a, key_b = ClipKey(0, 0, 0, 0), ClipKey(0, 0, 1, 0)
    assert not torch.equal(ds[key_a][0], ds[key_b][0]) and torch.equal(ds[key_a][0], ds[key_a][0])
    with pytest.raises(TracklinkError, match="epoch 1 has 3 batches"):
        make_loader(ds, sampler, epoch=1, start_batch=4)


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_frame_error_names_the_file(tmp_path, workers):
    (tmp_path / "p").mkdir()
    for cam in ("01", "02"):
        for f in range(2):
            assert cv2.imwrite(str(tmp_path / "p" / f"{cam}_{f}.png"), np.zeros((8, 4, 3), np.uint8))
    bad = tmp_path / "p" / "02_1.png"
    bad.write_bytes(b"not a png")
    tracklets = load_dataset(str(tmp_path)).train
    ds = ClipDataset(tracklets, t=2, input_size=SIZE, train=True)
    with pytest.raises(TracklinkError, match=re.escape(f"cannot decode image {bad}")):
        list(make_loader(ds, PKTSampler(tracklets, p=1, k=2, seed=0), epoch=0, num_workers=workers))


def test_id_repeats_draw_each_identity_that_many_times_per_epoch():
    tracklets = _two_camera_set(n_ids=10)
    once = PKTSampler(tracklets, p=4, k=2, seed=5)
    twice = PKTSampler(tracklets, p=4, k=2, seed=5, repeats=2)
    assert len(twice) == 2 * len(once) == 4
    plan = twice.epoch_batches(0)
    assert plan[:2] == once.epoch_batches(0)  # the first pass is the plan of repeats=1, unchanged
    for batch in plan:
        pids = [tracklets[i].pid for i in batch]
        assert len(set(pids)) == 4  # still P distinct identities per batch
    counts = Counter(tracklets[i].pid for batch in plan for i in batch[::2])
    assert max(counts.values()) <= 2 and sum(counts.values()) == 16
    with pytest.raises(TracklinkError, match="at least 1"):
        PKTSampler(tracklets, p=4, k=2, repeats=0)
