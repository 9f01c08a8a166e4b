"""Per-camera tracking through ultralytics' trackers, and which crops are fit for appearance."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tracklink import TracklinkError
from tracklink.app.detect import make_detector
from tracklink.app.records import Detections, Frame
from tracklink.app.track import AppearanceConfig, CameraTracker, TrackerConfig, appearance_mask, crop


def dets(boxes, conf=0.9) -> Detections:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Detections(boxes, np.full(len(boxes), conf, np.float32), np.zeros(len(boxes), np.int64))


def frame(i: int, camera: str = "cam", shape=(480, 640)) -> Frame:
    return Frame(camera, i, (i - 1) / 10, np.zeros((*shape, 3), np.uint8))


def test_appearance_mask_skips_small_cut_and_covered_boxes():
    cfg = AppearanceConfig(min_height=48, min_width=16, edge_margin=2, max_overlap=0.5)
    boxes = dets([
        [100, 100, 140, 220],  # clean
        [300, 100, 310, 130],  # too small
        [0, 200, 40, 320],  # cut by the left edge
        [400, 360, 450, 480],  # cut by the bottom edge
        [500, 100, 560, 250],  # 2/3 covered by the next box
        [520, 100, 580, 250],  # 2/3 covered by the previous box
    ])
    assert appearance_mask(boxes, (480, 640), cfg).tolist() == [True, False, False, False, False, False]
    # Only confident boxes occlude: the same pair with one weak box keeps the confident one.
    pair = Detections(boxes.xyxy[4:], np.array([0.9, 0.15], np.float32), np.zeros(2, np.int64))
    assert appearance_mask(pair, (480, 640), cfg).tolist() == [True, False]
    assert appearance_mask(Detections.empty(), (480, 640), cfg).shape == (0,)


def test_crop_is_clipped_to_the_image():
    image = np.arange(480 * 640 * 3, dtype=np.uint32).reshape(480, 640, 3).astype(np.uint8)
    c = crop(image, np.array([-10.5, 470.2, 30.0, 500.0]))
    assert c.shape == (10, 30, 3) and np.array_equal(c, image[470:480, 0:30])


@pytest.mark.parametrize("kind", ["bytetrack", "botsort"])
def test_ids_persist_and_end(kind):
    """Two people walk; one leaves. Ids stay; the leaver's track ends after the tracker's buffer."""
    tracker = CameraTracker("cam", TrackerConfig(kind, {"track_buffer": 5, "gmc_method": "none"}
                                                 if kind == "botsort" else {"track_buffer": 5}))
    ended_at = {}
    ids = []
    for i in range(1, 26):
        boxes = [[100 + 4 * i, 100, 160 + 4 * i, 260]]
        if i <= 10:
            boxes.append([400 - 3 * i, 120, 450 - 3 * i, 270])
        emb = [np.eye(8, dtype=np.float32)[k] for k in range(len(boxes))]
        step = tracker.update(frame(i), dets(boxes), emb if tracker.uses_appearance else None)
        ids.append({t.track_id: t.xyxy[0] for t in step.tracks})
        for tid in step.ended:
            ended_at[tid] = i
        for t, k in zip(step.tracks, step.detection_index):  # each track points at the box it matched
            assert np.abs(t.xyxy - np.asarray(boxes[k])).max() < 8
    walker = [min(d, key=d.get) for d in ids if d]
    assert len(set(walker)) == 1, "the walker kept one id"
    leaver = {tid for d in ids[:10] for tid in d} - set(walker)
    assert len(leaver) == 1
    (gone,) = leaver
    assert 10 < ended_at[gone] <= 10 + 5 + 2  # removed once the buffer of 5 frames ran out
    assert tracker.finish() == [walker[0]]


@pytest.mark.parametrize("kind", ["bytetrack", "botsort"])
def test_first_boxes_of_a_track_are_given_back_when_it_is_reported(kind):
    """A person appears after the first frame, stands unsure (score below report_thresh) for three frames,
    then walks: the report gate holds the track until it has moved, and its earlier boxes then come back in
    `backfill`, once, oldest first. A box seen in one frame only is never reported nor given back."""
    options = {"report_thresh": 0.8, "report_motion": 0.25, **({"gmc_method": "none"} if kind == "botsort" else {})}
    tracker = CameraTracker("cam", TrackerConfig(kind, options))
    shift = {2: 0, 3: 0, 4: 0, 5: 20, 6: 40, 7: 60}  # px to the right; 40 px = 0.25 box heights
    reported, backfills = {}, {}
    for i in range(1, 8):
        boxes = [[100 + shift[i], 100, 160 + shift[i], 260]] if i in shift else []
        if i == 5:
            boxes.append([400, 50, 430, 120])  # a one-frame blip
        d = dets(boxes, conf=0.7)
        emb = [np.eye(8, dtype=np.float32)[k] for k in range(len(d))]
        step = tracker.update(frame(i), d, emb if tracker.uses_appearance else None)
        reported[i] = [t.track_id for t in step.tracks]
        backfills[i] = [(t.track_id, t.frame) for t in step.backfill]
    (tid,) = {t for ids in reported.values() for t in ids}
    first = min(i for i, ids in reported.items() if ids)
    assert first >= 6 and all(reported[i] for i in range(first, 8)), "held while it stood, reported once it walked"
    assert backfills[first] == [(tid, f) for f in range(2, first)], "every earlier frame, once, oldest first"
    assert all(not b for i, b in backfills.items() if i != first)


def test_botsort_appearance_is_needed_only_where_matches_are_contested():
    """Two people walk towards each other past a third who stands apart: only the boxes overlapping both
    walkers' tracks (or sharing one) are contested; the bystander never is, and before any track none are."""
    tracker = CameraTracker("cam", TrackerConfig("botsort", {"gmc_method": "none"}))
    bystander = [500, 100, 560, 260]
    assert not tracker.ambiguous(dets([bystander])).any()
    contested_at = []
    for i in range(1, 12):
        boxes = [[100 + 12 * i, 100, 160 + 12 * i, 260], [300 - 12 * i, 100, 360 - 12 * i, 260], bystander]
        d = dets(boxes)
        contested = tracker.ambiguous(d)
        assert not contested[2]
        if contested[:2].any():
            contested_at.append(i)
        tracker.update(frame(i), d, [np.eye(8, dtype=np.float32)[k] for k in range(3)])
    assert contested_at and contested_at[0] > 3, "contested only once the walkers come close"


def test_botsort_receives_our_embeddings():
    """BOTSORT's appearance state is fed from the embeddings we pass, detection by detection."""
    tracker = CameraTracker("cam", TrackerConfig("botsort", {"gmc_method": "none"}))
    assert tracker.uses_appearance
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=16).astype(np.float32) for _ in range(2)]
    feats = [f / np.linalg.norm(f) for f in feats]
    boxes = [[100, 100, 160, 260], [400, 120, 450, 270]]
    step = None
    for i in range(1, 4):
        # the second box is unfit (None): its track must carry no appearance
        step = tracker.update(frame(i), dets(boxes), [feats[0], None])
    assert len(step.tracks) == 2
    by_det = {int(k): t for k, t in zip(step.detection_index, step.tracks)}
    np.testing.assert_allclose(by_det[0].embedding, feats[0])
    assert by_det[1].embedding is None
    inner = {t.track_id: t for t in tracker._tracker.tracked_stracks}
    np.testing.assert_allclose(inner[by_det[0].track_id].smooth_feat, feats[0], atol=1e-6)
    assert inner[by_det[1].track_id].smooth_feat is None


def test_unknown_tracker_or_option_is_a_user_error():
    with pytest.raises(TracklinkError, match="unknown tracker"):
        CameraTracker("cam", TrackerConfig("sort"))
    with pytest.raises(TracklinkError, match="track_bufer"):
        CameraTracker("cam", TrackerConfig("bytetrack", {"track_bufer": 3}))


def test_tracks_on_real_frames_follow_detections(yolox_onnx: Path, mot17_dir: Path):
    """MOT17-05 with YOLOX: every output track sits on a detection of that frame, ids are unique per frame
    and most people keep their id over the sequence."""
    detector = make_detector(f"yolox:{yolox_onnx}")
    tracker = CameraTracker("MOT17-05", TrackerConfig("bytetrack"))
    files = sorted((mot17_dir / "MOT17-05-FRCNN" / "img1").glob("*.jpg"))
    seen: dict[int, int] = {}
    for k, f in enumerate(files, 1):
        image = cv2.imread(str(f))
        d = detector([image])[0]
        step = tracker.update(Frame("MOT17-05", k, k / 14, image), d)
        ids = [t.track_id for t in step.tracks]
        assert len(ids) == len(set(ids))
        for t, i in zip(step.tracks, step.detection_index):
            # the Kalman box is near the detection it matched
            a, b = t.xyxy, d.xyxy[i]
            inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            assert inter / union > 0.5
            seen[t.track_id] = seen.get(t.track_id, 0) + 1
    long_lived = [tid for tid, n in seen.items() if n >= len(files) - 1]
    assert len(long_lived) >= 2, seen
