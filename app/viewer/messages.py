"""What the pipeline thread sends the UI: small immutable records, built off the UI thread."""

from __future__ import annotations

from dataclasses import dataclass, field

from PyQt6.QtGui import QImage


@dataclass(frozen=True)
class Box:
    """One tracked person as the UI paints it, in display-image pixels."""

    xyxy: tuple[float, float, float, float]
    track_id: int
    global_id: int | None
    confidence: float


@dataclass
class TileFrame:
    camera: str
    index: int
    timestamp: float
    image: QImage  # display size, owns its pixels
    boxes: list[Box]


@dataclass
class Person:
    """One global identity, as the people panel shows it."""

    global_id: int
    cameras: list[str]
    first_seen: float
    last_seen: float
    boxes: int
    live: bool  # some tracklet of it is still being tracked
    segments: list[tuple[str, float, float]]  # (camera, start, end) per tracklet: the timeline
    crops: list[QImage] = field(default_factory=list)


@dataclass
class StageSnapshot:
    fps: float | None  # camera-frames per second over the last few seconds
    ms: dict[str, float]  # mean milliseconds per step, per stage
    frames: int  # camera-frames processed so far
    steps: int


@dataclass
class RunInfo:
    backend: str  # the re-ID runtime as the embedder names it, e.g. "onnxruntime:CPUExecutionProvider"
    detector: str
    reid: str
    threshold: float
    db: str
    restored: int  # identities brought back from the store


@dataclass
class SearchResult:
    label: str
    hits: list[tuple[int, float]]  # (global id, cosine similarity), best first
    error: str = ""


def backend_label(backend: str) -> str:
    """"onnxruntime:CUDAExecutionProvider" -> "ORT GPU (CUDA)": what an operator needs to read."""
    name, _, rest = backend.partition(":")
    if name == "onnxruntime":
        provider = rest.replace("ExecutionProvider", "")
        return f"ORT {'CPU' if provider == 'CPU' else f'GPU ({provider})'}"
    if name == "torch":
        return f"torch {'CPU' if rest.startswith('cpu') else f'GPU ({rest})'}"
    if name == "tensorrt":
        version, _, precision = rest.partition(":")
        return f"TensorRT {version} {precision} GPU".replace("  ", " ")
    return backend


__all__ = ["Box", "Person", "RunInfo", "SearchResult", "StageSnapshot", "TileFrame", "backend_label"]
