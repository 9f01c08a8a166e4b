"""Which tracks are reported: a track must prove it is a person by its score or by moving.

Poles, signs and posters are detected as people at a middling score, in the same place, frame after frame.
A tracker that starts tracks at that score (ultralytics' default new_track_thresh is 0.25) turns each of them
into one track that lives the whole video: a tracklet, an identity, a row in the people panel. Raising the
new-track threshold removes them, but also every person the detector is unsure of (far, dark, occluded),
who then costs recall and identity continuity.

The rule here is score hysteresis over the track's life, relaxed by motion. A track is reported from the
first frame at which either
- one of its boxes has scored at least `report_thresh` (a person standing still, seen clearly), or
- its box centre has moved at least `report_motion` box heights from where the track started (a person
  walking, however unsure the detector is of them).
Until then the tracker keeps the track (it still claims its boxes, so they do not start other tracks) but
tracklink does not report it; a static object at a middling score is never reported. Once reported, a
track stays reported, and its boxes from before are given back to the store (app/track.py,
`UnreportedHistory`); a live display has shown those frames already.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class _Candidate:
    centre: np.ndarray  # (2,) box centre at the track's first frame
    best_score: float
    moved: float  # largest centre displacement so far, in box heights


class ReportGate:
    """Per-camera: decides, frame by frame, which of the tracker's tracks are reported."""

    def __init__(self, report_thresh: float, report_motion: float):
        self.report_thresh = float(report_thresh)
        self.report_motion = float(report_motion)
        self._candidates: dict[int, _Candidate] = {}
        self._reported: set[int] = set()

    def admit(self, track_id: int, xyxy: np.ndarray, score: float) -> bool:
        """Whether this frame's box of the track is reported (once true for a track, true for good)."""
        if track_id in self._reported:
            return True
        centre = np.array([(xyxy[0] + xyxy[2]) / 2, (xyxy[1] + xyxy[3]) / 2], np.float64)
        height = max(float(xyxy[3] - xyxy[1]), 1.0)
        c = self._candidates.get(track_id)
        if c is None:
            c = self._candidates[track_id] = _Candidate(centre, score, 0.0)
        c.best_score = max(c.best_score, float(score))
        c.moved = max(c.moved, float(np.linalg.norm(centre - c.centre)) / height)
        if c.best_score >= self.report_thresh or c.moved >= self.report_motion:
            self._reported.add(track_id)
            del self._candidates[track_id]
            return True
        return False

    def reported(self, track_id: int) -> bool:
        return track_id in self._reported

    def forget(self, track_ids: set[int] | list[int]) -> None:
        """Tracks the tracker dropped: nothing to remember about them."""
        for tid in track_ids:
            self._candidates.pop(tid, None)
            self._reported.discard(tid)


__all__ = ["ReportGate"]
