"""The one interface every robot backend implements, its state type, and the registry by name.

A backend reads the arm's state and takes joint (or Cartesian) targets, gripper commands, stop
and recover. Every target passes the safety envelope in `send_joint_target` before the backend
sees it, so no backend can be driven outside the limits. Backends never prompt and never sleep
to pace; the caller owns timing.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from vjepa2_ros.errors import ConfigError, SafetyError, Vjepa2RosError
from vjepa2_ros.robot.kinematics import ArmSpec, Kinematics
from vjepa2_ros.robot.safety import SafetyConfig, SafetyEnvelope


@dataclass(frozen=True, eq=False)
class RobotState:
    """One reading of the arm. stamp_s is time.monotonic() (hardware) or simulation time (sim)."""

    stamp_s: float
    q: np.ndarray             # [7] rad
    dq: np.ndarray            # [7] rad/s
    gripper: float            # closedness: 0 open ... 1 closed
    flange_pose: np.ndarray   # [4, 4] flange (link8) in the base frame, what DROID records
    error: str | None = None  # the robot's current error, if any


@dataclass(frozen=True, eq=False)
class CameraFrame:
    stamp_s: float            # same clock as RobotState.stamp_s
    image: np.ndarray         # [H, W, 3] uint8 RGB


class Camera(ABC):
    """A source of RGB frames."""

    @abstractmethod
    def read_latest(self) -> CameraFrame | None:
        """The newest frame, or None when none has arrived yet. Never blocks."""

    def latest_stamp(self) -> float | None:
        """Capture time of the newest frame (None: none yet). Cheap: the control tick checks it
        every period. Cameras that render on demand override it."""
        frame = self.read_latest()
        return None if frame is None else frame.stamp_s


class RobotBackend(ABC):
    """Read state, send targets through the safety envelope, stop, recover.

    Subclasses implement the underscored `_send_joint_target` / `_set_gripper` and the abstract
    methods; the public senders validate first and return what was actually sent.

    Args:
        spec: the arm model's limits (PANDA or FR3).
        safety: limits of the envelope every target passes.
    """

    name: ClassVar[str]

    def __init__(self, spec: ArmSpec, safety: SafetyConfig = SafetyConfig()):
        self.spec = spec
        self.kinematics = Kinematics(spec)
        self.envelope = SafetyEnvelope(spec, self.kinematics, safety)

    # --- connection ---------------------------------------------------------------------------
    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def disconnect(self) -> None: ...

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    def __enter__(self) -> RobotBackend:
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.disconnect()

    def _require_connected(self) -> None:
        if not self.is_connected:
            raise Vjepa2RosError(f"{self.name} backend is not connected; call connect() first")

    # --- state ------------------------------------------------------------------------------
    @abstractmethod
    def read_state(self) -> RobotState: ...

    def now_s(self) -> float:
        """The clock of RobotState.stamp_s and CameraFrame.stamp_s (for freshness checks)."""
        return time.monotonic()

    # --- commands -----------------------------------------------------------------------------
    def send_joint_target(self, q: np.ndarray) -> np.ndarray:
        """Move toward joints q [7] (rad). Raises SafetyError (nothing sent) if the target leaves
        the envelope (non-finite, joint limits less margin, workspace box). Returns q as sent."""
        self._require_connected()
        q = self.envelope.check_joint_target(q)
        self._send_joint_target(q)
        return q

    def send_cartesian_target(self, T: np.ndarray, frame: str = "flange") -> np.ndarray:
        """Move toward the pose T [4, 4] of `frame` by IK from the current joints; returns the
        joint target sent [7]. SafetyError if IK fails or the solution leaves the envelope."""
        self._require_connected()
        q_now = self.read_state().q
        result = self.kinematics.ik(np.asarray(T, dtype=np.float64), q_now, frame,
                                    position_tol_m=1e-4, rotation_tol_rad=1e-3)
        if not result.success:
            raise SafetyError(f"no IK solution for the {frame} target: residual {result.position_error_m:.4f} m, "
                              f"{result.rotation_error_rad:.4f} rad")
        return self.send_joint_target(result.q)

    def set_gripper(self, closedness: float) -> float:
        """Command the gripper to closedness in [0, 1] (0 open, 1 closed); returns it as sent."""
        self._require_connected()
        g = self.envelope.check_gripper(closedness)
        self._set_gripper(g)
        return g

    @abstractmethod
    def _send_joint_target(self, q: np.ndarray) -> None: ...

    @abstractmethod
    def _set_gripper(self, closedness: float) -> None: ...

    @abstractmethod
    def stop(self) -> None:
        """Stop moving and hold the current position."""

    @abstractmethod
    def recover(self) -> bool:
        """Clear the robot's errors so it accepts commands again; True on success."""


# name -> "module:Class"; resolved on use so that MuJoCo / franky load only when asked for.
BACKENDS: dict[str, str] = {
    "sim": "vjepa2_ros.robot.sim:SimBackend",
    "franky": "vjepa2_ros.robot.franky_backend:FrankyBackend",
}


def make_backend(name: str, **kwargs: Any) -> RobotBackend:
    """Build the backend registered as `name` ("sim" | "franky") with its constructor's kwargs."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown robot backend {name!r}; expected one of {sorted(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)
