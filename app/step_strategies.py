"""In which order one pipeline step tracks and embeds: one strategy per kind of tracker.

- Motion-only trackers (ByteTrack) never look at appearance, so a step tracks first and then embeds only the
  boxes that became tracks and are due by the `EmbedSchedule`.
- Appearance trackers (BoT-SORT) match detections on their embeddings where boxes overlap, so a step embeds
  the fit high-score detections whose match is contested first, tracks, then embeds as above.
Either way the crops of all cameras go to the embedder in one call per pass (`EmbedFn`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from tracklink import TracklinkError
from tracklink.app.records import Detections, Frame
from tracklink.app.track import CameraTracker, TrackStep

# One crop job per fit box: (image, xyxy). The function returns, per frame, its crops' (embedding, attention).
CropJobs = list[list[tuple[np.ndarray, np.ndarray]]]
EmbedFn = Callable[[CropJobs], list[list[tuple[np.ndarray, float]]]]


@dataclass(frozen=True)
class EmbedSchedule:
    """Which fit crops of a track are embedded: all of its first `warmup`, then one every `every` frames.

    Neighbouring frames of one person give nearly the same embedding, so once a tracklet has a few, more of
    them barely move its mean, yet embedding every tracked box at every frame was the largest stage of a
    step (a crowded 480x360 camera: ~10 fit crops a frame at 2 ms each, beside 14 ms of YOLOX-nano).
    Every 3 frames embedded 44% as many crops as every frame (23 -> 31 fps there); on the semi-synthetic
    two-camera scene (tests/synthetic_mtmc.py, seeds 0-9) MTMC IDF1 went from 85.0 (every crop) to 83.4, a
    difference of less than one linking decision there. Every 4 (the default since two-pass NMS) against 3,
    `bench/mtmc_seeds.py [--embed-every 3]`: MTMC IDF1 0.851 and 0.852, the tracking benchmark identical, and
    MOT17-04's embedding 7.0 instead of 8.5 ms a frame (`bench/pipeline_speed.py`). Spaced crops keep the
    mean drawn from the whole tracklet (pose and light change). `every=1` embeds every fit crop. With
    BOTSORT, detections whose match is contested are embedded before matching as well
    (`EmbedContestedThenTrack`).
    """

    warmup: int = 5  # = LinkConfig.min_embeddings, so that linking at maturity is not delayed
    every: int = 4  # frames of the camera between two embeddings of a track after its warmup

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.every < 1:
            raise TracklinkError(f"embed schedule needs warmup >= 0 and every >= 1, got {self}")


class DueFn(Protocol):
    def __call__(self, camera: str, track_id: int) -> bool: ...


@dataclass
class StepTiming:
    track_s: float = 0.0
    embed_s: float = 0.0


class TrackThenEmbed:
    """Motion-only trackers: track every camera, then embed the tracked boxes that are fit and due."""

    def run(self, trackers: Sequence[CameraTracker], frames: Sequence[Frame], detections: Sequence[Detections],
            fit: Sequence[np.ndarray], embed: EmbedFn, due: DueFn) -> tuple[list[TrackStep], StepTiming]:
        clock, timing = time.perf_counter, StepTiming()
        t0 = clock()
        steps = [c.update(f, d) for c, f, d in zip(trackers, frames, detections)]
        timing.track_s = clock() - t0
        t0 = clock()
        embed_due_tracks(steps, frames, detections, fit, embed, due)
        timing.embed_s = clock() - t0
        return steps, timing


def embed_due_tracks(steps: Sequence[TrackStep], frames: Sequence[Frame], detections: Sequence[Detections],
                     fit: Sequence[np.ndarray], embed: EmbedFn, due: DueFn) -> list[list[int]]:
    """Embed each frame's tracked boxes that are fit and due, in one call, onto their tracks; returns the
    indices (into each step's tracks) of the tracks embedded."""
    wanted = [[k for k, i in enumerate(s.detection_index) if m[i] and due(f.camera, s.tracks[k].track_id)]
              for s, m, f in zip(steps, fit, frames)]
    per_frame = embed([[(f.image, d.xyxy[s.detection_index[k]]) for k in ks]
                       for f, d, s, ks in zip(frames, detections, steps, wanted)])
    for s, ks, embs in zip(steps, wanted, per_frame):
        for k, (e, a) in zip(ks, embs):
            s.tracks[k].embedding, s.tracks[k].attention = e, a
    return [ks[:len(embs)] for ks, embs in zip(wanted, per_frame)]  # none without an embedder


class EmbedContestedThenTrack:
    """Appearance trackers (BOTSORT): embed the detections whose match appearance could decide, track, then
    embed the tracked boxes that are fit and due (as `TrackThenEmbed`) and were not embedded yet.

    BOTSORT uses appearance only in its first association, over high-score boxes, and only where boxes
    overlap (`CameraTracker.ambiguous`): embedding every high-score box at every frame, as BOTSORT does
    with its own encoder, cost 16 of 33 ms a frame on a crowded 480x360 camera, most of it for boxes whose
    match was never in question. Embeddings made after matching are handed to the tracker too, so its tracks
    keep a recent appearance for their next contested match.
    """

    def run(self, trackers: Sequence[CameraTracker], frames: Sequence[Frame], detections: Sequence[Detections],
            fit: Sequence[np.ndarray], embed: EmbedFn, due: DueFn) -> tuple[list[TrackStep], StepTiming]:
        clock, timing = time.perf_counter, StepTiming()
        t0 = clock()
        contested = [m & (d.confidence >= c.appearance_min_conf) & c.ambiguous(d)
                     for m, d, c in zip(fit, detections, trackers)]
        per_frame = embed([[(f.image, d.xyxy[i]) for i in np.flatnonzero(m)]
                           for f, d, m in zip(frames, detections, contested)])
        before: list[list[tuple[np.ndarray, float] | None]] = []
        for d, m, embs in zip(detections, contested, per_frame):
            full: list[tuple[np.ndarray, float] | None] = [None] * len(d)
            for i, pair in zip(np.flatnonzero(m), embs):
                full[i] = pair
            before.append(full)
        timing.embed_s = clock() - t0
        t0 = clock()
        steps = [c.update(f, d, [p[0] if p is not None else None for p in e])
                 for c, f, d, e in zip(trackers, frames, detections, before)]
        timing.track_s = clock() - t0
        t0 = clock()
        for s, e in zip(steps, before):
            for track, i in zip(s.tracks, s.detection_index):
                if e[i] is not None:
                    track.attention = e[i][1]
        not_yet = [m & np.array([p is None for p in e], bool) for m, e in zip(fit, before)]
        wanted = embed_due_tracks(steps, frames, detections, not_yet, embed, due)
        for c, s, ks in zip(trackers, steps, wanted):
            for k in ks:
                c.remember_appearance(s.tracks[k].track_id, s.tracks[k].embedding)
        timing.embed_s += clock() - t0
        return steps, timing


def strategy_for(trackers: Sequence[CameraTracker]) -> TrackThenEmbed | EmbedContestedThenTrack:
    """Contested boxes first as soon as one camera's tracker matches on appearance."""
    return EmbedContestedThenTrack() if any(c.uses_appearance for c in trackers) else TrackThenEmbed()


__all__ = ["CropJobs", "EmbedContestedThenTrack", "EmbedSchedule", "StepTiming", "TrackThenEmbed", "embed_due_tracks",
           "strategy_for"]
