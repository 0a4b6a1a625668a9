"""MP4 recordings <-> uint8 RGB frames, with PyAV.

Frames are addressed by their index in the file (DROID stores one video frame per trajectory
row), never by the container's frame rate, which DROID files misreport (60 fps for 15 Hz
content). Only the frames asked for are converted to RGB; the rest are decoded and dropped,
which is what makes sparse reads (4 Hz out of 15 Hz) cheap.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vjepa2_ros.errors import ConfigError, DataError

HALVES = ("full", "left")


def probe_frame_count(path: str | Path) -> int:
    """Frames in the first video stream: the container's count, or a decode pass when it has none."""
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        if stream.frames > 0:
            return int(stream.frames)
        try:
            return sum(1 for _ in container.decode(stream))
        except av.error.FFmpegError as e:
            raise DataError(f"{path}: video decode failed ({e})") from None


def read_frames(path: str | Path, rows: np.ndarray | None = None, half: str = "full",
                size: tuple[int, int] | None = None, expected_count: int | None = None) -> np.ndarray:
    """Decode frames `rows` (ascending indices; None = all) -> uint8 [K, H, W, 3] RGB.

    half: "left" keeps the left half of a side-by-side stereo file; size: (height, width) to
    resize to (of the kept half); expected_count: fail unless the file holds exactly this many
    frames (a truncated recording is an error, not a shorter episode).
    """
    if half not in HALVES:
        raise ConfigError(f"half must be one of {HALVES}, got {half!r}")
    path = Path(path)
    wanted = None if rows is None else np.asarray(rows, dtype=np.int64)
    if wanted is not None and wanted.size and (np.any(np.diff(wanted) < 0) or wanted[0] < 0):
        raise ConfigError(f"rows to read from {path} must be ascending and non-negative")
    n_out = wanted.size if wanted is not None else expected_count      # known: fill one array, no stacking copy
    out: np.ndarray | list[np.ndarray] | None = None if n_out is not None else []
    filled = count = 0
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"            # frame-parallel decoding
        try:
            for frame in container.decode(stream):
                take = 1 if wanted is None else 0
                while wanted is not None and filled + take < wanted.size and wanted[filled + take] == count:
                    take += 1                  # a row may be asked for twice (resampling repeats)
                count += 1
                if not take:
                    continue
                rgb = _to_rgb(frame, half, size)
                if isinstance(out, list):
                    out.append(rgb)
                    continue
                if out is None:
                    out = np.empty((n_out, *rgb.shape), dtype=np.uint8)
                if filled + take > n_out:
                    continue                   # more frames than expected: keep counting, fail below
                out[filled:filled + take] = rgb
                filled += take
        except av.error.FFmpegError as e:
            raise DataError(f"{path}: video decode failed after {count} frames ({e}); the file is damaged") from None
    if expected_count is not None and count != expected_count:
        raise DataError(f"{path}: holds {count} video frames, expected {expected_count}")
    if wanted is not None and filled < wanted.size:
        raise DataError(f"{path}: holds {count} video frames, but frame {int(wanted[filled])} was asked for")
    if out is None or len(out) == 0:
        raise DataError(f"{path}: no video frames decoded")
    return np.stack(out) if isinstance(out, list) else out


def write_frames(path: str | Path, frames: np.ndarray, fps: float = 15.0, codec: str = "libx264",
                 crf: int = 18) -> None:
    """uint8 [T, H, W, 3] RGB -> MP4 (yuv420p; H and W must be even). `fps` is only what the
    container declares; readers here index frames by position."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ConfigError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    T, H, W, _ = frames.shape
    if H % 2 or W % 2:
        raise ConfigError(f"MP4 (yuv420p) frames need an even height and width, got {H}x{W}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


def parse_size(text: str) -> tuple[int, int]:
    """"HEIGHTxWIDTH" -> (height, width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"size must be HEIGHTxWIDTH, e.g. 180x320, got {text!r}") from None
    if h < 2 or w < 2:
        raise ConfigError(f"size {text!r} must be at least 2x2")
    return h, w


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise DataError(f"{path}: video file not found")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as e:
        raise DataError(f"{path}: not a readable video file ({e})") from None


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise DataError(f"{path}: contains no video stream")
    return container.streams.video[0]


def _to_rgb(frame: av.VideoFrame, half: str, size: tuple[int, int] | None) -> np.ndarray:
    if half == "left":
        if size is None:
            return frame.to_ndarray(format="rgb24")[:, : frame.width // 2]
        h, w = size
        return frame.to_ndarray(format="rgb24", width=2 * w, height=h)[:, :w]
    if size is None:
        return frame.to_ndarray(format="rgb24")
    h, w = size
    return frame.to_ndarray(format="rgb24", width=w, height=h)
