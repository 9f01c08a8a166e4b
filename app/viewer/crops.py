"""People's crops for the panel: a few per tracklet, cut in the pipeline thread and kept beside the store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PyQt6.QtGui import QImage

CROPS_PER_TRACKLET = 3
CROP_SPACING_S = 1.0  # crops of one tracklet at least this far apart, so they show different poses
CROP_HEIGHT = 96  # px; thumbnails are this tall, their width follows the box


def crops_folder(db: str | Path) -> Path:
    """Where the crops of a store live: beside a SQLite file, or in the user cache for a server store (one
    folder per server and database, without credentials)."""
    import re

    from tracklink.app.store import is_server_url
    from tracklink.utils.paths import cache_dir

    if not is_server_url(db):
        path = Path(db).expanduser()
        return path.with_name(path.name + ".crops")
    where = re.sub(r"^[a-z]+://([^@/]*@)?", "", str(db)).split("?", 1)[0]
    return cache_dir() / "crops" / re.sub(r"[^A-Za-z0-9_.-]+", "_", where)


def to_qimage(bgr: np.ndarray) -> QImage:
    """A QImage that owns a copy of the pixels (the numpy buffer may be reused after we return)."""
    bgr = np.ascontiguousarray(bgr)
    h, w = bgr.shape[:2]
    return QImage(bgr.data, w, h, bgr.strides[0], QImage.Format.Format_BGR888).copy()


class CropBook:
    """A few crops per tracklet, kept in memory and beside the store, so reopened people keep their faces.

    The store holds boxes and embeddings but no pixels; a viewer without crops of the people it restored
    would show empty rows. Files go to `<db>.crops/<camera>/<track_id>_<frame>.jpg`; a camera that
    restarts in the store (its rows are replaced) loses its crops with them.
    """

    def __init__(self, root: Path | None):
        self.root = root
        self.crops: dict[str, list[tuple[float, QImage]]] = {}  # tracklet key -> [(timestamp, thumbnail)]

    def reset_camera(self, camera: str) -> None:
        for key in [k for k in self.crops if k.rpartition("/")[0] == camera]:
            del self.crops[key]
        if self.root is not None:
            shutil.rmtree(self.root / camera, ignore_errors=True)

    def offer(self, camera: str, track_id: int, frame: int, timestamp: float, image: np.ndarray,
              xyxy: np.ndarray) -> None:
        import cv2

        from tracklink.app.track import crop

        kept = self.crops.setdefault(f"{camera}/{track_id}", [])
        if len(kept) >= CROPS_PER_TRACKLET or (kept and abs(timestamp - kept[-1][0]) < CROP_SPACING_S):
            return
        pixels = crop(image, xyxy)
        h, w = pixels.shape[:2]
        if h < 2 or w < 2:
            return
        thumb = cv2.resize(pixels, (max(1, round(w * CROP_HEIGHT / h)), CROP_HEIGHT), interpolation=cv2.INTER_AREA)
        kept.append((timestamp, to_qimage(thumb)))
        if self.root is not None:
            folder = self.root / camera
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{track_id}_{frame}.jpg"), thumb)

    def load(self, tracklets) -> None:
        """Crops saved by an earlier run for these (restored) tracklets."""
        import cv2

        if self.root is None:
            return
        for t in tracklets:
            files = [p for p in (self.root / t.camera).glob(f"{t.track_id}_*.jpg") if p.stem.partition("_")[2].isdigit()]
            for path in sorted(files, key=lambda p: int(p.stem.partition("_")[2]))[:CROPS_PER_TRACKLET]:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is not None:
                    self.crops.setdefault(t.key, []).append((t.start_time, to_qimage(image)))

    def images(self, keys: list[str], limit: int) -> list[QImage]:
        """Up to `limit` crops, one from each tracklet in turn (so several tracklets all get a face)."""
        lists = [self.crops.get(k, []) for k in keys]
        out: list[QImage] = []
        for rank in range(CROPS_PER_TRACKLET):
            out += [kept[rank][1] for kept in lists if rank < len(kept)]
        return out[:limit]


__all__ = ["CROPS_PER_TRACKLET", "CropBook", "crops_folder", "to_qimage"]
