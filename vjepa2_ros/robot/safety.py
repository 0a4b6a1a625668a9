"""The safety envelope every arm command passes, whatever its source (planner, teleop, replay).

Pure functions over numpy arrays, no robot I/O. `check_*` raise `SafetyError` naming what was
violated, the limit and the value; the caller then holds position and reports the reason.
`limit_step` and `stop_step` shape the streamed command (one call per control tick) so that
position, velocity and acceleration limits all hold together. The workspace box is checked on
every target a backend receives (`RobotBackend.send_joint_target` calls `check_joint_target`),
streamed commands included; the per-action steps are checked by the control loop, which knows
where a model action starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vjepa2_ros.errors import ConfigError, SafetyError
from vjepa2_ros.robot.kinematics import FRAMES, ArmSpec, Kinematics, arm_spec


@dataclass(frozen=True)
class SafetyConfig:
    """Limits of the envelope. Joint limits come from the ArmSpec, shrunk/scaled by these."""

    joint_margin_rad: float = 0.05        # keep targets this far inside the spec's q_min / q_max
    velocity_scale: float = 0.5           # fraction of the spec's dq_max allowed, (0, 1]
    acceleration_scale: float = 0.5       # fraction of the spec's ddq_max allowed, (0, 1]
    workspace_frame: str = "tcp"          # "tcp" (hand tool centre point) or "flange": the box applies to it
    workspace_min_m: tuple[float, float, float] = (0.15, -0.6, 0.01)   # base frame x, y, z
    workspace_max_m: tuple[float, float, float] = (0.85, 0.6, 0.9)
    max_ee_step_m: float = 0.10           # max translation of the workspace frame per model action
    max_ee_rotation_step_rad: float = 0.5  # max rotation of the workspace frame per model action
    max_joint_step_rad: float = 0.8       # max |dq| per joint per model action (catches IK branch flips)
    max_frame_age_s: float = 0.5          # camera frame older than this -> hold
    max_state_age_s: float = 0.1          # joint state older than this -> hold

    def __post_init__(self) -> None:
        for name in ("velocity_scale", "acceleration_scale"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"SafetyConfig.{name}={value} must be in (0, 1]")
        for name in ("joint_margin_rad",):
            if not 0.0 <= getattr(self, name) < 0.5:
                raise ConfigError(f"SafetyConfig.{name}={getattr(self, name)} must be in [0, 0.5) rad")
        for name in ("max_ee_step_m", "max_ee_rotation_step_rad", "max_joint_step_rad",
                     "max_frame_age_s", "max_state_age_s"):
            if not getattr(self, name) > 0.0:
                raise ConfigError(f"SafetyConfig.{name}={getattr(self, name)} must be > 0")
        if self.workspace_frame not in FRAMES:
            raise ConfigError(f"SafetyConfig.workspace_frame={self.workspace_frame!r}; expected one of {FRAMES}")
        lo, hi = np.asarray(self.workspace_min_m, float), np.asarray(self.workspace_max_m, float)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(lo < hi):
            raise ConfigError(f"SafetyConfig workspace box min {self.workspace_min_m} must be 3 values "
                              f"below max {self.workspace_max_m} (m)")


def check_finite(x: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """x as float64 of the given shape, or SafetyError if the shape is wrong or any value is NaN/inf."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise SafetyError(f"{what}: expected numbers of shape {shape}, got {x!r}") from None
    if a.shape != shape:
        raise SafetyError(f"{what}: expected shape {shape}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise SafetyError(f"{what}: non-finite value(s) {a.tolist()}")
    return a


def check_fresh(stamp_s: float, now_s: float, max_age_s: float, what: str) -> None:
    """SafetyError if a reading stamped stamp_s is older than max_age_s at now_s (same clock)."""
    age = now_s - stamp_s
    if not np.isfinite(age) or age > max_age_s:
        raise SafetyError(f"{what} is stale: age {age:.3f} s > limit {max_age_s:.3f} s")


class SafetyEnvelope:
    """Joint, velocity, acceleration, workspace and step limits for one arm.

    Args:
        spec: the arm's limits (PANDA or FR3).
        kinematics: FK of the same arm (for the workspace box and end-effector steps).
        cfg: margins and limits.
    """

    def __init__(self, spec: ArmSpec, kinematics: Kinematics, cfg: SafetyConfig = SafetyConfig()):
        self.spec, self.kinematics, self.cfg = spec, kinematics, cfg
        self.q_min = spec.q_min + cfg.joint_margin_rad      # [7] rad
        self.q_max = spec.q_max - cfg.joint_margin_rad      # [7] rad
        self.dq_max = spec.dq_max * cfg.velocity_scale       # [7] rad/s
        self.ddq_max = spec.ddq_max * cfg.acceleration_scale  # [7] rad/s^2
        self.workspace_min = np.asarray(cfg.workspace_min_m, dtype=np.float64)
        self.workspace_max = np.asarray(cfg.workspace_max_m, dtype=np.float64)

    # --- checks on targets (raise) ---------------------------------------------------------

    def check_joint_position(self, q: np.ndarray, what: str = "joint target") -> np.ndarray:
        """q [7] as float64 if finite and inside the limits less the margin, else SafetyError."""
        q = check_finite(q, (7,), what)
        bad = np.flatnonzero((q < self.q_min) | (q > self.q_max))
        if bad.size:
            j = int(bad[0])
            raise SafetyError(f"{what}: {self.spec.joint_names[j]} = {q[j]:.4f} rad outside "
                              f"[{self.q_min[j]:.4f}, {self.q_max[j]:.4f}] (limits less margin)")
        return q

    def check_workspace(self, T: np.ndarray, what: str = "end-effector") -> None:
        """SafetyError if the pose T [4, 4] of cfg.workspace_frame lies outside the workspace box."""
        p = check_finite(T, (4, 4), what)[:3, 3]
        bad = np.flatnonzero((p < self.workspace_min) | (p > self.workspace_max))
        if bad.size:
            axis = "xyz"[int(bad[0])]
            raise SafetyError(f"{what} ({self.cfg.workspace_frame}) {axis} = {p[bad[0]]:.4f} m outside the "
                              f"workspace box [{self.workspace_min[bad[0]]:.4f}, {self.workspace_max[bad[0]]:.4f}]")

    def check_ee_step(self, T_now: np.ndarray, T_target: np.ndarray) -> None:
        """SafetyError if one model action moves the end effector too far (translation or rotation)."""
        T_now = check_finite(T_now, (4, 4), "current end-effector pose")
        T_target = check_finite(T_target, (4, 4), "end-effector target")
        step = float(np.linalg.norm(T_target[:3, 3] - T_now[:3, 3]))
        if step > self.cfg.max_ee_step_m:
            raise SafetyError(f"end-effector step {step:.4f} m > limit {self.cfg.max_ee_step_m:.4f} m per action")
        cos = np.clip((np.trace(T_target[:3, :3] @ T_now[:3, :3].T) - 1) / 2, -1.0, 1.0)
        angle = float(np.arccos(cos))
        if angle > self.cfg.max_ee_rotation_step_rad:
            raise SafetyError(f"end-effector rotation step {angle:.4f} rad > limit "
                              f"{self.cfg.max_ee_rotation_step_rad:.4f} rad per action")

    def check_joint_target(self, q_target: np.ndarray, q_now: np.ndarray | None = None) -> np.ndarray:
        """Validate a joint target [7] (one model action's worth of motion); returns it as float64.

        Checks: finite, joint limits less margin, workspace box of cfg.workspace_frame, and when
        q_now [7] is given, the per-action joint step and end-effector step.
        """
        q_target = self.check_joint_position(q_target)
        frame = self.cfg.workspace_frame
        T_target = self.kinematics.fk(q_target, frame)
        self.check_workspace(T_target, "end-effector target")
        if q_now is not None:
            q_now = check_finite(q_now, (7,), "current joint state")
            dq = np.abs(q_target - q_now)
            j = int(np.argmax(dq))
            if dq[j] > self.cfg.max_joint_step_rad:
                raise SafetyError(f"joint step of {self.spec.joint_names[j]} {dq[j]:.4f} rad > limit "
                                  f"{self.cfg.max_joint_step_rad:.4f} rad per action")
            self.check_ee_step(self.kinematics.fk(q_now, frame), T_target)
        return q_target

    def check_gripper(self, closedness: float) -> float:
        """closedness as float if finite and in [0, 1] (0 open, 1 closed), else SafetyError."""
        g = float(check_finite(closedness, (), "gripper command"))
        if not 0.0 <= g <= 1.0:
            raise SafetyError(f"gripper command {g:.4f} outside [0, 1] (0 open, 1 closed)")
        return g

    # --- streamed command shaping (never raise on a finite state) --------------------------

    def _velocity_bounds(self, q_prev: np.ndarray, dq_prev: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Per-joint [lo, hi] velocity for the next tick: velocity and acceleration limits, and
        braking: after the tick the joint can still stop inside the position limits at ddq_max."""
        a = self.ddq_max
        # largest v >= 0 with q + v dt + v^2 / (2a) <= q_max   (and mirrored for q_min)
        room_hi = np.maximum(self.q_max - q_prev, 0.0)
        room_lo = np.maximum(q_prev - self.q_min, 0.0)
        v_brake_hi = -a * dt + np.sqrt((a * dt) ** 2 + 2 * a * room_hi)
        v_brake_lo = -a * dt + np.sqrt((a * dt) ** 2 + 2 * a * room_lo)
        hi = np.minimum.reduce([self.dq_max, dq_prev + a * dt, v_brake_hi])
        lo = np.maximum.reduce([-self.dq_max, dq_prev - a * dt, -v_brake_lo])
        # An inconsistent previous state (e.g. moving fast toward a limit it cannot brake for)
        # leaves lo > hi: position and velocity limits win over the acceleration limit.
        hi_safe = np.minimum(self.dq_max, v_brake_hi)
        lo_safe = np.maximum(-self.dq_max, -v_brake_lo)
        hi = np.clip(hi, lo_safe, hi_safe)
        lo = np.clip(lo, lo_safe, hi)
        return lo, hi

    def limit_step(self, q_cmd: np.ndarray, q_prev: np.ndarray, dq_prev: np.ndarray, dt: float) -> np.ndarray:
        """The next streamed command [7] toward q_cmd [7] from the last command q_prev [7] moving at
        dq_prev [7] rad/s, dt s later, within position (less margin), velocity and acceleration
        limits. A non-finite q_cmd raises SafetyError (hold with stop_step instead)."""
        q_cmd = check_finite(q_cmd, (7,), "streamed joint command")
        q_prev = check_finite(q_prev, (7,), "previous joint command")
        dq_prev = check_finite(dq_prev, (7,), "previous joint velocity")
        if not (np.isfinite(dt) and dt > 0):
            raise SafetyError(f"control period dt={dt} s must be > 0")
        lo, hi = self._velocity_bounds(q_prev, dq_prev, dt)
        # Desired velocity: reach q_cmd, but no faster than lets the joint stop there.
        error = np.clip(q_cmd, self.q_min, self.q_max) - q_prev
        a = self.ddq_max
        v_arrive = -a * dt + np.sqrt((a * dt) ** 2 + 2 * a * np.abs(error))
        v = np.clip(np.sign(error) * np.minimum(np.abs(error) / dt, v_arrive), lo, hi)
        return np.clip(q_prev + v * dt, np.minimum(self.q_min, q_prev), np.maximum(self.q_max, q_prev))

    def stop_step(self, q_prev: np.ndarray, dq_prev: np.ndarray, dt: float) -> np.ndarray:
        """The next command [7] that brakes to a standstill at the acceleration limit (the 'hold')."""
        q_prev = check_finite(q_prev, (7,), "previous joint command")
        dq_prev = check_finite(dq_prev, (7,), "previous joint velocity")
        speed = np.maximum(np.abs(dq_prev) - self.ddq_max * dt, 0.0)
        return self.limit_step(q_prev + np.sign(dq_prev) * speed * dt, q_prev, dq_prev, dt)


def make_example_envelope(arm: str = "panda", cfg: SafetyConfig = SafetyConfig()) -> SafetyEnvelope:
    """An envelope for the named arm ("panda" | "fr3") with the given (default) limits."""
    spec = arm_spec(arm)
    return SafetyEnvelope(spec, Kinematics(spec), cfg)
