"""Video re-ID datasets: one reader per published layout, all producing the same `LabelledTracklet` records.

A dataset is named on the command line as ``KIND:PATH`` (``folder``, ``mars``, ``ilidsvid``, ``prid2011``,
``duke``); a bare path means ``folder``. Identity subsets are chosen with `select_ids` and applied with
`VideoDataset.keep` (or the ``ids`` argument of `load_dataset`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from tracklink import TracklinkError
from tracklink.utils.suffixes import IMAGE_SUFFIXES

SPLITS = ("train", "query", "gallery")

FOLDER_LAYOUT = ("<root>/<pid>/<cam>_<anything>.<jpg|png|...>, one folder per identity; "
                 "name files <cam>_t<tracklet>_<frame>.<ext> to split a camera into several tracklets")
MARS_LAYOUT = ("<root>/bbox_train/<pid>/*.jpg, <root>/bbox_test/<pid>/*.jpg and <root>/info/ holding "
               "train_name.txt, test_name.txt and tracks_{train,test}_info.mat + query_IDX.mat "
               "(or the .txt versions of those three)")
ILIDSVID_LAYOUT = "<root>/i-LIDS-VID/sequences/{cam1,cam2}/personXXX/*.png (or <root>/sequences/...)"
PRID2011_LAYOUT = "<root>/prid_2011/multi_shot/{cam_a,cam_b}/person_XXXX/*.png (or <root>/multi_shot/...)"
DUKE_LAYOUT = ("<root>/{train,query,gallery}/<pid>/<tracklet>/<pid>_C<cam>_F<frame>_X<...>.jpg "
               "(or <root>/DukeMTMC-VideoReID/...)")


def natural_key(text: str) -> tuple:
    """Sort key that orders digit runs by value, so ``01_2`` comes before ``01_10``."""
    # re.split with a capturing group alternates text/digits, so element types line up between keys.
    parts = re.split(r"(\d+)", text)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)) + (text,)


def natsorted(items: Iterable[str]) -> list[str]:
    return sorted(items, key=natural_key)


@dataclass(frozen=True)
class LabelledTracklet:
    """Image files of one identity in one camera, as a dataset lists them.

    Not the pipeline's `tracklink.app.records.Tracklet`, which holds a tracklet's pooled appearance; this is
    where such a tracklet's frames come from when the data is labelled (training, eval, calibrate).
    """

    pid: str  # identity name as in the dataset
    cam: str  # camera name
    frames: tuple[str, ...]  # image paths in temporal order
    key: str  # unique id within the dataset, e.g. "0001/c1/t0003"


@dataclass
class VideoDataset:
    name: str
    root: Path
    train: list[LabelledTracklet] = field(default_factory=list)
    query: list[LabelledTracklet] = field(default_factory=list)
    gallery: list[LabelledTracklet] = field(default_factory=list)

    def split(self, split: str) -> list[LabelledTracklet]:
        if split == "all":
            return self.train + self.query + self.gallery
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS + ('all',)}")
        return getattr(self, split)

    def identities(self, split: str = "train") -> list[str]:
        """Identity names of a split ("train", "query", "gallery" or "all"), in natural order."""
        return natsorted({t.pid for t in self.split(split)})

    def keep(self, ids: Sequence[str]) -> VideoDataset:
        """The same dataset restricted to `ids` in every split; an id found in no split is an error."""
        wanted = set(ids)
        if not wanted:
            raise TracklinkError(f"no identities selected from dataset {self.name} at {self.root}")
        unknown = wanted - set(self.identities("all"))
        if unknown:
            raise TracklinkError(f"unknown identities {natsorted(unknown)[:10]} for dataset {self.name} at "
                                 f"{self.root}; known ids look like {self.identities('all')[:5]}")
        return VideoDataset(self.name, self.root, *([t for t in self.split(s) if t.pid in wanted] for s in SPLITS))

    def summary(self) -> str:
        rows = [f"{s}: {len(self.identities(s))} ids, {len(self.split(s))} tracklets" for s in SPLITS]
        return f"{self.name} ({self.root}): " + "; ".join(rows)


# --------------------------------------------------------------------------------------------- selection


def select_ids(all_ids_sorted: Sequence[str], spec: str) -> list[str]:
    """Resolve an identity selection against the sorted id list (e.g. `VideoDataset.identities("all")`).

    `spec` is either the path of a split file (one pid per line, ``#`` starts a comment) or a comma-separated
    list whose items are either an exact pid or an index range ``A-B``: 1-based, inclusive, into
    `all_ids_sorted` (so ``1-28`` is the first 28 ids and ``29-40`` the next 12; a single index is ``5-5``).
    An item that is both a pid and a range is refused as ambiguous. The result keeps the order of
    `all_ids_sorted`, without duplicates.
    """
    ids = list(all_ids_sorted)
    spec = spec.strip()
    if not spec:
        raise TracklinkError("empty identity selection; give a split file or a list like '1-28' or '0001,0007'")
    path = Path(spec)
    if path.is_file():
        lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
        tokens, origin = [t for t in lines if t], f"split file {path}"
    elif "," not in spec and ("/" in spec or path.suffix in {".txt", ".lst", ".csv"}) and spec not in ids:
        raise TracklinkError(f"identity split file {path} not found; give an existing file (one pid per line) "
                             "or a comma-separated list of pids and 1-based ranges like '1-28'")
    else:
        tokens, origin = [t.strip() for t in spec.split(",") if t.strip()], f"selection {spec!r}"
    known = set(ids)
    chosen: set[str] = set()
    for token in tokens:
        rng = re.fullmatch(r"(\d+)-(\d+)", token)
        if rng and token in known:
            raise TracklinkError(f"{token!r} in {origin} is both an identity name and an index range; "
                                 "put the ids in a split file instead")
        if rng:
            a, b = int(rng.group(1)), int(rng.group(2))
            if not 1 <= a <= b <= len(ids):
                raise TracklinkError(f"range {token!r} in {origin} is outside 1-{len(ids)} "
                                     f"(1-based, inclusive, over the {len(ids)} sorted identities)")
            chosen.update(ids[a - 1:b])
        elif token in known:
            chosen.add(token)
        else:
            raise TracklinkError(f"unknown identity {token!r} in {origin}; ids look like {ids[:5]}, "
                                 "and ranges are written A-B (1-based)")
    if not chosen:
        raise TracklinkError(f"{origin} selects no identities")
    return [i for i in ids if i in chosen]


# --------------------------------------------------------------------------------------------- loading


def parse_spec(spec: str) -> tuple[str, Path]:
    """``KIND:PATH`` -> (kind, path); a bare path (or a Windows drive letter) means ``folder``."""
    match = re.fullmatch(r"([A-Za-z][\w-]+):(.+)", spec)
    if match and match.group(1).lower() in READERS:
        return match.group(1).lower(), Path(match.group(2)).expanduser()
    if match and not Path(spec).expanduser().exists():
        raise TracklinkError(f"unknown dataset kind {match.group(1)!r} in {spec!r}; "
                             f"expected KIND:PATH with KIND one of {sorted(READERS)}, or a bare folder path")
    return "folder", Path(spec).expanduser()


def load_dataset(spec: str, ids: Sequence[str] | None = None, *, seed: int = 0) -> VideoDataset:
    """Read a dataset named ``KIND:PATH``; `ids` keeps only those identities (in every split).

    `seed` picks the train/test identity split of iLIDS-VID and PRID2011, which have no official one.
    """
    kind, root = parse_spec(spec)
    if not root.is_dir():
        raise TracklinkError(f"dataset root {root} does not exist or is not a folder; "
                             f"expected the {kind} layout {LAYOUTS[kind]}")
    dataset = READERS[kind](root, seed)
    if not dataset.identities("all"):
        raise TracklinkError(f"no identities found under {root}; expected the {kind} layout {LAYOUTS[kind]}")
    _check_keys(dataset)
    return dataset if ids is None else dataset.keep(ids)


def load_identities(spec: str, ids: str | None) -> VideoDataset:
    """The dataset, restricted to the selected identities (ranges index the sorted list of all ids)."""
    dataset = load_dataset(spec)
    return dataset.keep(select_ids(dataset.identities("all"), ids)) if ids else dataset


def _check_keys(dataset: VideoDataset) -> None:
    # A key may appear in several splits (the folder layout puts every tracklet in all three), but it must
    # always name the same frames, or caches and evaluation keyed on it would mix tracklets up.
    seen: dict[str, LabelledTracklet] = {}
    for t in dataset.split("all"):
        if seen.setdefault(t.key, t) != t:
            raise TracklinkError(f"two different tracklets share the key {t.key!r} in {dataset.root}")


def _images(folder: Path) -> list[Path]:
    paths = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(paths, key=lambda p: natural_key(p.name))


def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: natural_key(p.name))


def _find_root(root: Path, marker: str, wrappers: Sequence[str]) -> Path:
    """Accept both the dataset folder itself and the folder the archive was unpacked into."""
    for base in (root, *(root / w for w in wrappers)):
        if (base / marker).is_dir():
            return base
    return root


def _read_folder(root: Path, seed: int) -> VideoDataset:
    token = re.compile(r"([^_]+)_t(\d+)_(.+)")
    tracklets = []
    for pid_dir in _subdirs(root):
        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        images = _images(pid_dir)
        if not images:
            raise TracklinkError(f"identity folder {pid_dir} holds no images; expected {FOLDER_LAYOUT}")
        for img in images:
            m = token.fullmatch(img.stem)
            if m:
                groups[(m.group(1), f"t{m.group(2)}")].append(str(img))
            elif "_" in img.stem:
                groups[(img.stem.split("_", 1)[0], "")].append(str(img))
            else:
                raise TracklinkError(f"cannot read the camera from {img}: expected {FOLDER_LAYOUT}")
        for (cam, trk), frames in sorted(groups.items(), key=lambda kv: tuple(map(natural_key, kv[0]))):
            key = f"{pid_dir.name}/{cam}" + (f"/{trk}" if trk else "")
            frames.sort(key=lambda f: natural_key(Path(f).name))
            tracklets.append(LabelledTracklet(pid_dir.name, cam, tuple(frames), key))
    # No official split: evaluation is all-vs-all across cameras, so every tracklet is query and gallery.
    return VideoDataset("folder", root, list(tracklets), list(tracklets), list(tracklets))


def _read_table(info: Path, stem: str, mat_var: str) -> np.ndarray:
    """Load a MARS info table from ``<stem>.mat`` (official) or ``<stem>.txt`` (re-published variants)."""
    names = [stem, stem.replace("tracks_", "track_")]
    for name in names:
        if (info / f"{name}.mat").is_file():
            from scipy.io import loadmat

            data = loadmat(str(info / f"{name}.mat"))
            key = mat_var if mat_var in data else next((k for k in data if not k.startswith("__")), None)
            if key is None:
                raise TracklinkError(f"{info / name}.mat holds no table; expected the variable {mat_var!r}")
            return np.asarray(data[key]).astype(np.int64)
        if (info / f"{name}.txt").is_file():
            text = (info / f"{name}.txt").read_text().replace(",", " ")
            return np.loadtxt(text.splitlines(), dtype=np.int64, ndmin=2)
    raise TracklinkError(f"missing {info / stem}.mat (or .txt); expected the MARS layout {MARS_LAYOUT}")


def _read_mars(root: Path, seed: int) -> VideoDataset:
    root = _find_root(root, "bbox_train", ["MARS", "mars"])
    info = root / "info" if (root / "info").is_dir() else root
    for sub in ("bbox_train", "bbox_test"):
        if not (root / sub).is_dir():
            raise TracklinkError(f"missing {root / sub}; expected the MARS layout {MARS_LAYOUT}")

    def names(split: str) -> list[str]:
        path = info / f"{split}_name.txt"
        if not path.is_file():
            raise TracklinkError(f"missing {path}; expected the MARS layout {MARS_LAYOUT}")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]

    def tracks(table: np.ndarray, img_names: list[str], home: str) -> list[LabelledTracklet | None]:
        if table.ndim != 2 or table.shape[1] < 4:
            raise TracklinkError(f"MARS {home} track table has shape {table.shape}; expected rows "
                                 "[start, end, pid, camid]")
        out: list[LabelledTracklet | None] = []
        for row, (start, end, pid, cam) in enumerate(table[:, :4].tolist()):
            if not 1 <= start <= end <= len(img_names):
                raise TracklinkError(f"MARS {home} track {row + 1} spans images {start}-{end}, outside the "
                                     f"{len(img_names)} names in {info}/{home.split('_')[1]}_name.txt")
            if pid == -1:  # junk boxes: dropped, as in the official evaluation
                out.append(None)
                continue
            frames = img_names[start - 1:end]  # 1-based, inclusive (MATLAB)
            first = frames[0]  # e.g. 0001C1T0001F001.jpg: pid, camera, tracklet, frame
            if not first[:4].isdigit() or int(first[:4]) != pid:
                raise TracklinkError(f"MARS {home} track {row + 1} has pid {pid} but starts with image "
                                     f"{first}; the info tables do not match the name lists in {info}")
            key = f"{first[:4]}/C{cam}/{first[6:11]}"
            paths = tuple(str(root / home / n[:4] / n) for n in frames)
            out.append(LabelledTracklet(first[:4], str(cam), paths, key))
        return out

    train = [t for t in tracks(_read_table(info, "tracks_train_info", "track_train_info"), names("train"),
                               "bbox_train") if t is not None]
    test = tracks(_read_table(info, "tracks_test_info", "track_test_info"), names("test"), "bbox_test")
    query_idx = _read_table(info, "query_IDX", "query_IDX").reshape(-1) - 1  # 1-based into the test tracks
    if query_idx.size and (query_idx.min() < 0 or query_idx.max() >= len(test)):
        raise TracklinkError(f"query_IDX in {info} indexes outside the {len(test)} test tracks")
    is_query = np.zeros(len(test), dtype=bool)
    is_query[query_idx] = True
    # pid 0 (distractors) stays in the gallery, as in the standard protocol; query tracks leave it.
    query = [test[i] for i in query_idx.tolist() if test[i] is not None]
    gallery = [t for t, q in zip(test, is_query.tolist()) if t is not None and not q]
    return VideoDataset("mars", root, train, query, gallery)


def _read_two_camera(name: str, root: Path, seq_dir: Path, cams: tuple[str, str], seed: int,
                     layout: str) -> VideoDataset:
    """iLIDS-VID and PRID2011: one tracklet per identity per camera, split at random by identity."""
    per_cam: list[dict[str, LabelledTracklet]] = []
    for cam in cams:
        cam_dir = seq_dir / cam
        if not cam_dir.is_dir():
            raise TracklinkError(f"missing {cam_dir}; expected the {name} layout {layout}")
        found = {}
        for pid_dir in _subdirs(cam_dir):
            frames = tuple(str(p) for p in _images(pid_dir))
            if not frames:
                raise TracklinkError(f"identity folder {pid_dir} holds no images; expected the {name} layout "
                                     f"{layout}")
            found[pid_dir.name] = LabelledTracklet(pid_dir.name, cam, frames, f"{pid_dir.name}/{cam}")
        per_cam.append(found)
    # PRID's cam_b sees identities that never appear in cam_a: only ids in both cameras can be matched.
    both = natsorted(set(per_cam[0]) & set(per_cam[1]))
    # The literature uses random halves; a seeded permutation makes "split N" reproducible.
    order = np.random.default_rng(seed).permutation(len(both))
    train_ids = {both[i] for i in order[: len(both) // 2]}
    test_ids = [p for p in both if p not in train_ids]
    train = [per_cam[c][p] for p in both if p in train_ids for c in (0, 1)]
    return VideoDataset(name, root, train, [per_cam[0][p] for p in test_ids], [per_cam[1][p] for p in test_ids])


def _read_ilidsvid(root: Path, seed: int) -> VideoDataset:
    base = _find_root(root, "sequences", ["i-LIDS-VID"])
    return _read_two_camera("ilidsvid", base, base / "sequences", ("cam1", "cam2"), seed, ILIDSVID_LAYOUT)


def _read_prid2011(root: Path, seed: int) -> VideoDataset:
    base = _find_root(root, "multi_shot", ["prid_2011", "prid2011"])
    return _read_two_camera("prid2011", base, base / "multi_shot", ("cam_a", "cam_b"), seed, PRID2011_LAYOUT)


def _read_duke(root: Path, seed: int) -> VideoDataset:
    root = _find_root(root, "train", ["DukeMTMC-VideoReID"])
    cam_re = re.compile(r"_C(\d+)_F")
    splits: dict[str, list[LabelledTracklet]] = {}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            raise TracklinkError(f"missing {split_dir}; expected the DukeMTMC-VideoReID layout {DUKE_LAYOUT}")
        tracklets = []
        for pid_dir in _subdirs(split_dir):
            before = len(tracklets)
            for trk_dir in _subdirs(pid_dir):
                images = _images(trk_dir)
                if not images:
                    continue
                cams = {m.group(1) if (m := cam_re.search(p.name)) else None for p in images}
                if len(cams) != 1 or None in cams:
                    raise TracklinkError(f"tracklet folder {trk_dir} mixes cameras or has unnamed frames; "
                                         f"expected {DUKE_LAYOUT}")
                tracklets.append(LabelledTracklet(pid_dir.name, cams.pop(), tuple(str(p) for p in images),
                                          f"{split}/{pid_dir.name}/{trk_dir.name}"))
            if len(tracklets) == before:
                raise TracklinkError(f"identity folder {pid_dir} holds no tracklets; expected {DUKE_LAYOUT}")
        splits[split] = tracklets
    return VideoDataset("duke", root, splits["train"], splits["query"], splits["gallery"])


READERS: dict[str, Callable[[Path, int], VideoDataset]] = {
    "folder": _read_folder,
    "mars": _read_mars,
    "ilidsvid": _read_ilidsvid,
    "prid2011": _read_prid2011,
    "duke": _read_duke,
}
LAYOUTS = {"folder": FOLDER_LAYOUT, "mars": MARS_LAYOUT, "ilidsvid": ILIDSVID_LAYOUT,
           "prid2011": PRID2011_LAYOUT, "duke": DUKE_LAYOUT}
