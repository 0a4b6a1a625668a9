"""Pose math against the official fixtures, at gimbal lock, across the ±π wrap, in both dtypes."""

import math

import numpy as np
import pytest
import torch

from conftest import load_fixture
from vjepa2_ros.errors import ConfigError
from vjepa2_ros.planning import (euler_xyz_to_matrix, integrate_actions, integrate_pose, matrix_from_pose7,
                                 matrix_to_euler_xyz, pose7_from_matrix, poses_to_actions)


@pytest.fixture(scope="module")
def helpers():
    return load_fixture("planning_helpers.safetensors")


def test_integrate_pose_matches_official(helpers):
    out = integrate_pose(helpers["pose_in"], helpers["action_in"])
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, helpers["new_pose"], atol=1e-9, rtol=0)


def test_poses_to_actions_matches_official(helpers):
    torch.testing.assert_close(poses_to_actions(helpers["traj_states"]), helpers["traj_actions"], atol=1e-9, rtol=0)
    torch.testing.assert_close(poses_to_actions(helpers["traj_states"][:2])[0], helpers["poses_to_diff_0_1"],
                               atol=1e-9, rtol=0)
    batched = poses_to_actions(torch.stack([helpers["traj_states"], helpers["traj_states"].flip(0)]))
    torch.testing.assert_close(batched[0], helpers["traj_actions"], atol=1e-9, rtol=0)
    assert batched.shape == (2, 4, 7)


def test_float32_and_numpy_keep_dtype(helpers):
    out32 = integrate_pose(helpers["pose_in"].float(), helpers["action_in"].float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), helpers["new_pose"], atol=2e-6, rtol=0)
    out_np = poses_to_actions(helpers["traj_states"].numpy())
    assert isinstance(out_np, torch.Tensor) and out_np.dtype == torch.float64
    torch.testing.assert_close(out_np, helpers["traj_actions"], atol=1e-9, rtol=0)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_euler_round_trip_everywhere_including_gimbal_lock(dtype, tol):
    g = torch.Generator().manual_seed(0)
    angles = (torch.rand(4000, 3, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    angles[:, 1] /= 2                                                   # pitch in [-π/2, π/2]
    lock = torch.tensor([[0.3, math.pi / 2, 0.5], [-2.0, -math.pi / 2, 3.0], [3.1, math.pi / 2 - 1e-7, -3.1],
                         [math.pi, 0.0, -math.pi], [0.0, 0.0, 0.0]], dtype=torch.float64)
    angles = torch.cat([angles, lock]).to(dtype)
    rot = euler_xyz_to_matrix(angles)
    back = matrix_to_euler_xyz(rot)
    assert back.dtype == dtype
    torch.testing.assert_close(euler_xyz_to_matrix(back), rot, atol=tol, rtol=0)
    assert bool((back.abs() <= math.pi + 1e-6).all())
    regular = angles[:, 1].abs() < 1.4
    # Away from the lock the angles themselves come back (modulo 2π at the ±π seam).
    diff = torch.remainder(back[regular] - angles[regular] + math.pi, 2 * math.pi) - math.pi
    assert float(diff.abs().max()) < 100 * tol


def test_exact_gimbal_lock_puts_everything_in_yaw():
    rot = euler_xyz_to_matrix(torch.tensor([0.3, math.pi / 2, 0.5], dtype=torch.float64))
    roll, pitch, yaw = matrix_to_euler_xyz(rot).tolist()
    assert roll == 0.0 and abs(pitch - math.pi / 2) < 1e-12 and abs(yaw - 0.2) < 1e-12   # Rz(0.5)Ry(π/2)Rx(0.3)


def test_yaw_wraps_around_pi():
    pose = torch.tensor([0.5, 0.0, 0.4, 0.0, 0.0, 3.1, 0.5], dtype=torch.float64)
    act = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.0], dtype=torch.float64)
    out = integrate_pose(pose, act)
    assert abs(out[5].item() - (3.2 - 2 * math.pi)) < 1e-12
    torch.testing.assert_close(poses_to_actions(torch.stack([pose, out])), act[None], atol=1e-12, rtol=0)


def test_gripper_is_clipped_to_unit_interval():
    pose = torch.tensor([0.5, 0.0, 0.4, 0.0, 0.0, 0.0, 0.9], dtype=torch.float64)
    up = integrate_pose(pose, torch.tensor([0, 0, 0, 0, 0, 0, 0.5], dtype=torch.float64))
    down = integrate_pose(pose, torch.tensor([0, 0, 0, 0, 0, 0, -1.5], dtype=torch.float64))
    assert up[6].item() == 1.0 and down[6].item() == 0.0


def test_actions_and_integration_are_inverse():
    g = torch.Generator().manual_seed(1)
    states = torch.rand(3, 6, 7, generator=g, dtype=torch.float64)
    states[..., 3:6] = (states[..., 3:6] * 2 - 1) * torch.tensor([math.pi, math.pi / 2, math.pi], dtype=torch.float64)
    actions = poses_to_actions(states)
    rebuilt = integrate_actions(states[:, 0], actions)
    assert rebuilt.shape == (3, 6, 7)
    torch.testing.assert_close(matrix_from_pose7(rebuilt), matrix_from_pose7(states), atol=1e-12, rtol=0)
    torch.testing.assert_close(rebuilt[..., 6], states[..., 6], atol=1e-12, rtol=0)


def test_batched_equals_per_sample_bitwise():
    g = torch.Generator().manual_seed(2)
    poses = torch.rand(37, 7, generator=g, dtype=torch.float64) * 2 - 1
    acts = (torch.rand(37, 7, generator=g, dtype=torch.float64) * 2 - 1) * 0.1
    batched = integrate_pose(poses, acts)
    single = torch.stack([integrate_pose(poses[i], acts[i]) for i in range(37)])
    assert torch.equal(batched[:, :3], single[:, :3]) and torch.equal(batched[:, 6], single[:, 6])
    torch.testing.assert_close(batched, single, atol=1e-15, rtol=0)


def test_homogeneous_round_trip():
    pose = torch.tensor([[0.4, -0.1, 0.3, 3.0, -0.4, 1.2, 0.25], [0.5, 0.2, 0.6, 0.1, math.pi / 2, -0.7, 1.0]],
                        dtype=torch.float64)
    T = matrix_from_pose7(pose)
    assert T.shape == (2, 4, 4) and torch.equal(T[:, 3], torch.tensor([[0, 0, 0, 1.0]] * 2, dtype=torch.float64))
    back = pose7_from_matrix(T, pose[:, 6])
    torch.testing.assert_close(matrix_from_pose7(back), T, atol=1e-12, rtol=0)
    torch.testing.assert_close(back[0], pose[0], atol=1e-12, rtol=0)
    assert back[1, 6].item() == 1.0
    single = pose7_from_matrix(T[0].numpy(), 0.5)
    assert single.shape == (7,) and single[6].item() == 0.5


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ConfigError, match=r"\[\.\.\., 7\]"):
        integrate_pose(torch.zeros(6), torch.zeros(7))
    with pytest.raises(ConfigError, match="floating"):
        poses_to_actions(np.zeros((3, 7), dtype=np.int64))
    with pytest.raises(ConfigError, match="3, 3"):
        matrix_to_euler_xyz(torch.zeros(4, 4))
    with pytest.raises(ConfigError, match="gripper"):
        pose7_from_matrix(torch.eye(4).expand(3, 4, 4), torch.zeros(4))
