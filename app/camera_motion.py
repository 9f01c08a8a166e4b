"""Camera motion between frames, measured on the background only, for BoT-SORT's motion compensation.

BoT-SORT shifts every track's predicted box by the camera's motion before matching. ultralytics' estimators
(its `gmc_method`s) take corners from the whole frame, so where the background is plain, most corners sit on
the people, and their walk is taken for the camera's: on a fixed camera, every track is then pushed along
with the crowd. Measured on our benchmark (bench/tracking.py), sparseOptFlow, orb and ecc each cut IDF1 on
the fixed cameras of the semi-synthetic scenes from about 0.95 to 0.35-0.78.

`BackgroundFlow` (`gmc_method: backgroundFlow`) keeps ultralytics' sparse optical flow and adds two rules:
- corners are taken only outside every detected box (all scores, not only the confident ones), widened a
  little for the limbs and shadow around a box;
- a camera moves the whole picture, so the motion is believed only when the corners that agree with it
  are spread across the frame: in at least 3 of its 4 columns and 2 of its 4 rows (a person the detector
  missed, even a near one, is narrower than that). Otherwise the camera is taken as still.

It runs on the pipeline's thread at every frame, so it is kept cheap: 100 corners and 2 pyramid levels above
the frame (at half size, 2 levels follow a pan of up to ~80 px a frame). Against 200 corners and 3 levels,
`bench/camera_motion.py` (MOT17-mini at 480x360, detections masked out): 1.0-1.2 instead of 1.4-1.8 ms a
frame, the estimated translation within 0.4 px on average (0.75 px at most, MOT17-05, a panning camera),
and the tracking benchmark all but unchanged (`bench/tracking.py try`: MOTA and IDF1 equal on 11 of 12
sequences, one synthetic camera +0.004 MOTA and -0.002 IDF1).
"""

from __future__ import annotations

import numpy as np

NAME = "backgroundFlow"


class BackgroundFlow:
    """The interface ultralytics' trackers call (`method`, `apply`, `reset_params`), on background corners."""

    method = NAME

    def __init__(self, downscale: int = 2, grid: int = 4, min_columns: int = 3, min_rows: int = 2,
                 box_margin: float = 0.15, max_corners: int = 100, levels: int = 2) -> None:
        self.downscale, self.grid, self.min_columns, self.min_rows = max(1, downscale), grid, min_columns, min_rows
        self.box_margin, self.max_corners, self.levels = box_margin, max_corners, levels
        self.boxes = np.zeros((0, 4), np.float32)  # every detection of the coming frame (set by the tracker)
        self.reset_params()

    def reset_params(self) -> None:
        self._prev: np.ndarray | None = None
        self._corners: np.ndarray | None = None

    def apply(self, raw_frame: np.ndarray, detections: np.ndarray | None = None) -> np.ndarray:
        """2x3 affine from the previous frame to this one (identity when the camera is taken as still)."""
        import cv2

        gray = cv2.cvtColor(raw_frame, cv2.COLOR_BGR2GRAY) if raw_frame.ndim == 3 else raw_frame
        h, w = gray.shape
        d = self.downscale
        gray = cv2.resize(gray, (w // d, h // d)) if d > 1 else gray
        warp = np.eye(2, 3)
        # A stream that changes resolution starts over rather than failing at every frame after.
        if (self._prev is not None and self._prev.shape == gray.shape and self._corners is not None
                and len(self._corners) >= 4):
            moved, status, _ = cv2.calcOpticalFlowPyrLK(self._prev, gray, self._corners, None, maxLevel=self.levels)
            ok = status.ravel().astype(bool)
            src, dst = self._corners[ok], moved[ok]
            if len(src) >= 4:
                estimate, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC)
                if estimate is not None and self._spread(dst[inliers.ravel().astype(bool)], gray.shape):
                    warp = estimate
                    warp[:, 2] *= d
        self._prev = gray
        self._corners = cv2.goodFeaturesToTrack(gray, maxCorners=self.max_corners, qualityLevel=0.01,
                                                minDistance=3, blockSize=3, mask=self._background(gray.shape))
        return warp

    def _background(self, shape: tuple[int, int]) -> np.ndarray:
        """255 where corners may be taken: inside a 2% border, outside every (widened) detected box."""
        h, w = shape
        mask = np.zeros((h, w), np.uint8)
        mask[int(0.02 * h):int(0.98 * h), int(0.02 * w):int(0.98 * w)] = 255
        for x1, y1, x2, y2 in np.asarray(self.boxes, np.float32).reshape(-1, 4) / self.downscale:
            mx, my = self.box_margin * (x2 - x1), self.box_margin * (y2 - y1)
            mask[max(int(y1 - my), 0):max(int(y2 + my + 1), 0), max(int(x1 - mx), 0):max(int(x2 + mx + 1), 0)] = 0
        return mask

    def _spread(self, points: np.ndarray, shape: tuple[int, int]) -> bool:
        """Whether the agreeing corners reach `min_columns` columns and `min_rows` rows of the grid."""
        h, w = shape
        xy = points.reshape(-1, 2)
        columns = np.unique(np.clip((xy[:, 0] * self.grid / w).astype(int), 0, self.grid - 1))
        rows = np.unique(np.clip((xy[:, 1] * self.grid / h).astype(int), 0, self.grid - 1))
        return len(columns) >= self.min_columns and len(rows) >= self.min_rows


__all__ = ["BackgroundFlow", "NAME"]
