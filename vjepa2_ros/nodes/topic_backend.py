"""The robot and the camera as ROS topics, for the control loop: no rclpy here.

The planner node's subscription callbacks hand the newest joint state and camera frame to these
objects (keep only the latest), and the control loop reads them like any `RobotBackend` /
`Camera`. Joint targets and gripper commands go to callables the node supplies (publishers, an
action client). Stamps are in the loop's clock (the ROS clock, simulated under `ros2 bag play
--clock`).
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

from vjepa2_ros.errors import DataError, SafetyError
from vjepa2_ros.robot.backend import Camera, CameraFrame, RobotBackend, RobotState
from vjepa2_ros.robot.kinematics import ArmSpec
from vjepa2_ros.robot.safety import SafetyConfig

class LatestFrameCamera(Camera):
    """The newest frame a subscription handed in; older ones are dropped."""

    def __init__(self) -> None:
        self._frame: CameraFrame | None = None

    def put(self, image: np.ndarray, stamp_s: float) -> None:
        """image: uint8 RGB [H, W, 3]; stamp_s: capture time in the loop's clock."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DataError(f"camera frame must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
        self._frame = CameraFrame(float(stamp_s), image)          # one reference swap: thread-safe

    def read_latest(self) -> CameraFrame | None:
        return self._frame


class TopicBackend(RobotBackend):
    """Joint states in from a topic, joint targets out through `send`, gripper through `gripper`.

    Args:
        spec: the arm (PANDA or FR3); its joint_names order the incoming joint states.
        safety: the envelope every target passes (RobotBackend.send_joint_target).
        send: publishes one joint target [7] rad (a trajectory point or a position command).
        gripper: commands closedness in [0, 1] (0 open, 1 closed), or None: no gripper.
    """

    name = "ros_topics"

    def __init__(self, spec: ArmSpec, safety: SafetyConfig, send: Callable[[np.ndarray], None],
                 gripper: Callable[[float], None] | None = None) -> None:
        super().__init__(spec, safety)
        self._send, self._gripper = send, gripper
        self._lock = threading.Lock()
        self._state: RobotState | None = None
        self._gripper_cmd = 0.0             # last commanded closedness: the state when no finger joints
        self._connected = False

    def connect(self) -> None:
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def has_state(self) -> bool:
        return self._state is not None

    def put_joint_state(self, q: np.ndarray, stamp_s: float, dq: np.ndarray | None = None,
                        gripper: float | None = None) -> None:
        """A joint state, already ordered as spec.joint_names; gripper: measured closedness (0 open ..
        1 closed) or None (no finger joints: the last command stands in). Non-finite values raise
        DataError and are not stored, so the loop sees the state go stale and holds."""
        q = np.asarray(q, dtype=np.float64)
        dq = np.zeros(7) if dq is None else np.asarray(dq, dtype=np.float64)
        if q.shape != (7,) or dq.shape != (7,):
            raise DataError(f"joint state must have 7 positions and velocities, got {q.shape} and {dq.shape}")
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(dq))):
            raise DataError(f"joint state has non-finite values: position {q.tolist()}, velocity {dq.tolist()}")
        if gripper is None or not np.isfinite(gripper):
            gripper = self._gripper_cmd
        state = RobotState(stamp_s=float(stamp_s), q=q, dq=dq, gripper=float(gripper),
                           flange_pose=self.kinematics.fk(q, "flange"))
        with self._lock:
            self._state = state

    def read_state(self) -> RobotState:
        self._require_connected()
        state = self._state
        if state is None:
            raise DataError("no joint state received yet")
        return state

    def _send_joint_target(self, q: np.ndarray) -> None:
        if self._state is None:                 # never command an arm whose position is unknown
            raise SafetyError("no joint state received yet: not commanding the arm")
        self._send(q)

    def _set_gripper(self, closedness: float) -> None:
        self._gripper_cmd = float(closedness)
        if self._gripper is not None:
            self._gripper(float(closedness))

    def stop(self) -> None:
        """Hold: command the measured position (the loop's braking stream normally does this)."""
        state = self._state
        if state is not None and self._connected:
            self._send(state.q.copy())

    def recover(self) -> bool:
        """Nothing to clear on the ROS side (the driver's own errors are recovered through it)."""
        return self._connected
