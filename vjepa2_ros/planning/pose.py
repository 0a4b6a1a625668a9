"""End-effector pose math of the AC pipeline, batched in torch on any device (spec b.6, d).

A pose is `[x, y, z, roll, pitch, yaw, gripper]`: metres, radians as *extrinsic* xyz Euler
angles (scipy's `"xyz"`: R = Rz(yaw) Ry(pitch) Rx(roll)), gripper 0 open .. 1 closed.
An action is `[dx, dy, dz, droll, dpitch, dyaw, dgripper]` with the rotation delta in the base
frame: Euler_xyz(R_{t+1} R_tᵀ) (DROID), applied as R(Δ)·R (`compute_new_pose`).

Every function takes leading batch dims, keeps the dtype it is given (float64 in, float64 out),
accepts numpy arrays (converted, dtype kept) and returns torch tensors. Euler extraction is
exact at gimbal lock (pitch = ±π/2, where it returns roll = 0 like scipy) and wraps angles to
[-π, π].
"""

from __future__ import annotations

import numpy as np
import torch

from vjepa2_ros.errors import ConfigError

ArrayLike = torch.Tensor | np.ndarray


def as_float_tensor(x: ArrayLike, name: str, last_dims: tuple[int, ...]) -> torch.Tensor:
    """numpy or torch -> floating torch tensor (dtype kept) whose trailing dims equal `last_dims`."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ConfigError(f"{name} must be a floating-point tensor or array, "
                          f"got {getattr(x, 'dtype', type(x).__name__)}")
    if tuple(x.shape[x.dim() - len(last_dims):]) != last_dims or x.dim() < len(last_dims):
        dims = ", ".join(map(str, last_dims))
        raise ConfigError(f"{name} must have shape [..., {dims}], got {tuple(x.shape)}")
    return x


def _matmul3(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] @ [..., 3, 3], written out so every element is computed the same way whatever
    the batch size (bit-identical per-sample and batched results)."""
    return (a[..., :, 0:1] * b[..., 0:1, :] + a[..., :, 1:2] * b[..., 1:2, :]) + a[..., :, 2:3] * b[..., 2:3, :]


def euler_xyz_to_matrix(angles: ArrayLike) -> torch.Tensor:
    """Extrinsic xyz Euler angles [..., 3] (roll, pitch, yaw) -> rotation matrices [..., 3, 3]."""
    angles = as_float_tensor(angles, "angles", (3,))
    c, s = angles.cos(), angles.sin()
    cr, cp, cy = c.unbind(-1)
    sr, sp, sy = s.unbind(-1)
    rows = [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr,
            sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr,
            -sp, cp * sr, cp * cr]
    return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))


def matrix_to_euler_xyz(rot: ArrayLike) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] -> extrinsic xyz Euler angles [..., 3], each in [-π, π].

    Roll comes first from the last row; then M = R·Rx(roll)ᵀ = Rz(yaw)·Ry(pitch) gives yaw and
    pitch from entries that stay well conditioned near gimbal lock, so the angles always rebuild
    R to rounding error. At exact lock roll is 0 (scipy's choice) and yaw carries the rotation.
    """
    rot = as_float_tensor(rot, "rotation matrix", (3, 3))
    r21, r22 = rot[..., 2, 1], rot[..., 2, 2]
    tiny = 4 * torch.finfo(rot.dtype).eps
    roll = torch.where(torch.hypot(r21, r22) <= tiny, torch.zeros_like(r21), torch.atan2(r21, r22))
    cr, sr = roll.cos(), roll.sin()
    # Columns 1 and 2 of M = R Rx(roll)^T; column 0 equals R's.
    m01 = rot[..., 0, 1] * cr - rot[..., 0, 2] * sr
    m11 = rot[..., 1, 1] * cr - rot[..., 1, 2] * sr
    yaw = torch.atan2(-m01, m11)
    pitch = torch.atan2(-rot[..., 2, 0], torch.hypot(rot[..., 0, 0], rot[..., 1, 0]))
    return torch.stack([roll, pitch, yaw], dim=-1)


def integrate_pose(pose: ArrayLike, action: ArrayLike) -> torch.Tensor:
    """The official `compute_new_pose`: pose [..., 7] ⊕ action [..., 7] -> pose [..., 7].

    xyz + Δxyz; R_new = R(Δ)·R(pose) back to extrinsic xyz Euler; gripper clipped to [0, 1].
    Leading dims broadcast (one pose, S actions).
    """
    pose = as_float_tensor(pose, "pose", (7,))
    action = as_float_tensor(action, "action", (7,)).to(pose.dtype)
    pose, action = torch.broadcast_tensors(pose, action)
    xyz = pose[..., :3] + action[..., :3]
    rot = _matmul3(euler_xyz_to_matrix(action[..., 3:6]), euler_xyz_to_matrix(pose[..., 3:6]))
    grip = (pose[..., 6:] + action[..., 6:]).clamp(0.0, 1.0)
    return torch.cat([xyz, matrix_to_euler_xyz(rot), grip], dim=-1)


def integrate_actions(pose: ArrayLike, actions: ArrayLike) -> torch.Tensor:
    """Poses along action sequences: pose [7] or [..., 7], actions [..., H, 7] -> [..., H+1, 7]
    (row 0 is the start pose, row h+1 = integrate_pose(row h, actions[..., h, :]))."""
    actions = as_float_tensor(actions, "actions", (7,))
    pose = as_float_tensor(pose, "pose", (7,)).to(actions.dtype)
    if actions.dim() < 2:
        raise ConfigError(f"actions must be [..., H, 7], got {tuple(actions.shape)}")
    current = pose.expand(*actions.shape[:-2], 7)
    out = [current]
    for h in range(actions.shape[-2]):
        current = integrate_pose(current, actions[..., h, :])
        out.append(current)
    return torch.stack(out, dim=-2)


def poses_to_actions(states: ArrayLike) -> torch.Tensor:
    """DROID deltas between consecutive poses: states [..., T, 7] -> actions [..., T-1, 7].

    [p_{t+1} − p_t, Euler_xyz(R_{t+1} R_tᵀ), g_{t+1} − g_t] (the official `poses_to_diffs`).
    """
    states = as_float_tensor(states, "states", (7,))
    if states.dim() < 2 or states.shape[-2] < 1:
        raise ConfigError(f"states must be [..., T, 7] with T >= 1, got {tuple(states.shape)}")
    start, end = states[..., :-1, :], states[..., 1:, :]
    rot = _matmul3(euler_xyz_to_matrix(end[..., 3:6]), euler_xyz_to_matrix(start[..., 3:6]).transpose(-1, -2))
    return torch.cat([end[..., :3] - start[..., :3], matrix_to_euler_xyz(rot), end[..., 6:] - start[..., 6:]], dim=-1)


def pose7_from_matrix(transform: ArrayLike, gripper: ArrayLike | float) -> torch.Tensor:
    """Homogeneous transforms [..., 4, 4] and gripper [...] (0 open .. 1 closed) -> poses [..., 7]."""
    transform = as_float_tensor(transform, "transform", (4, 4))
    g = torch.as_tensor(gripper if not isinstance(gripper, np.ndarray) else torch.from_numpy(gripper),
                        dtype=transform.dtype, device=transform.device)
    try:
        g = g.expand(transform.shape[:-2]).unsqueeze(-1)
    except RuntimeError:
        raise ConfigError(f"gripper must be a scalar or [...] = {list(transform.shape[:-2])}, "
                          f"got {list(g.shape)}") from None
    return torch.cat([transform[..., :3, 3], matrix_to_euler_xyz(transform[..., :3, :3]), g], dim=-1)


def matrix_from_pose7(pose: ArrayLike) -> torch.Tensor:
    """Poses [..., 7] -> homogeneous transforms [..., 4, 4] (the gripper value is dropped)."""
    pose = as_float_tensor(pose, "pose", (7,))
    out = torch.zeros(*pose.shape[:-1], 4, 4, dtype=pose.dtype, device=pose.device)
    out[..., :3, :3] = euler_xyz_to_matrix(pose[..., 3:6])
    out[..., :3, 3] = pose[..., :3]
    out[..., 3, 3] = 1.0
    return out
