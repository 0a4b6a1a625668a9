"""Camera-placement calibration (V-JEPA 2-AC paper, App. B.4: proposed there, never released).

The world model learned its actions in the frame of the camera it was trained with: move that
camera, and the action axes the model infers rotate with it. The fix: make a few small moves,
ask the model which action explains each observed change, and fit the rotation between the
measured and the inferred displacements. Planning then runs in the model's frame:

    model frame = R · robot frame        (R: 3x3, the fit below; yaw-only or full 3-D)
    state to the model:   position c + R (p - c), orientation R · R_ee      (c: the moves' centre)
    action to the robot:  Δxyz_robot = Rᵀ Δxyz_model

Everything here is ROS-free and robot-free: `fit_rotation` is plain linear algebra on
displacement pairs, `infer_displacement` asks a WorldModel, and `ActionFrame` maps states and
plans between the two frames. `vjepa2_ros.control.calibrate` makes the moves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from vjepa2_ros.errors import ConfigError, PlanningError

MIN_MOVES = 3
COLLINEAR_RATIO = 0.05          # second singular value / first below this: the moves span a line


@dataclass(frozen=True)
class RotationFit:
    """Least-squares rotation between measured (robot frame) and inferred (model frame) displacements.

    rotation: [3, 3], inferred ≈ scale · rotation @ measured (Kabsch, proper rotation).
    yaw_rotation: [3, 3], the same fit restricted to a rotation about the vertical (z) axis.
    """

    rotation: np.ndarray
    yaw_rotation: np.ndarray
    yaw_deg: float                  # the yaw-only fit's angle (model frame = Rz(yaw_deg) · robot frame)
    full_angle_deg: float           # the full fit's rotation angle
    scale: float                    # |inferred| / |measured| that best fits (the model's gain)
    residual_m: float               # RMS |inferred - scale R measured| of the full fit
    yaw_residual_m: float           # the same for the yaw-only fit
    per_move_m: np.ndarray          # [n] residual of each move under the full fit

    def as_dict(self) -> dict[str, Any]:
        return {"rotation": self.rotation.round(6).tolist(), "yaw_rotation": self.yaw_rotation.round(6).tolist(),
                "yaw_deg": self.yaw_deg, "full_angle_deg": self.full_angle_deg, "scale": self.scale,
                "residual_m": self.residual_m, "yaw_residual_m": self.yaw_residual_m,
                "per_move_m": self.per_move_m.round(6).tolist()}


def _check_pairs(measured: np.ndarray, inferred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    P, Q = np.asarray(measured, dtype=np.float64), np.asarray(inferred, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] != 3 or P.shape != Q.shape:
        raise ConfigError(f"rotation fit needs two [n, 3] arrays of displacements, got {P.shape} and {Q.shape}")
    if len(P) < MIN_MOVES:
        raise ConfigError(f"rotation fit needs at least {MIN_MOVES} moves, got {len(P)}")
    if not (np.isfinite(P).all() and np.isfinite(Q).all()):
        bad = sorted(set(np.nonzero(~np.isfinite(P).all(1) | ~np.isfinite(Q).all(1))[0].tolist()))
        raise ConfigError(f"rotation fit: moves {bad} have non-finite displacements (NaN/inf)")
    for name, X in (("measured", P), ("inferred", Q)):
        s = np.linalg.svd(X, compute_uv=False)
        if s[0] < 1e-9 or s[1] < COLLINEAR_RATIO * s[0]:
            raise ConfigError(f"rotation fit: the {name} displacements are (nearly) collinear (singular values "
                              f"{np.round(s, 6).tolist()}): move in at least two directions")
    return P, Q


def _yaw_matrix(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def yaw_matrix(yaw_deg: float) -> np.ndarray:
    """Rotation about the vertical axis by yaw_deg degrees, [3, 3]."""
    return _yaw_matrix(math.radians(yaw_deg))


def fit_rotation(measured: np.ndarray, inferred: np.ndarray) -> RotationFit:
    """measured [n, 3] (robot frame, m), inferred [n, 3] (the model's frame) -> RotationFit.

    Full fit: Kabsch/SVD (orthogonal Procrustes with det +1), then the best scale. Yaw-only fit:
    the angle that best rotates the horizontal parts onto each other. Exact without noise.
    Errors (ConfigError): fewer than 3 moves, NaN/inf, collinear moves.
    """
    P, Q = _check_pairs(measured, inferred)
    U, S, Vt = np.linalg.svd(P.T @ Q)                               # P.T Q = U S Vt
    d = np.sign(np.linalg.det(Vt.T @ U.T)) or 1.0
    D = np.diag([1.0, 1.0, d])
    R = Vt.T @ D @ U.T                                               # Q ≈ s · P Rᵀ
    scale = float(np.trace(np.diag(S) @ D) / np.sum(P * P))
    theta = math.atan2(float(np.sum(P[:, 0] * Q[:, 1] - P[:, 1] * Q[:, 0])),
                       float(np.sum(P[:, 0] * Q[:, 0] + P[:, 1] * Q[:, 1])))
    Rz = _yaw_matrix(theta)
    scale_z = float(np.sum((P @ Rz.T) * Q) / np.sum(P * P))
    per_move = np.linalg.norm(Q - scale * P @ R.T, axis=1)
    yaw_res = np.linalg.norm(Q - scale_z * P @ Rz.T, axis=1)
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(R) - 1.0) / 2.0))))
    return RotationFit(rotation=R, yaw_rotation=Rz, yaw_deg=math.degrees(theta), full_angle_deg=angle,
                       scale=scale, residual_m=float(np.sqrt(np.mean(per_move ** 2))),
                       yaw_residual_m=float(np.sqrt(np.mean(yaw_res ** 2))), per_move_m=per_move)


def check_rotation(matrix: Any, name: str = "action_frame") -> np.ndarray:
    """A 3x3 proper rotation (orthonormal, det +1) as float64, or ConfigError naming what is wrong."""
    R = np.asarray(matrix, dtype=np.float64)
    if R.shape != (3, 3) or not np.isfinite(R).all():
        raise ConfigError(f"{name} must be a finite 3x3 rotation matrix (3 rows of 3 numbers), got {matrix!r}")
    err = float(np.abs(R @ R.T - np.eye(3)).max())
    if err > 1e-4 or np.linalg.det(R) < 0:
        raise ConfigError(f"{name} must be a rotation (R Rᵀ = I, det +1); |R Rᵀ - I| = {err:.2g}, "
                          f"det {np.linalg.det(R):.4f}")
    return R


@dataclass(frozen=True)
class ActionFrame:
    """The model's action frame: model = rotation · robot, positions about `center_m`."""

    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    center_m: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        object.__setattr__(self, "rotation", check_rotation(self.rotation))
        c = np.asarray(self.center_m, dtype=np.float64)
        if c.shape != (3,) or not np.isfinite(c).all():
            raise ConfigError(f"action_frame_center_m must be 3 finite numbers (m), got {self.center_m!r}")
        object.__setattr__(self, "center_m", c)

    @property
    def is_identity(self) -> bool:
        return bool(np.allclose(self.rotation, np.eye(3), atol=1e-12))

    def state_to_model(self, state: torch.Tensor) -> torch.Tensor:
        """[..., 7] robot-frame state -> the model's frame (position about the centre, orientation)."""
        from vjepa2_ros.planning.pose import euler_xyz_to_matrix, matrix_to_euler_xyz
        R = torch.as_tensor(self.rotation, dtype=state.dtype, device=state.device)
        c = torch.as_tensor(self.center_m, dtype=state.dtype, device=state.device)
        pos = c + (state[..., :3] - c) @ R.T
        rot = matrix_to_euler_xyz(R @ euler_xyz_to_matrix(state[..., 3:6]))
        return torch.cat([pos, rot, state[..., 6:]], dim=-1)

    def actions_to_robot(self, actions: np.ndarray) -> np.ndarray:
        """[..., 7] model-frame actions -> robot frame: Δxyz rotated by Rᵀ, the rotation delta
        conjugated (R_Δ' = Rᵀ R_Δ R), Δgripper unchanged."""
        from vjepa2_ros.planning.pose import euler_xyz_to_matrix, matrix_to_euler_xyz
        a = np.asarray(actions, dtype=np.float64)
        out = a.copy()
        out[..., :3] = a[..., :3] @ self.rotation                      # (Rᵀ d) for row vectors
        if np.any(a[..., 3:6]):
            R = torch.from_numpy(self.rotation)
            delta = euler_xyz_to_matrix(torch.from_numpy(np.ascontiguousarray(a[..., 3:6])))
            out[..., 3:6] = matrix_to_euler_xyz(R.T @ delta @ R).numpy()
        return out


def infer_displacement(world_model: Any, frame_before: np.ndarray, state_before: np.ndarray,
                       frame_after: np.ndarray, extent_m: float = 0.1, samples: int = 256, iterations: int = 8,
                       seed: int = 0) -> tuple[np.ndarray, float]:
    """The one-step Δxyz whose predicted next latent best matches the observed next frame.

    CEM on the model's own energy (|predict(z_before, s_before, a) - z_after|), Δxyz in a box of
    ±extent_m, rotation and gripper 0. Returns (Δxyz [3] in the model's frame, its energy).
    """
    from vjepa2_ros.planning.cem import CEMConfig, run_cem
    wm = world_model
    z0 = wm.encode(frame_before)[0]
    z1 = wm.encode(frame_after)[0]
    s0 = torch.as_tensor(np.asarray(state_before, dtype=np.float64), device=wm.device)
    cfg = CEMConfig(horizon=1, samples=samples, topk=max(2, samples // 16), iterations=iterations,
                    maxnorm=extent_m, bound="box", gripper_deadband=1.0, momentum_mean=0.0, momentum_std=0.0)
    gen = torch.Generator(device=wm.device).manual_seed(seed)
    res = run_cem(wm, z0, s0, z1.float(), cfg, generator=gen)
    action = res.plan[0].double().cpu().numpy()
    if not np.isfinite(action).all():
        raise PlanningError(f"displacement inference gave a non-finite action {action.tolist()}")
    return action[:3], float(res.best_sample_energy)


@dataclass(frozen=True)
class YawScan:
    """The pooled estimate: the model's energy of every move's measured displacement turned by each yaw."""

    yaw_deg: float                  # argmin of the pooled energy
    grid_deg: np.ndarray            # [G] yaw angles tried
    energy: np.ndarray              # [G] mean over moves of (energy / the move's zero-action energy)
    scale: float                    # the displacement gain at the minimum

    def as_dict(self) -> dict[str, Any]:
        return {"yaw_deg": self.yaw_deg, "scale": self.scale, "grid_deg": self.grid_deg.round(3).tolist(),
                "energy": self.energy.round(6).tolist()}


def scan_yaw(world_model: Any, z_before: torch.Tensor, z_after: torch.Tensor, states: np.ndarray,
             measured: np.ndarray, coarse_deg: float = 6.0, fine_deg: float = 1.0,
             scales: Sequence[float] = (0.6, 0.8, 1.0)) -> YawScan:
    """Pool every move's evidence in one 1-D search: for each yaw θ (and gain k), the energy of
    the action k·Rz(θ)·measured_i against the latent observed after move i, divided by that
    move's zero-action energy so each move counts alike; θ at the lowest mean, on a coarse grid
    over the circle, then a fine one around its minimum.

    z_before, z_after: [N, tokens, D] latents (WorldModel.encode) before and after each move;
    states [N, 7] before each move (robot frame); measured [N, 3] displacements (m).

    Sturdier than per-move argmins when single energy landscapes are flat or noisy (the sim
    model's are: 0.2% between 0 and ±4 deg): one bad move shifts the mean a little instead of
    adding an outlier to the fit.
    """
    P = np.asarray(measured, dtype=np.float64)
    if not (len(z_before) == len(z_after) == len(states) == len(P)) or len(P) < MIN_MOVES:
        raise ConfigError(f"scan_yaw needs the same number (>= {MIN_MOVES}) of latents before, after, states and "
                          f"moves, got {len(z_before)}, {len(z_after)}, {len(states)} and {len(P)}")
    coarse = np.arange(-180.0, 180.0, coarse_deg)
    e_coarse = _pooled_energy(world_model, z_before, z_after, states, P, coarse, scales)         # G, K
    best = coarse[int(np.argmin(e_coarse.min(axis=1)))]
    fine = best + np.arange(-coarse_deg, coarse_deg + fine_deg / 2, fine_deg)
    e_fine = _pooled_energy(world_model, z_before, z_after, states, P, fine, scales)
    g, k = np.unravel_index(int(np.argmin(e_fine)), e_fine.shape)
    grid = np.concatenate([coarse, fine])
    energy = np.concatenate([e_coarse.min(axis=1), e_fine.min(axis=1)])
    order = np.argsort(grid, kind="stable")
    yaw = (float(fine[g]) + 180.0) % 360.0 - 180.0
    return YawScan(yaw_deg=yaw, grid_deg=grid[order], energy=energy[order], scale=float(scales[k]))


def _pooled_energy(wm: Any, z_before: torch.Tensor, z_after: torch.Tensor, states: np.ndarray, P: np.ndarray,
                   grid: np.ndarray, scales: Sequence[float]) -> np.ndarray:
    """[G, K] mean over moves of energy(k Rz(θ) P_i) / energy(0), one batched rollout per move."""
    cand = np.stack([k * P @ yaw_matrix(t).T for t in grid for k in scales], axis=1)    # N, G*K, 3
    total = np.zeros(cand.shape[1])
    for i in range(len(P)):
        actions = torch.zeros(cand.shape[1] + 1, 1, 7, dtype=torch.float32, device=wm.device)
        actions[:-1, 0, :3] = torch.from_numpy(cand[i]).float()                            # last row: zero action
        s0 = torch.as_tensor(np.asarray(states[i], dtype=np.float64), device=wm.device)
        z_final, _ = wm.rollout(z_before[i], s0, actions)
        e = (z_final.float() - z_after[i].float()).abs().mean(dim=(1, 2)).double().cpu().numpy()
        total += e[:-1] / max(float(e[-1]), 1e-12)
    return (total / len(P)).reshape(len(grid), len(scales))


def move_table(measured: Sequence[np.ndarray], inferred: Sequence[np.ndarray], fit: RotationFit) -> str:
    """Per-move table: measured, inferred, and inferred mapped back by the fit (cm)."""
    lines = [f"{'move':>4}  {'measured (cm)':>24}  {'inferred (cm)':>24}  {'fit residual (cm)':>17}"]
    for i, (p, q) in enumerate(zip(measured, inferred)):
        fmt = " ".join(f"{100 * v:+6.2f}" for v in p), " ".join(f"{100 * v:+6.2f}" for v in q)
        lines.append(f"{i:>4}  {fmt[0]:>24}  {fmt[1]:>24}  {100 * fit.per_move_m[i]:>17.2f}")
    return "\n".join(lines)
