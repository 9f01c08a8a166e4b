"""Person detection: YOLOX ONNX under ONNX Runtime, or any ultralytics model. Person class only.

`make_detector("yolox:PATH")` runs a YOLOX export (the shared yolox_nano.onnx, or a TensorRT engine built
from it) with its own letterbox and grid decode; anything else goes to `ultralytics.YOLO` (.onnx/.engine, or
the published yolo11n.pt, downloaded once and checked against its sha256). A pickled .pt from any other path
runs code when loaded, so it needs an explicit trust_pickle (`--trust-pickle`).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from tracklink import TracklinkError
from tracklink.app.records import Detections
from tracklink.models.checkpoint import PICKLE_FREE_SUFFIXES, untrusted_pickle_error
from tracklink.models.weights import DETECTORS, default_detector, fetch_detector

log = logging.getLogger(__name__)

PERSON = 0  # COCO class id of "person", for YOLOX and ultralytics' COCO models alike
YOLOX_STRIDES = (8, 16, 32)
YOLOX_PAD = 114
OFFLINE_HINT = ("pass a local model with --detector, e.g. `--detector yolox:path/to/yolox_nano.onnx` or an "
                "ultralytics ONNX export")


@dataclass(frozen=True)
class DetectorConfig:
    """Score and NMS IoU thresholds. The field defaults are ultralytics' tracking mode for its YOLO models
    (`model.track` lowers conf to 0.1; NMS IoU 0.7); `for_detector` gives each detector family its own."""

    # Low on purpose: ByteTrack's second association recovers occluded people from 0.1-0.25 boxes; the
    # tracker's own thresholds decide which boxes start tracks.
    conf: float = 0.1
    iou: float = 0.7  # NMS IoU; crowds need a high value or neighbours suppress each other (ultralytics' default)
    # Two-pass NMS when set below `iou` (`two_pass_nms`): boxes are kept at this stricter IoU first, and a
    # box that pass dropped comes back only if it overlaps no kept box by more than `iou`.
    strict_iou: float | None = None

    @classmethod
    def for_detector(cls, spec: str | None) -> "DetectorConfig":
        """The measured defaults of the detector's family: YOLOX (also the packaged default, None) or
        ultralytics YOLO."""
        return YOLOX_DEFAULTS if not spec or spec.lower().startswith("yolox:") else cls()


# YOLOX-nano (rectangular input), chosen by bench/tracking.py (README, "Tracking defaults"), on its objective
# (higher is better): score 0.3 (0.05 and 0.1: -0.0172, 0.2: -0.0168, against 0.0145), NMS IoU 0.55 (0.45:
# 0.0106, 0.5: 0.0135, 0.6: -0.0192, 0.65: -0.0586, 0.7: -0.0249). With BoT-SORT's appearance cue and the
# background camera-motion estimate, the boxes under 0.3 that ByteTrack's second association would take
# back add more false matches than they recover here. Two-pass NMS with a strict pass at 0.4: the same
# MOTA and IDF1 as one pass at 0.55 on every tuning sequence (objective 0.0142 both, with camera motion on
# 100 corners; strict 0.45 and 0.5: 0.0133), and on the check sequences +0.0091 against -0.0154, where it keeps
# the person's own box that a straddling one displaced at MOT17-10's last frames (`two_pass_nms`).
YOLOX_DEFAULTS = DetectorConfig(conf=0.3, iou=0.55, strict_iou=0.4)


def two_pass_nms(xywh: np.ndarray, scores: np.ndarray, conf: float, iou: float,
                 strict_iou: float | None = None) -> np.ndarray:
    """Indices of the boxes kept, best score first: OpenCV's greedy NMS at `iou`, or two passes.

    Greedy NMS at a crowd-friendly IoU lets a box that straddles two people, overlapping each by about half,
    win over a person's own box under it whenever the detector scores it higher (YOLOX-nano does, where two
    people cross). Two passes keep the strict pass's answer there, and the crowd's recall: pass one is greedy
    NMS at `strict_iou`; pass two brings back, best score first, each box it dropped that overlaps no box
    kept so far by more than `iou` (a neighbour half hidden by another person, not a duplicate of one).
    """
    import cv2

    boxes, ranked = np.asarray(xywh, np.float64), np.asarray(scores, np.float32)

    def greedy(threshold: float, order: np.ndarray) -> np.ndarray:
        return np.asarray(cv2.dnn.NMSBoxes(boxes, order, conf, threshold), np.int64).reshape(-1)

    if strict_iou is None or strict_iou >= iou:
        return greedy(iou, ranked)
    # Pass two is greedy NMS at `iou` that visits pass one's boxes first: lifted above every other score,
    # they are kept (they overlap each other by at most `strict_iou` < `iou`), and each dropped box, best
    # first, is kept only if it overlaps no box kept before it by more than `iou`.
    lifted = ranked.copy()
    lifted[greedy(strict_iou, ranked)] += 1.0  # scores lie in 0..1
    kept = greedy(iou, lifted)
    return kept[np.argsort(-scores[kept], kind="stable")]


class Detector(Protocol):
    def __call__(self, images: Sequence[np.ndarray]) -> list[Detections]: ...


class NotYoloxError(TracklinkError):
    """A loadable model whose input or output is not YOLOX's: it may still be an ultralytics export."""


class YoloxDetector:
    """YOLOX with raw grid outputs (xy offsets, log wh, sigmoid obj and class scores).

    An ONNX runs under ONNX Runtime; a TensorRT engine built from it (with its tracklink sidecar, task
    "detector") runs through export/tensorrt.py's runner.
    """

    def __init__(self, path: str | Path, config: DetectorConfig = DetectorConfig(), device: str | None = None,
                 threads: int | None = None, rect: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise TracklinkError(f"detector model not found: {self.path}")
        if self.path.suffix.lower() in (".engine", ".plan"):
            from tracklink.export.tensorrt import TrtRunner

            runner = TrtRunner(self.path, int(device.split(":")[1]) if device and ":" in device else 0)
            if runner.sidecar.task != "detector":
                raise TracklinkError(f"{self.path} is a {runner.sidecar.task} engine, not a detector")
            self.input_size = tuple(runner.sidecar.input_size)
            self._run = runner
            anchors = None
        else:
            from tracklink.export.ort_session import open_session

            session = open_session(self.path, device=device, intra_op_threads=threads,
                                   hint="the file may be truncated or not an ONNX model")
            inp = session.get_inputs()[0]
            if len(inp.shape) != 4 or not all(isinstance(d, int) for d in inp.shape[2:]):
                raise NotYoloxError(f"{self.path}: expected a fixed NCHW input, got {inp.shape}")
            self.input_size = (int(inp.shape[2]), int(inp.shape[3]))
            anchors = session.get_outputs()[0].shape
            self._run = self._session_runner(session)
        self.config = config
        self._grids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        grid, _ = self._grid_for(self.input_size)
        if anchors is not None and (len(anchors) != 3
                                    or (isinstance(anchors[1], int) and anchors[1] != len(grid))):
            raise NotYoloxError(f"{self.path}: output {anchors} is not a raw YOLOX grid for input {self.input_size} "
                                f"({len(grid)} anchors expected); export it without decode_in_inference")
        self.rect = False  # letterbox to the whole input size until a rectangular input is shown to work
        if rect and anchors is not None:
            self._open_rectangular(device, threads)

    @staticmethod
    def _session_runner(session: Any) -> Callable[[np.ndarray], np.ndarray]:
        name = session.get_inputs()[0].name
        return lambda blob: session.run(None, {name: blob})[0]

    def _open_rectangular(self, device: str | None, threads: int | None) -> None:
        """Run the export at any height and width (multiples of 32) if its graph allows: a 4:3 frame then
        costs a 416x320 input instead of 416x416, a 16:9 one 416x256 (ultralytics' "rect" inference).
        Each frame is still scaled to fit the export's input size, so detections are of the same scale;
        only the padding below or beside the picture goes. YOLOX's convolutions, pooling and upsampling
        take any such size; a graph with a fixed-shape reshape does not, and then keeps its square input.
        YOLOX-nano on 1 thread, the whole call (bench/detector_input.py): 15.1 -> 11.6 ms a 480x360 frame,
        15.4 -> 9.6 ms a 1920x1080 one."""
        import onnx

        from tracklink.export.ort_session import open_session

        try:
            model = onnx.load(str(self.path))
            dims = model.graph.input[0].type.tensor_type.shape.dim
            dims[2].dim_param, dims[3].dim_param = "height", "width"
            model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "anchors"
            del model.graph.value_info[:]  # shapes inferred for the fixed size no longer hold
            session = open_session(self.path, device=device, intra_op_threads=threads,
                                   model_bytes=model.SerializeToString())
            run = self._session_runner(session)
            h, w = self.input_size
            probe = (h - YOLOX_STRIDES[-1] * max(1, h // 128), w)  # 320 for 416: not the export's own size
            out = run(np.full((1, 3, *probe), YOLOX_PAD, np.float32))
        except Exception as exc:  # an export whose graph is tied to its input size
            log.info("%s runs at its fixed %dx%d input only (%s)", self.path.name, *self.input_size[::-1],
                     str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__)
            return
        if out.ndim != 3 or out.shape[1] != len(self._grid_for(probe)[0]):
            log.info("%s gives %s at %s: running it at its fixed input only", self.path.name, out.shape, probe)
            return
        self._run, self.rect = run, True

    def _grid_for(self, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(anchor cell xy, stride) of every output row of an (h, w) input, made once per size."""
        if size not in self._grids:
            h, w = size
            grids, strides = [], []
            for s in YOLOX_STRIDES:
                ys, xs = np.meshgrid(np.arange(h // s), np.arange(w // s), indexing="ij")
                grids.append(np.stack([xs, ys], -1).reshape(-1, 2))
                strides.append(np.full((grids[-1].shape[0], 1), s))
            self._grids[size] = (np.concatenate(grids).astype(np.float32),
                                 np.concatenate(strides).astype(np.float32))
        return self._grids[size]

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Letterbox keeping aspect, scaled to fit the input size and padded with 114 at the bottom/right, as
        YOLOX trains; with `rect`, padded only up to the next multiple of the largest stride (32)."""
        import cv2

        h, w = self.input_size
        r = min(h / image.shape[0], w / image.shape[1])
        nh, nw = int(image.shape[0] * r), int(image.shape[1] * r)
        if self.rect:
            step = YOLOX_STRIDES[-1]
            h, w = min(h, -(-nh // step) * step), min(w, -(-nw // step) * step)
        padded = np.full((h, w, 3), YOLOX_PAD, np.uint8)
        padded[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32), r

    def detect(self, image: np.ndarray) -> Detections:
        import cv2

        blob, r = self.preprocess(image)
        raw = self._run(blob)[0]
        scores = raw[:, 4] * raw[:, 5 + PERSON]
        keep = scores >= self.config.conf
        if not keep.any():
            return Detections.empty()
        grid, stride = self._grid_for(blob.shape[2:])
        raw, scores = raw[keep], scores[keep]
        xy = (raw[:, :2] + grid[keep]) * stride[keep]
        wh = np.exp(raw[:, 2:4]) * stride[keep]
        xyxy = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1) / r
        xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, image.shape[1])
        xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, image.shape[0])
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        idx = two_pass_nms(xywh, scores, self.config.conf, self.config.iou, self.config.strict_iou)
        return Detections(xyxy[idx].astype(np.float32), scores[idx].astype(np.float32),
                          np.full(len(idx), PERSON, np.int64))

    def __call__(self, images: Sequence[np.ndarray]) -> list[Detections]:
        # The shared export has a fixed batch of 1: one run per image.
        return [self.detect(image) for image in images]


def github_reachable(timeout: float = 3.0) -> bool:
    """Where the published detector is downloaded from; one TCP connect, not a retry loop."""
    try:
        socket.create_connection(("github.com", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def resolve_ultralytics_model(spec: str, trust_pickle: bool = False) -> str:
    """A published name (downloaded once, sha256-checked) or a file; a pickled file only with trust_pickle.

    A published name never resolves to a same-named file in the working directory: a file planted there
    would otherwise run as the default detector.
    """
    if spec in DETECTORS:  # a published name: its pinned file only
        return str(fetch_detector(spec))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise TracklinkError(f"detector model not found: {spec}; give a file, yolox:PATH.onnx for YOLOX, or "
                             f"a published name ({', '.join(DETECTORS)}); {OFFLINE_HINT}")
    if path.suffix.lower() not in PICKLE_FREE_SUFFIXES and not trust_pickle:
        raise untrusted_pickle_error(spec)
    return str(path)


class UltralyticsDetector:
    """Any ultralytics detection model (.pt/.onnx/.engine); its own pre/post-processing, person class only."""

    def __init__(self, spec: str = "yolo11n.pt", config: DetectorConfig = DetectorConfig(),
                 device: str | None = None, imgsz: int | None = None, trust_pickle: bool = False):
        from ultralytics import YOLO

        self.path = resolve_ultralytics_model(spec, trust_pickle)
        try:
            self.model = YOLO(self.path, task="detect")
        except Exception as exc:  # download, unpickling or format errors: all user-fixable here
            hint = OFFLINE_HINT if not Path(spec).is_file() else "is it an ultralytics detection model?"
            raise TracklinkError(f"cannot load detector {spec}: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:200] if str(exc) else ''}; {hint}") from None
        self.config, self.device, self.imgsz = config, device, imgsz

    def __call__(self, images: Sequence[np.ndarray]) -> list[Detections]:
        if not images:
            return []
        kwargs = dict(classes=[PERSON], conf=self.config.conf, iou=self.config.iou, verbose=False)
        if self.device is not None:
            kwargs["device"] = self.device
        if self.imgsz is not None:
            kwargs["imgsz"] = self.imgsz
        results = self.model.predict(list(images), **kwargs)
        out = []
        for res in results:
            boxes = res.boxes.cpu().numpy()
            out.append(Detections(boxes.xyxy.astype(np.float32), boxes.conf.astype(np.float32),
                                  boxes.cls.astype(np.int64)))
        return out


def make_detector(spec: str | None = None, config: DetectorConfig = DetectorConfig(),
                  device: str | None = None, threads: int | None = None, trust_pickle: bool = False) -> Detector:
    """`yolox:PATH` for a YOLOX ONNX, else a path or published name (default: the packaged YOLOX-nano).

    `threads`: intra-op CPU threads of a YOLOX ONNX (None: ONNX Runtime's default, one per core).
    `trust_pickle`: allow a pickled ultralytics file (.pt) from an arbitrary path; loading one runs its code.
    """
    spec = spec or default_detector()  # the packaged YOLOX-nano
    if spec in DETECTORS and DETECTORS[spec].packaged:
        spec = f"yolox:{fetch_detector(spec)}"
    if spec.lower().startswith("yolox:"):
        path = spec.split(":", 1)[1]
        return YoloxDetector(path, config, device, threads)
    if Path(spec).suffix.lower() == ".onnx" and Path(spec).is_file():
        try:
            detector = YoloxDetector(spec, config, device, threads)
        except NotYoloxError:
            pass  # an ultralytics export, checked below
        else:
            log.warning("%s has a raw YOLOX grid output: running it as YOLOX (write --detector yolox:%s to say so)",
                        spec, spec)
            return detector
    return probe_detector(UltralyticsDetector(spec, config, device, trust_pickle=trust_pickle), spec)


def probe_detector(detector: Detector, spec: str) -> Detector:
    """Run one blank image through a freshly loaded detector: ultralytics loads lazily, so a model that
    cannot detect would otherwise fail at the first frame, after the videos were opened."""
    try:
        out = detector([np.zeros((64, 64, 3), np.uint8)])
    except Exception as exc:  # ultralytics raises plain exceptions for a wrong model, shape or runtime
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise TracklinkError(f"detector {spec} fails on an image ({type(exc).__name__}: {first}); give an "
                             "ultralytics detection model, or yolox:PATH for a YOLOX ONNX") from None
    if len(out) != 1 or not isinstance(out[0], Detections):
        raise TracklinkError(f"detector {spec} returned {len(out)} results for one image; is it a detection model?")
    return detector


__all__ = ["Detector", "DetectorConfig", "YOLOX_DEFAULTS", "two_pass_nms", "UltralyticsDetector", "YoloxDetector",
           "make_detector", "resolve_ultralytics_model"]
