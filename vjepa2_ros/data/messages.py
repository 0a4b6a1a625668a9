"""ROS 2 messages <-> numpy, as pure functions.

Readers take anything with the messages' field names (rosbags' typestore classes, rclpy
messages, a SimpleNamespace), so the bag tools and the ROS nodes share them. Builders take a
`types` mapping from ROS type names ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
"builtin_interfaces/msg/Time", ...) to message classes: rosbags' `typestore.types` (the default:
Jazzy), or a dict of rclpy classes in a node. Array fields are filled with numpy arrays as
rosbags wants them; an rclpy node converts `data` with `array.array("B", data.tobytes())`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from vjepa2_ros.errors import ConfigError, DataError

RAW_ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}    # encoding -> channels
COMPRESSED_FORMATS = ("jpeg", "png")


@functools.cache
def default_types() -> Mapping[str, type]:
    """rosbags' Jazzy message classes (built once)."""
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS2_JAZZY).types


# -- time -------------------------------------------------------------------------------------------

def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (sec, nanosec) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header(stamp_ns: int, frame_id: str, types: Mapping[str, type]) -> Any:
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                        frame_id=frame_id)


def seconds_to_ns(stamp_s: float) -> int:
    """Seconds -> integer nanoseconds, exact to the nanosecond at epoch-sized times."""
    sec = np.floor(float(stamp_s))
    return int(sec) * 1_000_000_000 + int(round((float(stamp_s) - sec) * 1e9))


def ns_to_seconds(stamp_ns: np.ndarray) -> np.ndarray:
    """Integer nanoseconds [...] -> float64 seconds, rounded once (whole seconds + fraction)."""
    stamp_ns = np.asarray(stamp_ns, dtype=np.int64)
    return (stamp_ns // 1_000_000_000).astype(np.float64) + (stamp_ns % 1_000_000_000) / 1e9


# -- images -----------------------------------------------------------------------------------------

def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs Image (rgb8, bgr8, rgba8, bgra8, mono8) or CompressedImage (jpeg, png)
    -> uint8 [H, W, 3] RGB. The kind is told by the fields: `format` = compressed, `encoding` = raw."""
    if hasattr(msg, "encoding"):
        return _raw_to_rgb(msg)
    if hasattr(msg, "format"):
        return _compressed_to_rgb(msg)
    raise DataError(f"{type(msg).__name__} is not an image message (no 'encoding' or 'format' field)")


def rgb_to_image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera", encoding: str = "rgb8",
                     types: Mapping[str, type] | None = None) -> Any:
    """uint8 [H, W, 3] RGB -> sensor_msgs/Image in `encoding` (rgb8, bgr8, rgba8, bgra8, mono8)."""
    rgb = _check_rgb(rgb)
    if encoding not in RAW_ENCODINGS:
        raise ConfigError(f"image encoding {encoding!r} is not supported; expected one of {sorted(RAW_ENCODINGS)}")
    pixels = {"rgb8": lambda x: x, "bgr8": lambda x: x[..., ::-1],
              "rgba8": lambda x: np.concatenate([x, np.full_like(x[..., :1], 255)], axis=-1),
              "bgra8": lambda x: np.concatenate([x[..., ::-1], np.full_like(x[..., :1], 255)], axis=-1),
              "mono8": lambda x: cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_RGB2GRAY)}[encoding](rgb)
    types = types or default_types()
    H, W = rgb.shape[:2]
    return types["sensor_msgs/msg/Image"](header=header(stamp_ns, frame_id, types), height=H, width=W,
                                          encoding=encoding, is_bigendian=0, step=W * RAW_ENCODINGS[encoding],
                                          data=np.ascontiguousarray(pixels, dtype=np.uint8).reshape(-1))


def rgb_to_compressed_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera", fmt: str = "jpeg",
                          jpeg_quality: int = 90, types: Mapping[str, type] | None = None) -> Any:
    """uint8 [H, W, 3] RGB -> sensor_msgs/CompressedImage ("jpeg" or "png", as image_transport writes)."""
    rgb = _check_rgb(rgb)
    if fmt not in COMPRESSED_FORMATS:
        raise ConfigError(f"compressed format {fmt!r} is not supported; expected one of {COMPRESSED_FORMATS}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise DataError(f"{fmt} encoding of a {rgb.shape} image failed")
    types = types or default_types()
    return types["sensor_msgs/msg/CompressedImage"](header=header(stamp_ns, frame_id, types),
                                                    format=f"rgb8; {fmt} compressed bgr8", data=buf.reshape(-1))


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise DataError(f"expected a uint8 [H, W, 3] RGB image, got {rgb.dtype} {rgb.shape}")
    return rgb


def _raw_to_rgb(msg: Any) -> np.ndarray:
    enc = str(msg.encoding).lower()
    if enc not in RAW_ENCODINGS:
        raise DataError(f"Image field 'encoding' is {msg.encoding!r}; supported: {sorted(RAW_ENCODINGS)}")
    H, W, C, step = int(msg.height), int(msg.width), RAW_ENCODINGS[enc], int(msg.step)
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, dtype=np.uint8)
    if step < W * C or data.size < step * H:
        raise DataError(f"Image {W}x{H} {enc}: field 'data' has {data.size} bytes and 'step' {step}, "
                        f"expected step >= {W * C} and {step * H} bytes")
    px = data[: step * H].reshape(H, step)[:, : W * C].reshape(H, W, C)
    if enc == "mono8":
        return np.repeat(px, 3, axis=2)
    if enc.startswith("bgr"):
        px = px[..., 2::-1]
    return np.ascontiguousarray(px[..., :3])


def _compressed_to_rgb(msg: Any) -> np.ndarray:
    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt or not any(f in fmt for f in ("jpeg", "jpg", "png")):
        raise DataError(f"CompressedImage field 'format' is {msg.format!r}; supported: jpeg, png")
    buf = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None:
        raise DataError(f"CompressedImage ({msg.format!r}, {buf.size} bytes): field 'data' does not decode")
    return np.ascontiguousarray(bgr[..., ::-1])


# -- joint states -----------------------------------------------------------------------------------

def joint_state_to_array(msg: Any, joint_names: Sequence[str]) -> tuple[np.ndarray, float]:
    """sensor_msgs/JointState -> (positions [len(joint_names)] in that order, stamp in seconds)."""
    names = [str(n) for n in msg.name]
    position = np.asarray(msg.position, dtype=np.float64)
    if position.shape != (len(names),):
        raise DataError(f"JointState has {len(names)} names but field 'position' has shape {position.shape}")
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in joint_names if n not in index]
    if missing:
        raise DataError(f"JointState field 'name' lacks joints {missing}; it has {names}")
    return position[[index[n] for n in joint_names]], stamp_to_ns(msg.header.stamp) / 1e9


def array_to_joint_state(q: np.ndarray, joint_names: Sequence[str], stamp_ns: int,
                         velocity: np.ndarray | None = None, types: Mapping[str, type] | None = None) -> Any:
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    if q.shape != (len(joint_names),):
        raise DataError(f"{len(joint_names)} joint names for {q.shape[0]} positions")
    types = types or default_types()
    return types["sensor_msgs/msg/JointState"](
        header=header(stamp_ns, "", types), name=list(joint_names), position=q,
        velocity=np.zeros(0) if velocity is None else np.asarray(velocity, dtype=np.float64), effort=np.zeros(0))


# -- poses ------------------------------------------------------------------------------------------

def pose_msg_to_matrix(msg: Any) -> np.ndarray:
    """geometry_msgs Pose or PoseStamped -> homogeneous transform [4, 4]."""
    pose = msg.pose if hasattr(msg, "pose") else msg
    p, o = pose.position, pose.orientation
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(np.array([o.x, o.y, o.z, o.w], dtype=np.float64))
    T[:3, 3] = (p.x, p.y, p.z)
    return T


def matrix_to_pose_msg(T: np.ndarray, stamp_ns: int, frame_id: str = "base",
                       types: Mapping[str, type] | None = None) -> Any:
    """[4, 4] -> geometry_msgs/PoseStamped."""
    T = np.asarray(T, dtype=np.float64)
    types = types or default_types()
    x, y, z, w = matrix_to_quaternion(T[:3, :3])
    return types["geometry_msgs/msg/PoseStamped"](
        header=header(stamp_ns, frame_id, types),
        pose=types["geometry_msgs/msg/Pose"](position=types["geometry_msgs/msg/Point"](x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                                             orientation=types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)))


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> rotation [3, 3]."""
    n = float(np.linalg.norm(q))
    if not np.isfinite(n) or n < 1e-9:
        raise DataError(f"orientation quaternion {q.tolist()} is not a rotation (norm {n})")
    x, y, z, w = q / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Rotation [3, 3] -> unit quaternion (x, y, z, w) with w >= 0 (Shepperd's method)."""
    m = np.asarray(R, dtype=np.float64)
    tr = np.trace(m)
    diag = np.diag(m)
    k = int(np.argmax(np.r_[tr, diag]))
    if k == 0:
        s = 2 * np.sqrt(1 + tr)
        q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4])
    else:
        i = k - 1
        j, l = (i + 1) % 3, (i + 2) % 3
        s = 2 * np.sqrt(1 + m[i, i] - m[j, j] - m[l, l])
        q = np.empty(4)
        q[i] = s / 4
        q[j] = (m[j, i] + m[i, j]) / s
        q[l] = (m[l, i] + m[i, l]) / s
        q[3] = (m[l, j] - m[j, l]) / s
    q /= np.linalg.norm(q)
    return q if q[3] >= 0 else -q
