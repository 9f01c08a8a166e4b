from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from tracklink import TracklinkError
from tracklink.data.datasets import load_dataset, natsorted, parse_spec, select_ids

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"


def _img(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((8, 4, 3), value, np.uint8))
    return path


def _names(tracklets) -> list[list[str]]:
    return [[Path(f).name for f in t.frames] for t in tracklets]


# ------------------------------------------------------------------------------------------------ folder


def test_folder_layout_groups_by_camera_and_tracklet_token(tmp_path):
    for name in ["01_1.png", "01_10.png", "01_2.png", "02_a.jpg", "c3_t0002_000010.jpg", "c3_t0002_000009.jpg",
                 "c3_t0001_000001.jpg"]:
        _img(tmp_path / "0007" / name)
    _img(tmp_path / "0003" / "01_1.bmp")
    (tmp_path / "0003" / "notes.txt").write_text("not an image")
    (tmp_path / "LICENSE.md").write_text("licence")
    ds = load_dataset(str(tmp_path))  # a bare path is the folder layout
    assert ds.name == "folder" and ds.identities() == ["0003", "0007"]
    assert [t.key for t in ds.train] == ["0003/01", "0007/01", "0007/02", "0007/c3/t0001", "0007/c3/t0002"]
    assert [t.cam for t in ds.train] == ["01", "01", "02", "c3", "c3"]
    assert _names(ds.train)[1] == ["01_1.png", "01_2.png", "01_10.png"]  # natural order
    assert _names(ds.train)[4] == ["c3_t0002_000009.jpg", "c3_t0002_000010.jpg"]
    assert ds.query == ds.train and ds.gallery == ds.train  # no split: all-vs-all evaluation
    assert load_dataset(f"folder:{tmp_path}").train == ds.train


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(TracklinkError, match="does not exist"):
        load_dataset(str(tmp_path / "nope"))
    (tmp_path / "LICENSE.md").write_text("x")
    with pytest.raises(TracklinkError, match=re.escape(f"no identities found under {tmp_path}")):
        load_dataset(str(tmp_path))
    (tmp_path / "0001").mkdir()
    with pytest.raises(TracklinkError, match=r"0001 holds no images.*<pid>/<cam>_"):
        load_dataset(str(tmp_path))
    _img(tmp_path / "0001" / "nocamera.png")
    with pytest.raises(TracklinkError, match="cannot read the camera from .*nocamera.png"):
        load_dataset(str(tmp_path))
    with pytest.raises(TracklinkError, match="unknown dataset kind 'market'"):
        load_dataset(f"market:{tmp_path}")


def test_parse_spec():
    assert parse_spec("mars:/data/MARS") == ("mars", Path("/data/MARS"))
    assert parse_spec("DUKE:rel/dir") == ("duke", Path("rel/dir"))
    assert parse_spec("/data/pku") == ("folder", Path("/data/pku"))
    assert parse_spec("C:/data/pku") == ("folder", Path("C:/data/pku"))  # a drive letter is not a kind


# ------------------------------------------------------------------------------------------------ selection


IDS = [f"{i:03d}" for i in range(1, 41)]


def test_select_ids_ranges_and_names():
    assert select_ids(IDS, "1-28") == IDS[:28]
    assert select_ids(IDS, "29-40") == IDS[28:]
    assert select_ids(IDS, "005, 2-3,002") == ["002", "003", "005"]
    assert select_ids(IDS, "40-40") == ["040"]
    assert select_ids(natsorted(["10", "9", "1"]), "2-3") == ["9", "10"]  # natural order, 1-based


def test_select_ids_split_file(tmp_path):
    split = tmp_path / "val.txt"
    split.write_text("# validation ids\n007\n\n003  # a comment\n")
    assert select_ids(IDS, str(split)) == ["003", "007"]


@pytest.mark.parametrize("spec, message", [
    ("1-41", "outside 1-40"),
    ("0-3", "outside 1-40"),
    ("5-2", "outside 1-40"),
    ("999", "unknown identity '999'"),
    ("", "empty identity selection"),
    (" , ", "selects no identities"),
    ("splits/missing.txt", "split file splits/missing.txt not found"),
])
def test_select_ids_errors(spec, message):
    with pytest.raises(TracklinkError, match=message):
        select_ids(IDS, spec)


def test_select_ids_refuses_ambiguous_token():
    with pytest.raises(TracklinkError, match="both an identity name and an index range"):
        select_ids(["1-2", "a", "b"], "1-2")


def test_keep_and_load_with_ids(tmp_path):
    for pid in ("a", "b", "c"):
        _img(tmp_path / pid / "c1_0.png")
    ds = load_dataset(str(tmp_path), ids=["c", "a"])
    assert ds.identities("all") == ["a", "c"] and ds.identities("gallery") == ["a", "c"]
    with pytest.raises(TracklinkError, match=r"unknown identities \['z'\]"):
        load_dataset(str(tmp_path), ids=["a", "z"])
    with pytest.raises(TracklinkError, match="no identities selected"):
        load_dataset(str(tmp_path), ids=[])


# ------------------------------------------------------------------------------------------------ MARS


def _mars(root: Path, variant: str) -> None:
    # train: pid 1 cam 1 (3 frames) and cam 2 (2 frames); pid 3 cam 1 (1 frame)
    train = ["0001C1T0001F001.jpg", "0001C1T0001F002.jpg", "0001C1T0001F003.jpg", "0001C2T0002F001.jpg",
             "0001C2T0002F002.jpg", "0003C1T0001F001.jpg"]
    # test: pid 2 cam 1 (query), pid 2 cam 3, distractor pid 0, junk pid -1, pid 4 cam 2 (query), pid 4 cam 5
    test = ["0002C1T0001F001.jpg", "0002C1T0001F002.jpg", "0002C3T0004F001.jpg", "0000C2T0001F001.jpg",
            "00-1C4T0001F001.jpg", "0004C2T0001F001.jpg", "0004C5T0003F001.jpg", "0004C5T0003F002.jpg"]
    for name in train:
        _img(root / "bbox_train" / name[:4] / name)
    for name in test:
        _img(root / "bbox_test" / name[:4] / name)
    info = root / "info"
    info.mkdir()
    (info / "train_name.txt").write_text("\n".join(train) + "\n")
    (info / "test_name.txt").write_text("\n".join(test) + "\n")
    tr = np.array([[1, 3, 1, 1], [4, 5, 1, 2], [6, 6, 3, 1]])
    te = np.array([[1, 2, 2, 1], [3, 3, 2, 3], [4, 4, 0, 2], [5, 5, -1, 4], [6, 6, 4, 2], [7, 8, 4, 5]])
    query = np.array([[1, 5]])
    if variant == "mat":
        savemat(info / "tracks_train_info.mat", {"track_train_info": tr.astype(np.float64)})
        savemat(info / "tracks_test_info.mat", {"track_test_info": te.astype(np.float64)})
        savemat(info / "query_IDX.mat", {"query_IDX": query.astype(np.float64)})
    else:
        np.savetxt(info / "tracks_train_info.txt", tr, fmt="%d")
        np.savetxt(info / "track_test_info.txt", te, fmt="%d", delimiter=",")  # the other published spelling
        np.savetxt(info / "query_IDX.txt", query.T, fmt="%d")


@pytest.mark.parametrize("variant", ["mat", "txt"])
def test_mars(tmp_path, variant):
    _mars(tmp_path, variant)
    ds = load_dataset(f"mars:{tmp_path}")
    assert ds.identities("train") == ["0001", "0003"]
    assert [(t.pid, t.cam, t.key) for t in ds.train] == [("0001", "1", "0001/C1/T0001"),
                                                          ("0001", "2", "0001/C2/T0002"),
                                                          ("0003", "1", "0003/C1/T0001")]
    assert _names(ds.train)[0] == ["0001C1T0001F001.jpg", "0001C1T0001F002.jpg", "0001C1T0001F003.jpg"]
    assert all(Path(f).is_file() for t in ds.split("all") for f in t.frames)
    assert [(t.pid, t.cam) for t in ds.query] == [("0002", "1"), ("0004", "2")]
    # queries leave the gallery, junk (-1) is dropped, distractors (0) stay
    assert [(t.pid, t.cam) for t in ds.gallery] == [("0002", "3"), ("0000", "2"), ("0004", "5")]
    assert _names(ds.gallery)[2] == ["0004C5T0003F001.jpg", "0004C5T0003F002.jpg"]


def test_mars_errors(tmp_path):
    _mars(tmp_path, "txt")
    (tmp_path / "info" / "query_IDX.txt").unlink()
    with pytest.raises(TracklinkError, match="query_IDX.mat"):
        load_dataset(f"mars:{tmp_path}")
    np.savetxt(tmp_path / "info" / "query_IDX.txt", [1, 9], fmt="%d")
    with pytest.raises(TracklinkError, match="indexes outside the 6 test tracks"):
        load_dataset(f"mars:{tmp_path}")
    np.savetxt(tmp_path / "info" / "tracks_train_info.txt", [[1, 3, 2, 1]], fmt="%d")
    with pytest.raises(TracklinkError, match="has pid 2 but starts with image 0001C1T0001F001.jpg"):
        load_dataset(f"mars:{tmp_path}")


# ------------------------------------------------------------------------------------------------ iLIDS / PRID


def _two_cam(seq: Path, cams: tuple[str, str], pids_a: list[str], pids_b: list[str]) -> None:
    for cam, pids in zip(cams, (pids_a, pids_b)):
        for pid in pids:
            for f in (2, 10, 1):
                _img(seq / cam / pid / f"{cam}_{pid}_{f}.png")


def test_ilidsvid_seeded_half_split(tmp_path):
    pids = [f"person{i:03d}" for i in range(1, 11)]
    _two_cam(tmp_path / "i-LIDS-VID" / "sequences", ("cam1", "cam2"), pids, pids)
    ds = load_dataset(f"ilidsvid:{tmp_path}", seed=3)
    train, test = ds.identities("train"), ds.identities("query")
    assert len(train) == 5 and not set(train) & set(test) and sorted(train + test) == pids
    assert ds.identities("gallery") == test
    assert {t.cam for t in ds.query} == {"cam1"} and {t.cam for t in ds.gallery} == {"cam2"}
    assert {t.cam for t in ds.train} == {"cam1", "cam2"} and len(ds.train) == 10
    assert _names(ds.train)[0][0].endswith("_1.png") and _names(ds.train)[0][-1].endswith("_10.png")
    assert load_dataset(f"ilidsvid:{tmp_path}", seed=3).identities() == train  # deterministic
    splits = {tuple(load_dataset(f"ilidsvid:{tmp_path / 'i-LIDS-VID'}", seed=s).identities()) for s in range(5)}
    assert len(splits) > 1  # the seed matters


def test_prid2011_keeps_identities_seen_by_both_cameras(tmp_path):
    a = [f"person_{i:04d}" for i in range(1, 5)]
    b = a + ["person_0005", "person_0006"]
    _two_cam(tmp_path / "prid_2011" / "multi_shot", ("cam_a", "cam_b"), a, b)
    ds = load_dataset(f"prid2011:{tmp_path}")
    assert ds.identities("all") == a
    assert len(ds.identities("train")) == 2 and len(ds.query) == 2 and len(ds.gallery) == 2
    (tmp_path / "prid_2011" / "multi_shot" / "cam_b" / "person_0009").mkdir()
    with pytest.raises(TracklinkError, match="person_0009 holds no images"):
        load_dataset(f"prid2011:{tmp_path}")
    with pytest.raises(TracklinkError, match="cam_a"):
        load_dataset(f"prid2011:{tmp_path / 'prid_2011' / 'multi_shot' / 'cam_b'}")


# ------------------------------------------------------------------------------------------------ Duke


def test_duke(tmp_path):
    root = tmp_path / "DukeMTMC-VideoReID"
    for split, pid, trk, cam in [("train", "0001", "0001", 1), ("train", "0001", "0002", 5),
                                 ("train", "0002", "0001", 2), ("query", "0005", "0003", 3),
                                 ("gallery", "0005", "0003", 3), ("gallery", "0005", "0007", 8)]:
        for f in (12, 3):
            _img(root / split / pid / trk / f"{pid}_C{cam}_F{f:04d}_X{f:05d}.jpg")
    (root / "train" / "0002" / "0009").mkdir()  # an empty tracklet folder is skipped
    ds = load_dataset(f"duke:{tmp_path}")
    assert [(t.pid, t.cam, t.key) for t in ds.train] == [("0001", "1", "train/0001/0001"),
                                                          ("0001", "5", "train/0001/0002"),
                                                          ("0002", "2", "train/0002/0001")]
    assert _names(ds.train)[0] == ["0001_C1_F0003_X00003.jpg", "0001_C1_F0012_X00012.jpg"]
    assert [t.key for t in ds.query] == ["query/0005/0003"]
    assert [(t.cam, t.key) for t in ds.gallery] == [("3", "gallery/0005/0003"), ("8", "gallery/0005/0007")]
    (root / "train" / "0003" / "0001").mkdir(parents=True)
    with pytest.raises(TracklinkError, match="0003 holds no tracklets"):
        load_dataset(f"duke:{root}")


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.assets
def test_pku_reid_40():
    root = ASSETS / "reid" / "pku-reid-40"
    if not root.is_dir():
        pytest.skip(f"shared assets not found at {root}")
    ds = load_dataset(str(root))
    ids = ds.identities()
    assert len(ids) == 40 and len(ds.train) == 80
    assert all(len(t.frames) == 8 for t in ds.train)
    assert {t.cam for t in ds.train} == {"01", "02"}
    assert [Path(f).name for f in ds.train[0].frames] == [f"01_{k}.png" for k in range(1, 9)]
    train_ids = select_ids(ids, "1-28")
    assert train_ids == ids[:28]
    sub = ds.keep(train_ids)
    assert len(sub.identities()) == 28 and len(sub.train) == 56
    assert ds.keep(select_ids(ids, "29-40")).identities() == ids[28:]
