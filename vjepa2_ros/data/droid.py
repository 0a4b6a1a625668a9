"""Raw DROID episodes (trajectory.h5 + metadata_*.json + recordings/MP4) <-> `Episode`.

Layout and keys: spec/DROID_FORMAT.md. One video frame per trajectory row; the MP4 container's
frame rate is ignored (DROID files claim 60 fps for 15 Hz content) and rows are picked by their
recorded timestamps. Some released MP4s hold one frame fewer than the trajectory has rows: the
last row is then dropped (`max_missing_frames`); any larger mismatch is an error.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vjepa2_ros.data.episode import DEFAULT_STEP_S, Episode, resample_rows
from vjepa2_ros.data.video import probe_frame_count, read_frames, write_frames
from vjepa2_ros.errors import ConfigError, DataError

# camera name -> metadata key naming its MP4 (left/right: the exterior camera on the robot's left/right)
CAMERA_KEYS = {"left": "left_mp4_path", "right": "right_mp4_path", "wrist": "wrist_mp4_path",
               "ext1": "ext1_mp4_path", "ext2": "ext2_mp4_path"}
CARTESIAN = "observation/robot_state/cartesian_position"      # (T, 6) flange xyz + Euler xyz
GRIPPER = "observation/robot_state/gripper_position"          # (T,) 0 open .. 1 closed
JOINTS = "observation/robot_state/joint_positions"            # (T, 7) rad
STEP_START = "observation/timestamp/control/step_start"       # (T,) int64 ms since epoch
CONTENT_RATE_HZ = 15.0                                         # DROID's control and camera rate


def camera_capture_key(serial: str) -> str:
    """The per-row capture time of a camera, int64 ms since the epoch."""
    return f"observation/timestamp/cameras/{serial}_estimated_capture"


def read_droid_episode(path: str | Path, camera: str = "left", step_s: float | None = DEFAULT_STEP_S,
                       stereo: bool | None = None, size: tuple[int, int] | None = None,
                       max_missing_frames: int = 1) -> Episode:
    """Read one raw DROID episode folder (or its trajectory.h5).

    camera: "left" | "right" | "wrist" | "ext1" | "ext2" (via the metadata json) or a camera serial;
    step_s: model step in seconds (rows picked by timestamp, the last at or before each tick), or
    None for every row; stereo: read the left half of `<serial>-stereo.mp4` (None: the mono file
    when present, else the stereo one); size: (height, width) to resize frames to.
    """
    folder = Path(path)
    folder = folder.parent if folder.name == "trajectory.h5" else folder
    h5_path = folder / "trajectory.h5"
    if not folder.is_dir() or not h5_path.is_file():
        raise DataError(f"{folder}: not a DROID episode folder (no trajectory.h5)")
    metadata, meta_path = _read_metadata(folder)
    serial = _camera_serial(camera, metadata, meta_path)
    states, joints, stamps_s, stamp_key = _read_trajectory(h5_path, serial)

    video, half = _recording(folder, serial, camera, stereo)
    n_frames = probe_frame_count(video)
    T = states.shape[0]
    if not (T - max_missing_frames <= n_frames <= T):
        raise DataError(f"{video}: {n_frames} video frames for {T} trajectory rows in {h5_path} "
                        f"(expected {T}, or at most {max_missing_frames} fewer)")
    rows = np.arange(n_frames) if step_s is None else resample_rows(stamps_s[:n_frames], step_s)
    frames = read_frames(video, rows, half=half, size=size, expected_count=n_frames)
    info = {"format": "droid", "camera": camera, "serial": serial, "video": str(video), "stamps": stamp_key,
            "rows": rows.tolist(), "dropped_rows": T - n_frames, "step_s": step_s,
            "task": metadata.get("current_task", ""), "uuid": metadata.get("uuid", "")}
    return Episode(frames=frames, states=states[rows], joint_positions=None if joints is None else joints[rows],
                   stamps_s=stamps_s[rows], source=str(folder), meta=info)


def find_droid_episodes(root_or_list: str | Path) -> list[Path]:
    """Episode folders under a directory (sorted), or listed in a text file (first column per line,
    V-JEPA 2's space-separated CSV; relative paths are relative to the list file)."""
    root = Path(root_or_list)
    if root.is_file():
        out = []
        for n, line in enumerate(root.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            p = Path(line.split()[0])
            p = p if p.is_absolute() else root.parent / p
            p = p.parent if p.name == "trajectory.h5" else p
            if not (p / "trajectory.h5").is_file():
                raise DataError(f"{root}:{n}: {p} is not a DROID episode folder (no trajectory.h5)")
            out.append(p)
        return out
    if not root.is_dir():
        raise DataError(f"{root}: neither an episode folder, a directory of episodes nor a list file")
    found = sorted(p.parent for p in root.rglob("trajectory.h5"))
    if not found:
        raise DataError(f"{root}: no DROID episodes (no trajectory.h5 below it)")
    return found


def write_droid_episode(path: str | Path, episode: Episode, serial: str = "20000001", stereo: bool = False,
                        container_fps: float = 60.0, lab: str = "SIM", task: str = "",
                        success: bool = True) -> Path:
    """Write `episode` in the raw DROID layout as the left exterior camera (ext1) at folder `path`.

    container_fps: what the MP4 claims; 60 like the released files, whatever the content rate.
    stereo: also write `<serial>-stereo.mp4` (left image | right image; the right is
    `episode.meta["right_frames"]` when given, else the left again). Camera extrinsics are written
    when `episode.meta["camera_extrinsics"]` ([6]: xyz, Euler xyz of the camera in the base) is set.
    """
    folder = Path(path)
    if (folder / "trajectory.h5").exists():
        raise ConfigError(f"{folder} already holds a DROID episode; not overwriting")
    mp4_rel = f"recordings/MP4/{serial}.mp4"
    stamps_ms = np.round(episode.stamps_s * 1000.0).astype(np.int64)
    uuid = f"{lab}+{hashlib.sha1(stamps_ms.tobytes() + episode.source.encode()).hexdigest()[:8]}+" + \
        time.strftime("%Y-%m-%d-%Hh-%Mm-%Ss", time.gmtime(float(episode.stamps_s[0])))
    folder.mkdir(parents=True, exist_ok=True)
    _write_trajectory(folder / "trajectory.h5", episode, serial, stamps_ms, task, success)
    write_frames(folder / mp4_rel, episode.frames, fps=container_fps)
    if stereo:
        right = np.asarray(episode.meta.get("right_frames", episode.frames), dtype=np.uint8)
        write_frames(folder / f"recordings/MP4/{serial}-stereo.mp4", np.concatenate([episode.frames, right], axis=2),
                     fps=container_fps)
    metadata = {
        "uuid": uuid, "lab": lab, "user": "vjepa2_ros", "user_id": "", "building": "", "scene_id": 0,
        "date": uuid.split("+")[-1][:10], "timestamp": uuid.split("+")[-1], "hdf5_path": "trajectory.h5",
        "success": bool(success), "robot_serial": "", "r2d2_version": "vjepa2_ros", "current_task": task,
        "trajectory_length": len(episode), "ext1_cam_serial": serial, "ext1_mp4_path": mp4_rel,
        "left_mp4_path": mp4_rel,
    }
    if "camera_extrinsics" in episode.meta:
        metadata["ext1_cam_extrinsics"] = [float(v) for v in episode.meta["camera_extrinsics"]]
    (folder / f"metadata_{uuid}.json").write_text(json.dumps(metadata, indent=1))
    return folder


def _read_metadata(folder: Path) -> tuple[dict[str, Any], Path | None]:
    files = sorted(folder.glob("metadata_*.json"))
    if not files:
        return {}, None
    if len(files) > 1:
        raise DataError(f"{folder}: several metadata json files ({[f.name for f in files]}); expected one")
    try:
        metadata = json.loads(files[0].read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{files[0]}: not readable JSON ({e})") from None
    if not isinstance(metadata, dict):
        raise DataError(f"{files[0]}: expected a JSON object, got {type(metadata).__name__}")
    return metadata, files[0]


def _camera_serial(camera: str, metadata: dict[str, Any], meta_path: Path | None) -> str:
    if camera not in CAMERA_KEYS:
        return camera                                   # a serial given directly
    if meta_path is None:
        raise DataError(f"no metadata_*.json in the episode folder; name the camera by its serial "
                        f"instead of {camera!r}")
    key = CAMERA_KEYS[camera]
    value = metadata.get(key)
    if not isinstance(value, str) or not value:
        raise DataError(f"{meta_path}: field {key!r} (camera {camera!r}) is missing or empty")
    return Path(value.split("recordings/MP4/")[-1]).stem.removesuffix("-stereo")


def _read_trajectory(h5_path: Path, serial: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, str]:
    """-> states [T, 7], joint positions [T, 7] or None, stamps [T] s, the stamp dataset used."""
    try:
        f = h5py.File(h5_path, "r")
    except OSError as e:
        raise DataError(f"{h5_path}: not a readable HDF5 file ({e}); truncated or damaged download?") from None
    with f:
        def dataset(key: str, shape_tail: tuple[int, ...]) -> np.ndarray:
            if key not in f:
                raise DataError(f"{h5_path}: missing dataset {key!r}")
            try:
                value = np.asarray(f[key][()], dtype=np.float64)
            except (OSError, ValueError, TypeError) as e:
                raise DataError(f"{h5_path}: dataset {key!r} is unreadable ({e})") from None
            if value.ndim != 1 + len(shape_tail) or value.shape[1:] != shape_tail:
                raise DataError(f"{h5_path}: dataset {key!r} has shape {value.shape}, expected (T, *{shape_tail})")
            return value

        cart = dataset(CARTESIAN, (6,))
        grip = dataset(GRIPPER, ())
        joints = dataset(JOINTS, (7,)) if JOINTS in f else None
        T = cart.shape[0]
        # The camera's capture times when they are usable, else the control loop's step starts.
        candidates = [k for k in (camera_capture_key(serial), STEP_START) if k in f]
        if not candidates:
            raise DataError(f"{h5_path}: missing dataset {STEP_START!r} (and {camera_capture_key(serial)!r}); "
                            f"rows need timestamps")
        for stamp_key in candidates:
            stamps_ms = dataset(stamp_key, ())
            if stamps_ms.shape[0] == T and np.all(np.isfinite(stamps_ms)) and np.all(stamps_ms > 0) \
                    and np.all(np.diff(stamps_ms) >= 0):
                break
        else:
            raise DataError(f"{h5_path}: datasets {candidates} must hold {T} positive, non-decreasing times (ms)")
    for key, value in ((GRIPPER, grip),) + (((JOINTS, joints),) if joints is not None else ()):
        if value.shape[0] != T:
            raise DataError(f"{h5_path}: dataset {key!r} has {value.shape[0]} rows, {CARTESIAN!r} has {T}")
    if T < 1:
        raise DataError(f"{h5_path}: the trajectory has no rows")
    states = np.concatenate([cart, grip[:, None]], axis=1)
    return states, joints, stamps_ms / 1000.0, stamp_key


def _recording(folder: Path, serial: str, camera: str, stereo: bool | None) -> tuple[Path, str]:
    mono = folder / "recordings" / "MP4" / f"{serial}.mp4"
    side_by_side = folder / "recordings" / "MP4" / f"{serial}-stereo.mp4"
    if stereo is None:
        stereo = not mono.is_file() and side_by_side.is_file()
    video = side_by_side if stereo else mono
    if not video.is_file():
        tried = str(video) if stereo is not None else f"{mono} nor {side_by_side}"
        raise DataError(f"no recording of camera {camera!r} (serial {serial}): {tried} does not exist")
    return video, "left" if stereo else "full"


def _write_trajectory(h5_path: Path, episode: Episode, serial: str, stamps_ms: np.ndarray, task: str,
                      success: bool) -> None:
    T = len(episode)
    s = episode.states
    nxt = np.concatenate([s[1:], s[-1:]])                 # commanded = the next measured state
    obs: dict[str, np.ndarray] = {
        CARTESIAN: s[:, :6], GRIPPER: s[:, 6], STEP_START: stamps_ms, camera_capture_key(serial): stamps_ms,
        f"observation/timestamp/cameras/{serial}_frame_received": stamps_ms,
        "observation/timestamp/robot_state/robot_timestamp_seconds": stamps_ms // 1000,
        "observation/timestamp/robot_state/robot_timestamp_nanos": (stamps_ms % 1000) * 1_000_000,
        f"observation/camera_type/{serial}": np.ones(T, dtype=np.int64),
        "observation/controller_info/movement_enabled": np.ones(T, dtype=bool),
        "observation/timestamp/skip_action": np.zeros(T, dtype=bool),
        "action/cartesian_position": nxt[:, :6], "action/gripper_position": nxt[:, 6],
        "action/target_cartesian_position": nxt[:, :6], "action/target_gripper_position": nxt[:, 6],
    }
    if T > 1:
        t = episode.stamps_s - episode.stamps_s[0]
        obs["action/cartesian_velocity"] = np.gradient(s[:, :6], t, axis=0) if np.all(np.diff(t) > 0) \
            else np.zeros((T, 6))
    if episode.joint_positions is not None:
        q = episode.joint_positions
        obs[JOINTS] = q
        obs["action/joint_position"] = np.concatenate([q[1:], q[-1:]])
        if T > 1 and np.all(np.diff(episode.stamps_s) > 0):
            obs["observation/robot_state/joint_velocities"] = np.gradient(q, episode.stamps_s - episode.stamps_s[0],
                                                                          axis=0)
    if "camera_extrinsics" in episode.meta:
        obs[f"observation/camera_extrinsics/{serial}_left"] = np.tile(
            np.asarray(episode.meta["camera_extrinsics"], dtype=np.float64), (T, 1))
    with h5py.File(h5_path, "w") as f:
        for key, value in obs.items():
            f.create_dataset(key, data=value, maxshape=(None, *np.shape(value)[1:]))
        f.attrs.update({"current_task": task, "success": success, "failure": not success, "version": "vjepa2_ros"})
