"""Kinematics of the Franka Panda and FR3: forward kinematics, Jacobian, inverse kinematics.

Both arms share Franka's modified Denavit-Hartenberg chain (Craig convention,
T_i = RotX(alpha_{i-1}) TransX(a_{i-1}) RotZ(q_i) TransZ(d_i)); they differ in joint limits.
Frames: "flange" is panda_link8 / fr3_link8 (what DROID records), "tcp" is the Franka Hand's
tool centre point (flange rotated -45 deg about z, then +0.1034 m along z; libfranka's O_T_EE).
Everything is numpy float64; poses are 4x4 homogeneous matrices in the robot base frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vjepa2_ros.errors import ConfigError

# (a [m], d [m], alpha [rad]) per joint, then the flange (fixed, no joint).
MDH = np.array([
    [0.0, 0.333, 0.0],
    [0.0, 0.0, -np.pi / 2],
    [0.0, 0.316, np.pi / 2],
    [0.0825, 0.0, np.pi / 2],
    [-0.0825, 0.384, -np.pi / 2],
    [0.0, 0.0, np.pi / 2],
    [0.088, 0.0, np.pi / 2],
])
FLANGE_D_M = 0.107
HAND_TCP_Z_M = 0.1034       # Franka Hand: TCP along the flange z axis
HAND_YAW_RAD = -np.pi / 4   # Franka Hand: mounted rotated about the flange z axis
FRAMES = ("flange", "tcp")


def _readonly(values) -> np.ndarray:
    a = np.array(values, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class ArmSpec:
    """Joint limits of one arm model. Arrays are read-only float64 [7]."""

    name: str
    q_min: np.ndarray      # [7] rad
    q_max: np.ndarray      # [7] rad
    dq_max: np.ndarray     # [7] rad/s
    ddq_max: np.ndarray    # [7] rad/s^2
    joint_names: tuple[str, ...]

    def __post_init__(self) -> None:
        for field in ("q_min", "q_max", "dq_max", "ddq_max"):
            value = np.asarray(getattr(self, field))
            if value.shape != (7,) or not np.all(np.isfinite(value)):
                raise ConfigError(f"ArmSpec {self.name}: {field} must be 7 finite numbers, got {value!r}")
        if not np.all(self.q_min < self.q_max):
            raise ConfigError(f"ArmSpec {self.name}: q_min {self.q_min} must be below q_max {self.q_max}")
        if not (np.all(self.dq_max > 0) and np.all(self.ddq_max > 0)):
            raise ConfigError(f"ArmSpec {self.name}: dq_max and ddq_max must be positive")
        if len(self.joint_names) != 7:
            raise ConfigError(f"ArmSpec {self.name}: expected 7 joint names, got {self.joint_names}")


# Franka "control parameters" page (Panda / FER).
PANDA = ArmSpec(
    name="panda",
    q_min=_readonly([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]),
    q_max=_readonly([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]),
    dq_max=_readonly([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61]),
    ddq_max=_readonly([15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0]),
    joint_names=tuple(f"panda_joint{i}" for i in range(1, 8)),
)
# FR3 (DROID config / FR3 URDF); acceleration 10 rad/s^2 on every joint (FR3 datasheet).
FR3 = ArmSpec(
    name="fr3",
    q_min=_readonly([-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159]),
    q_max=_readonly([2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159]),
    dq_max=_readonly([2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26]),
    ddq_max=_readonly([10.0] * 7),
    joint_names=tuple(f"fr3_joint{i}" for i in range(1, 8)),
)
ARM_SPECS: dict[str, ArmSpec] = {"panda": PANDA, "fr3": FR3}


def arm_spec(name: str) -> ArmSpec:
    """The ArmSpec for "panda" or "fr3"."""
    try:
        return ARM_SPECS[name]
    except KeyError:
        raise ConfigError(f"unknown arm {name!r}; expected one of {sorted(ARM_SPECS)}") from None


def _rot_z(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])


def _translation(x: float, y: float, z: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


FLANGE_T_TCP = _rot_z(HAND_YAW_RAD) @ _translation(0.0, 0.0, HAND_TCP_Z_M)  # 4x4


def rotation_vector(R: np.ndarray) -> np.ndarray:
    """Axis-angle vector [3] (rad) of a rotation matrix [3, 3]; robust at 0 and pi."""
    # Shepperd's quaternion extraction, then angle = 2 atan2(|v|, w) with w >= 0.
    t = np.trace(R)
    i = int(np.argmax([t, R[0, 0], R[1, 1], R[2, 2]]))
    if i == 0:
        w = np.sqrt(1.0 + t) / 2
        v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (4 * w)
    else:
        j, k = (i % 3), ((i + 1) % 3)   # cyclic partners of axis i-1
        a = i - 1
        s = np.sqrt(max(1.0 + 2 * R[a, a] - t, 0.0)) * 2  # = 4 |v_a|
        v = np.empty(3)
        v[a] = s / 4
        v[j] = (R[j, a] + R[a, j]) / s
        v[k] = (R[k, a] + R[a, k]) / s
        w = (R[k, j] - R[j, k]) / s
    if w < 0:
        w, v = -w, -v
    norm = np.linalg.norm(v)
    if norm < 1e-15:
        return 2 * v  # small-angle limit
    return v * (2 * np.arctan2(norm, w) / norm)


def pose_error(T_target: np.ndarray, T: np.ndarray) -> np.ndarray:
    """[6] error (position m; rotation vector rad of R_target R^T), both in the base frame."""
    return np.concatenate([T_target[:3, 3] - T[:3, 3], rotation_vector(T_target[:3, :3] @ T[:3, :3].T)])


@dataclass(frozen=True, eq=False)
class IKResult:
    q: np.ndarray                 # [7] rad: the solution, or the best configuration found when not successful
    success: bool                 # True only when within tolerance and inside the joint limits
    position_error_m: float
    rotation_error_rad: float
    iterations: int


class Kinematics:
    """Forward kinematics, geometric Jacobian and damped-least-squares IK of one arm model.

    Args:
        spec: the arm's joint limits (PANDA or FR3); the chain geometry is the same for both.
    """

    def __init__(self, spec: ArmSpec):
        self.spec = spec

    def _frames(self, q: np.ndarray) -> np.ndarray:
        """[..., 9, 4, 4]: joint frames 1..7, flange, tcp for q [..., 7]."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape[-1:] != (7,):
            raise ConfigError(f"joint vector must have 7 entries in the last axis, got shape {q.shape}")
        a, d, alpha = MDH[:, 0], MDH[:, 1], MDH[:, 2]
        ca, sa = np.cos(alpha), np.sin(alpha)
        cq, sq = np.cos(q), np.sin(q)                                # [..., 7]
        link = np.zeros(q.shape + (4, 4))                            # [..., 7, 4, 4]
        # RotX(alpha) TransX(a) RotZ(q) TransZ(d)
        link[..., 0, 0] = cq
        link[..., 0, 1] = -sq
        link[..., 0, 3] = a
        link[..., 1, 0] = sq * ca
        link[..., 1, 1] = cq * ca
        link[..., 1, 2] = -sa
        link[..., 1, 3] = -sa * d
        link[..., 2, 0] = sq * sa
        link[..., 2, 1] = cq * sa
        link[..., 2, 2] = ca
        link[..., 2, 3] = ca * d
        link[..., 3, 3] = 1.0
        out = np.empty(q.shape[:-1] + (9, 4, 4))
        T = link[..., 0, :, :]
        out[..., 0, :, :] = T
        for i in range(1, 7):
            T = T @ link[..., i, :, :]
            out[..., i, :, :] = T
        flange = T @ _translation(0.0, 0.0, FLANGE_D_M)
        out[..., 7, :, :] = flange
        out[..., 8, :, :] = flange @ FLANGE_T_TCP
        return out

    @staticmethod
    def _frame_index(frame: str) -> int:
        if frame not in FRAMES:
            raise ConfigError(f"unknown frame {frame!r}; expected one of {FRAMES}")
        return 7 + FRAMES.index(frame)

    def fk(self, q: np.ndarray, frame: str = "flange") -> np.ndarray:
        """Pose [4, 4] of `frame` in the base frame for joints q [7] (rad)."""
        return self._frames(q)[self._frame_index(frame)]

    def fk_batch(self, q: np.ndarray, frame: str = "flange") -> np.ndarray:
        """Poses [N, 4, 4] for joints q [N, 7]."""
        return self._frames(q)[..., self._frame_index(frame), :, :]

    def jacobian(self, q: np.ndarray, frame: str = "flange") -> np.ndarray:
        """Geometric Jacobian [6, 7] in the base frame: rows 0-2 linear velocity of the frame origin, 3-5 angular."""
        return self._jacobian_from_frames(self._frames(q), self._frame_index(frame))

    @staticmethod
    def _jacobian_from_frames(frames: np.ndarray, index: int) -> np.ndarray:
        p = frames[index, :3, 3]
        z = frames[:7, :3, 2]                    # [7, 3] joint axes
        origins = frames[:7, :3, 3]              # [7, 3]
        return np.concatenate([np.cross(z, p - origins).T, z.T], axis=0)   # [6, 7]

    def within_limits(self, q: np.ndarray, tol_rad: float = 0.0) -> bool:
        q = np.asarray(q, dtype=np.float64)
        return bool(np.all(q >= self.spec.q_min - tol_rad) and np.all(q <= self.spec.q_max + tol_rad))

    def ik(
        self,
        T_target: np.ndarray,
        q_seed: np.ndarray,
        frame: str = "flange",
        *,
        position_tol_m: float = 1e-6,
        rotation_tol_rad: float = 1e-5,
        max_iterations: int = 200,
        damping: float = 1e-2,
        posture_gain: float = 0.1,
        limit_margin_rad: float = 0.02,
        max_step_rad: float = 0.2,
    ) -> IKResult:
        """Damped-least-squares IK for a pose [4, 4] of `frame`, starting at q_seed [7].

        The redundant degree of freedom is steered by a null-space posture term toward q_seed
        (the current configuration), and iterates are kept limit_margin_rad inside the joint
        limits, so the answer stays near the arm's present posture. success is False (and q the
        best iterate) when the target is not reached within tolerance: unreachable or singular.

        Args:
            T_target: [4, 4] target pose of `frame` in the base frame.
            q_seed: [7] rad, the start and the rest posture (normally the measured joints).
            frame: "flange" or "tcp".
            position_tol_m, rotation_tol_rad: success tolerances on the residual.
            max_iterations: Levenberg-Marquardt iterations before giving up.
            damping: initial damping of the least squares, adapted per iteration (1e-6 ... 1).
            posture_gain: pull of the null-space term toward q_seed per iteration.
            limit_margin_rad: iterates stay this far inside the joint limits.
            max_step_rad: largest joint change per iteration.
        """
        T_target = np.asarray(T_target, dtype=np.float64)
        q_seed = np.asarray(q_seed, dtype=np.float64)
        if T_target.shape != (4, 4) or not np.all(np.isfinite(T_target)):
            raise ConfigError(f"IK target must be a finite 4x4 matrix, got shape {T_target.shape}")
        if q_seed.shape != (7,) or not np.all(np.isfinite(q_seed)):
            raise ConfigError(f"IK seed must be 7 finite joint angles, got {q_seed!r}")
        lo = self.spec.q_min + limit_margin_rad
        hi = self.spec.q_max - limit_margin_rad
        mid, half_range = (lo + hi) / 2, (hi - lo) / 2
        q_rest = np.clip(q_seed, lo, hi)
        index = self._frame_index(frame)

        def residual(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            frames = self._frames(q)
            return frames, pose_error(T_target, frames[index])

        q = q_rest.copy()
        frames, err = residual(q)
        lam = damping
        it = 0
        for it in range(1, max_iterations + 1):
            pos_err, rot_err = float(np.linalg.norm(err[:3])), float(np.linalg.norm(err[3:]))
            if pos_err <= position_tol_m and rot_err <= rotation_tol_rad:
                return IKResult(q, True, pos_err, rot_err, it - 1)
            J = self._jacobian_from_frames(frames, index)
            U, S, Vt = np.linalg.svd(J)                                     # [6, 6], [6], [7, 7]
            dq_task = Vt[:6].T @ ((S / (S**2 + lam**2)) * (U.T @ err))      # damped least squares
            # Secondary task in the exact null space (Vt[6]), so it does not disturb the pose to
            # first order: toward the rest posture, and away from the limits (grows near them).
            away = -((q - mid) / half_range) ** 3
            dq_null = Vt[6] * (Vt[6] @ (posture_gain * (q_rest - q) + 0.1 * away))
            for dq in (dq_task + dq_null, dq_task):     # drop the secondary task if it hinders
                step = np.max(np.abs(dq))
                if step > max_step_rad:
                    dq = dq * (max_step_rad / step)
                q_new = np.clip(q + dq, lo, hi)
                frames_new, err_new = residual(q_new)
                if np.linalg.norm(err_new) < np.linalg.norm(err):
                    break
            if np.linalg.norm(err_new) < np.linalg.norm(err):   # Levenberg-Marquardt damping schedule
                q, frames, err = q_new, frames_new, err_new
                lam = max(lam / 2, 1e-6)
            else:
                lam = min(lam * 4, 1.0)
        pos_err, rot_err = float(np.linalg.norm(err[:3])), float(np.linalg.norm(err[3:]))
        success = pos_err <= position_tol_m and rot_err <= rotation_tol_rad
        return IKResult(q, success, pos_err, rot_err, it)

    def ik_position(
        self,
        p_target: np.ndarray,
        q_seed: np.ndarray,
        frame: str = "flange",
        rotation: np.ndarray | None = None,
        **ik_kwargs,
    ) -> IKResult:
        """IK for a position p_target [3] (m) with the orientation held: `rotation` [3, 3], or
        the frame's orientation at q_seed when None (the planner moves xyz with rotation 0)."""
        p_target = np.asarray(p_target, dtype=np.float64)
        if p_target.shape != (3,):
            raise ConfigError(f"position target must have 3 entries, got shape {p_target.shape}")
        T = self.fk(q_seed, frame).copy() if rotation is None else np.eye(4)
        if rotation is not None:
            T[:3, :3] = np.asarray(rotation, dtype=np.float64)
        T[:3, 3] = p_target
        return self.ik(T, q_seed, frame, **ik_kwargs)
