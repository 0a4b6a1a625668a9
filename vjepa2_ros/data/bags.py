"""rosbag2 bags <-> `Episode`, without ROS (the `rosbags` library).

Writing: MCAP storage by default (Humble users can play the `.mcap` file itself with
`ros2 bag play -s mcap BAG/BAG.mcap`; Iron/Jazzy play the folder), sqlite3 on request, type
definitions from the Humble or Jazzy type store. Every message is stamped (header and bag time)
with its recorded time.

Reading: the camera topic (Image or CompressedImage) gives the rows; each frame takes the last
joint state / gripper state / pose at or before its stamp. States come from the joint states
through forward kinematics to the flange (the DROID convention), or from a flange pose topic
when the bag has no joint states. Message <-> numpy conversions live in `data.messages` and are
re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vjepa2_ros.data.episode import Episode, resample_rows
from vjepa2_ros.data.messages import (array_to_joint_state, image_msg_to_rgb, joint_state_to_array,
                                      matrix_to_pose_msg, pose_msg_to_matrix, rgb_to_compressed_msg,
                                      rgb_to_image_msg, ns_to_seconds, seconds_to_ns, stamp_to_ns)
from vjepa2_ros.errors import ConfigError, DataError
from vjepa2_ros.planning.pose import matrix_from_pose7, pose7_from_matrix
from vjepa2_ros.robot.kinematics import Kinematics, arm_spec

__all__ = ["BagReader", "BagTopics", "BagWriter", "GRIPPER_MAX_WIDTH_M", "array_to_joint_state",
           "finger_joint_names", "gripper_from_joint_state", "image_msg_to_rgb", "joint_state_to_array",
           "matrix_to_pose_msg", "pose_msg_to_matrix", "read_bag_episode", "rgb_to_compressed_msg",
           "rgb_to_image_msg", "write_episode_bag"]

STORAGES = ("mcap", "sqlite3")
DISTROS = ("humble", "jazzy")
GRIPPER_MAX_WIDTH_M = 0.08          # Franka Hand opening; closedness = 1 - width / max width
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


@dataclass(frozen=True)
class BagTopics:
    """Topic names of a recording: the lab station's (launch/lab.launch.py defaults, franka_ros2's
    merged /joint_states), so `ros2 bag record` there and these tools agree without options."""

    camera: str = "/camera/camera/color/image_raw"         # Image, or CompressedImage at camera + "/compressed"
    joint_states: str = "/joint_states"                     # JointState: 7 arm joints (+ the 2 finger joints, m each)
    gripper: str = "/franka_gripper/joint_states"          # finger joints on their own topic, when not merged
    flange_pose: str = "/vjepa2_planner/flange_pose"       # PoseStamped of the flange (DROID's EE frame)


def finger_joint_names(arm: str) -> tuple[str, str]:
    return f"{arm}_finger_joint1", f"{arm}_finger_joint2"


def gripper_from_joint_state(msg: Any, finger_names: Sequence[str]) -> tuple[float, float]:
    """Finger JointState -> (closedness 0 open .. 1 closed, stamp s)."""
    fingers, stamp_s = joint_state_to_array(msg, finger_names)
    return float(np.clip(1.0 - fingers.sum() / GRIPPER_MAX_WIDTH_M, 0.0, 1.0)), stamp_s


def gripper_to_finger_positions(closedness: float) -> np.ndarray:
    """Closedness 0..1 -> the two finger positions [2] (m), half the opening each."""
    return np.full(2, (1.0 - float(closedness)) * GRIPPER_MAX_WIDTH_M / 2)


class BagWriter:
    """A rosbag2 bag being written; connections are added on a topic's first message."""

    def __init__(self, path: str | Path, storage: str = "mcap", distro: str = "jazzy") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.rosbag2.errors import WriterError
        if storage not in STORAGES:
            raise ConfigError(f"bag storage must be one of {STORAGES}, got {storage!r}")
        self.path = Path(path)
        self.typestore = _typestore(distro)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        try:
            self._writer = Writer(self.path, version=9 if distro == "jazzy" else 8, storage_plugin=plugin)
            self._writer.open()
        except WriterError as e:
            raise DataError(f"{self.path}: cannot create the bag ({e})") from None
        self._connections: dict[str, Any] = {}

    @property
    def types(self) -> Any:
        """Message classes by ROS type name, for the builders in `data.messages`."""
        return self.typestore.types

    def write(self, topic: str, msg: Any, stamp_ns: int | None = None) -> None:
        """Append `msg` (a typestore message) on `topic` at bag time stamp_ns (default: its header stamp)."""
        msgtype = msg.__msgtype__
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self.typestore)
        elif conn.msgtype != msgtype:
            raise DataError(f"{self.path}: topic {topic} carries {conn.msgtype}, cannot also write {msgtype}")
        stamp_ns = stamp_to_ns(msg.header.stamp) if stamp_ns is None else int(stamp_ns)
        self._writer.write(conn, stamp_ns, self.typestore.serialize_cdr(msg, msgtype))

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BagReader:
    """A rosbag2 bag (folder; MCAP or sqlite3) opened for reading."""

    def __init__(self, path: str | Path, distro: str = "jazzy") -> None:
        from rosbags.highlevel import AnyReader, AnyReaderError
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: bag not found")
        if self.path.is_file() and self.path.suffix in (".mcap", ".db3"):
            if not (self.path.parent / "metadata.yaml").is_file():
                raise DataError(f"{self.path}: a bare storage file; give the bag folder with its metadata.yaml "
                                f"(`ros2 bag reindex` writes one)")
            self.path = self.path.parent                  # the storage file of a bag folder: read the folder
        try:
            self._reader = AnyReader([self.path], default_typestore=_typestore(distro))
            self._reader.open()
        except (AnyReaderError, FileNotFoundError, OSError, ValueError) as e:
            raise DataError(f"{self.path}: not a readable rosbag2 bag ({e})") from None

    @property
    def topics(self) -> dict[str, str]:
        """topic -> message type name."""
        return {c.topic: c.msgtype for c in self._reader.connections}

    def require(self, topic: str, types: Sequence[str] | None = None) -> str:
        """The type of `topic`; DataError naming the bag and the topics it has when absent or mistyped."""
        have = self.topics
        if topic not in have:
            raise DataError(f"{self.path}: no topic {topic!r}; the bag has {sorted(have)}")
        if types is not None and have[topic] not in types:
            raise DataError(f"{self.path}: topic {topic!r} carries {have[topic]}, expected one of {list(types)}")
        return have[topic]

    def messages(self, topics: Sequence[str]) -> Iterator[tuple[str, int, Any]]:
        """(topic, bag time ns, message) in bag-time order for the given topics."""
        conns = [c for c in self._reader.connections if c.topic in set(topics)]
        for conn, t_ns, raw in self._reader.messages(connections=conns):
            yield conn.topic, t_ns, self._reader.deserialize(raw, conn.msgtype)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_episode_bag(path: str | Path, episode: Episode, topics: BagTopics = BagTopics(), storage: str = "mcap",
                      compressed: bool = False, distro: str = "jazzy", arm: str = "panda",
                      camera_frame_id: str = "camera", base_frame_id: str = "base") -> Path:
    """Episode -> bag: camera images, joint states (the 7 arm joints and the 2 finger joints, as
    franka_ros2's merged /joint_states; the fingers alone on topics.gripper when the episode has
    no joint positions) and the flange pose, each at the row's recorded time."""
    joint_names = arm_spec(arm).joint_names
    fingers = finger_joint_names(arm)
    camera_topic = topics.camera + "/compressed" if compressed else topics.camera
    poses = matrix_from_pose7(episode.states).numpy()                    # [T, 4, 4]
    with BagWriter(path, storage, distro) as bag:
        for k in range(len(episode)):
            t_ns = seconds_to_ns(episode.stamps_s[k])
            image = (rgb_to_compressed_msg(episode.frames[k], t_ns, camera_frame_id, types=bag.types) if compressed
                     else rgb_to_image_msg(episode.frames[k], t_ns, camera_frame_id, types=bag.types))
            bag.write(camera_topic, image)
            finger_q = gripper_to_finger_positions(episode.states[k, 6])
            if episode.joint_positions is not None:
                bag.write(topics.joint_states, array_to_joint_state(np.r_[episode.joint_positions[k], finger_q],
                                                                    joint_names + fingers, t_ns, types=bag.types))
            else:
                bag.write(topics.gripper, array_to_joint_state(finger_q, fingers, t_ns, types=bag.types))
            bag.write(topics.flange_pose, matrix_to_pose_msg(poses[k], t_ns, base_frame_id, types=bag.types))
    return Path(path)


def read_bag_episode(path: str | Path, camera_topic: str = BagTopics.camera,
                     joint_states_topic: str = BagTopics.joint_states, arm: str = "panda",
                     gripper_topic: str = BagTopics.gripper, flange_pose_topic: str = BagTopics.flange_pose,
                     joint_names: Sequence[str] | None = None, step_s: float | None = None,
                     distro: str = "jazzy") -> Episode:
    """Bag -> Episode, one row per camera frame (or per model step of step_s seconds).

    camera_topic: Image or CompressedImage (camera_topic + "/compressed" is tried when the topic
    itself is absent); arm: "panda" | "fr3" (kinematics, default joint names `<arm>_joint1..7`);
    joint states are reordered by name. Without joint states the flange pose topic gives the
    states; the gripper comes from the finger joints (in the joint states, else on the gripper
    topic), else it is recorded as 0 (open).
    """
    spec = arm_spec(arm)
    joint_names = tuple(joint_names or spec.joint_names)
    fingers = finger_joint_names(arm)
    with BagReader(path, distro) as bag:
        have = bag.topics
        if camera_topic not in have and camera_topic + "/compressed" in have:
            camera_topic += "/compressed"
        bag.require(camera_topic, IMAGE_TYPES)
        use_joints = joint_states_topic in have
        if not use_joints and flange_pose_topic not in have:
            raise DataError(f"{bag.path}: needs joint states on {joint_states_topic!r} or a flange pose on "
                            f"{flange_pose_topic!r}; the bag has {sorted(have)}")
        state_topic = joint_states_topic if use_joints else flange_pose_topic
        bag.require(state_topic, ["sensor_msgs/msg/JointState"] if use_joints else ["geometry_msgs/msg/PoseStamped"])
        grip_topics = [t for t in (gripper_topic,) if t in have and t != state_topic]
        frame_ns, state_ns, states_raw, grippers = _scan(bag, camera_topic, state_topic, use_joints, grip_topics,
                                                         joint_names, fingers)
        order = np.argsort(frame_ns, kind="stable")
        state_idx = _last_at_or_before(state_ns, frame_ns[order])
        usable = order[state_idx >= 0]                     # frames before the first state are dropped
        state_idx = state_idx[state_idx >= 0]
        if usable.size == 0:
            raise DataError(f"{bag.path}: every frame on {camera_topic!r} precedes the first {state_topic!r} message")
        stamps_s = ns_to_seconds(frame_ns[usable])
        pick = np.arange(usable.size) if step_s is None else resample_rows(stamps_s, step_s)
        wanted = usable[pick]                              # message indices on the camera topic, in time order
        frames = _decode_frames(bag, camera_topic, wanted)

    # the gripper: finger joints in the joint states, else on the gripper topic, else open
    grip_from = next((t for t in (state_topic, *grip_topics) if grippers.get(t)), None)
    grip = np.zeros(wanted.size)
    if grip_from is not None:
        g_ns, g_val = (np.asarray(v) for v in zip(*grippers[grip_from]))
        g_idx = _last_at_or_before(g_ns.astype(np.int64), frame_ns[wanted])
        grip = np.where(g_idx >= 0, g_val[np.maximum(g_idx, 0)], g_val[0])
    raw = states_raw[state_idx[pick]]
    if use_joints:
        transforms, joints = Kinematics(spec).fk_batch(raw, "flange"), raw
    else:
        transforms, joints = raw, None
    states = pose7_from_matrix(transforms, grip).numpy()
    return Episode(frames=frames, states=states, joint_positions=joints, stamps_s=stamps_s[pick], source=str(path),
                   meta={"format": "rosbag2", "camera_topic": camera_topic, "states_from": state_topic,
                         "gripper_from": grip_from, "arm": arm, "step_s": step_s, "rows": pick.tolist()})


def _scan(bag: BagReader, camera_topic: str, state_topic: str, use_joints: bool, grip_topics: Sequence[str],
          joint_names: Sequence[str], fingers: Sequence[str]
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, list[tuple[int, float]]]]:
    """Pass 1 over the bag: frame stamps [F] ns, state stamps [M] ns, joint positions [M, 7] or
    flange poses [M, 4, 4], and (stamp, closedness) per topic that carried finger joints."""
    frame_ns, state_ns, states_raw = [], [], []
    grippers: dict[str, list[tuple[int, float]]] = {}
    for topic, t_ns, msg in bag.messages([camera_topic, state_topic, *grip_topics]):
        stamp = stamp_to_ns(msg.header.stamp) or t_ns          # header stamp; bag time when unset
        if topic == camera_topic:
            frame_ns.append(stamp)
            continue
        try:
            if topic == state_topic:
                state_ns.append(stamp)
                states_raw.append(joint_state_to_array(msg, joint_names)[0] if use_joints else pose_msg_to_matrix(msg))
            if hasattr(msg, "name") and all(n in msg.name for n in fingers):
                grippers.setdefault(topic, []).append((stamp, gripper_from_joint_state(msg, fingers)[0]))
            elif topic != state_topic:
                raise DataError(f"JointState field 'name' lacks the finger joints {list(fingers)}; it has "
                                f"{list(msg.name)}")
        except DataError as e:
            raise DataError(f"{bag.path}: topic {topic!r} at {stamp} ns: {e}") from None
    if not frame_ns:
        raise DataError(f"{bag.path}: topic {camera_topic!r} has no messages")
    if not state_ns:
        raise DataError(f"{bag.path}: topic {state_topic!r} has no messages")
    return (np.asarray(frame_ns, dtype=np.int64), np.asarray(state_ns, dtype=np.int64), np.stack(states_raw),
            grippers)


def _decode_frames(bag: BagReader, camera_topic: str, wanted: np.ndarray) -> np.ndarray:
    """Pass 2: messages number `wanted` (indices in bag order) of the camera topic -> uint8 [K, H, W, 3]."""
    slots: dict[int, list[int]] = {}
    for row, msg_index in enumerate(wanted.tolist()):
        slots.setdefault(msg_index, []).append(row)
    frames: np.ndarray | None = None
    for n, (_, _, msg) in enumerate(bag.messages([camera_topic])):
        if n not in slots:
            continue
        try:
            rgb = image_msg_to_rgb(msg)
        except DataError as e:
            raise DataError(f"{bag.path}: topic {camera_topic!r} message {n}: {e}") from None
        if frames is None:
            frames = np.empty((wanted.size, *rgb.shape), dtype=np.uint8)
        elif rgb.shape != frames.shape[1:]:
            raise DataError(f"{bag.path}: topic {camera_topic!r} message {n} is {rgb.shape[1]}x{rgb.shape[0]}, "
                            f"earlier frames {frames.shape[2]}x{frames.shape[1]}; the image size must not change")
        frames[slots[n]] = rgb
    if frames is None:
        raise DataError(f"{bag.path}: topic {camera_topic!r}: none of the chosen frames was found on the second pass")
    return frames


def _last_at_or_before(stamps_ns: np.ndarray, query_ns: np.ndarray) -> np.ndarray:
    """For each query time, the index of the last stamp <= it (stamps sorted stable), or -1."""
    order = np.argsort(stamps_ns, kind="stable")
    pos = np.searchsorted(stamps_ns[order], query_ns, side="right") - 1
    return np.where(pos >= 0, order[np.maximum(pos, 0)], -1)


def _typestore(distro: str) -> Any:
    from rosbags.typesys import Stores, get_typestore
    if distro not in DISTROS:
        raise ConfigError(f"ROS distro must be one of {DISTROS}, got {distro!r}")
    return get_typestore(Stores.ROS2_JAZZY if distro == "jazzy" else Stores.ROS2_HUMBLE)
