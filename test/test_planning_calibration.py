"""Camera-placement calibration: the rotation fit, the model's action frame, displacement inference."""

import math

import numpy as np
import pytest
import torch

from vjepa2_ros.errors import ConfigError
from vjepa2_ros.planning.calibration import (ActionFrame, fit_rotation, infer_displacement, move_table, scan_yaw,
                                             yaw_matrix)
from vjepa2_ros.planning.cem import CEMConfig
from vjepa2_ros.planning.planner import Planner
from vjepa2_ros.planning.pose import euler_xyz_to_matrix, integrate_pose


def random_moves(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.05, 0.05, (n, 3))


def test_fit_recovers_a_known_rotation_exactly_without_noise_and_closely_with_noise():
    P = random_moves(12)
    R = euler_xyz_to_matrix(torch.tensor([0.2, -0.1, math.radians(30)], dtype=torch.float64)).numpy()
    fit = fit_rotation(P, 0.7 * P @ R.T)                          # the model also under-reads distances
    np.testing.assert_allclose(fit.rotation, R, atol=1e-12)
    assert fit.scale == pytest.approx(0.7) and fit.residual_m < 1e-12
    yaw = fit_rotation(P, P @ yaw_matrix(-45).T)
    assert yaw.yaw_deg == pytest.approx(-45, abs=1e-9) and yaw.full_angle_deg == pytest.approx(45, abs=1e-7)
    np.testing.assert_allclose(yaw.yaw_rotation, yaw.rotation, atol=1e-12)
    noise = np.random.default_rng(1).normal(0, 0.005, P.shape)  # 5 mm on 5 cm moves
    noisy = fit_rotation(P, P @ yaw_matrix(15).T + noise)
    assert abs(noisy.yaw_deg - 15) < 5 and 0.003 < noisy.yaw_residual_m < 0.012
    assert "fit residual" in move_table(P, P @ yaw_matrix(15).T + noise, noisy)


@pytest.mark.parametrize("measured, inferred, message", [
    (random_moves(2), random_moves(2), "at least 3 moves"),
    (np.outer(np.arange(1, 6), [0.01, 0.02, 0.0]), random_moves(5), "measured displacements are .*collinear"),
    (random_moves(5), np.outer(np.arange(1, 6), [0.0, 0.0, 0.01]), "inferred displacements are .*collinear"),
    (random_moves(4), np.vstack([random_moves(3), [np.nan, 0, 0]]), r"moves \[3\] have non-finite"),
    (random_moves(4), random_moves(5), r"two \[n, 3\] arrays"),
])
def test_degenerate_inputs_are_clear_errors(measured, inferred, message):
    with pytest.raises(ConfigError, match=message):
        fit_rotation(measured, inferred)


def test_action_frame_maps_states_and_actions_consistently():
    """Planning in the model's frame and executing Rᵀ·action lands where the model expects."""
    frame = ActionFrame(yaw_matrix(30) @ euler_xyz_to_matrix(torch.tensor([0.1, 0.0, 0.0])).double().numpy(),
                        center_m=np.array([0.4, 0.0, 0.2]))
    s = torch.tensor([0.45, 0.05, 0.3, math.pi, 0.1, 0.3, 0.2], dtype=torch.float64)
    a_model = np.array([0.03, -0.02, 0.01, 0.05, -0.02, 0.1, 0.5])
    a_robot = frame.actions_to_robot(a_model)
    np.testing.assert_allclose(np.linalg.norm(a_robot[:3]), np.linalg.norm(a_model[:3]))
    assert a_robot[6] == a_model[6]
    after_robot = integrate_pose(s, torch.from_numpy(a_robot))
    torch.testing.assert_close(frame.state_to_model(after_robot), integrate_pose(frame.state_to_model(s),
                                                                                 torch.from_numpy(a_model)))
    identity = ActionFrame()
    assert identity.is_identity
    torch.testing.assert_close(identity.state_to_model(s), s)
    with pytest.raises(ConfigError, match="must be a rotation"):
        ActionFrame(np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(ConfigError, match="3x3 rotation"):
        ActionFrame(np.eye(2))


class RotatedCameraModel:
    """A world model whose 'camera' sees positions rotated by `seen`: encode(frame) = seen · p
    (the frame is the true position, float [3]); predict_next adds the action's Δxyz, as a model
    trained with the camera in its original place would."""

    device = torch.device("cpu")
    latent_shape = (1, 3)

    def __init__(self, seen: np.ndarray) -> None:
        self.seen = torch.as_tensor(seen, dtype=torch.float32)

    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """[3] or [B, 3] positions -> [B, 1, 3] latents."""
        return (torch.as_tensor(frames, dtype=torch.float32).reshape(-1, 3) @ self.seen.T).reshape(-1, 1, 3)

    def predict_next(self, z: torch.Tensor, actions: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return z[:, -1] + actions[:, -1, None, :3].to(z.dtype)

    def rollout(self, z: torch.Tensor, s: torch.Tensor, actions: torch.Tensor, timer=None):
        return z + actions[..., :3].sum(dim=1, keepdim=True).to(z.dtype), None


def test_inferred_displacements_and_the_pooled_scan_recover_the_camera_rotation():
    truth = yaw_matrix(-30)
    wm = RotatedCameraModel(truth)
    rng = np.random.default_rng(3)
    positions = [np.array([0.45, 0.0, 0.25])]
    measured, inferred = [], []
    for i in range(6):
        step = rng.uniform(-0.04, 0.04, 3)
        p = positions[-1]
        d, e = infer_displacement(wm, p, np.r_[p, math.pi, 0, 0, 0], p + step, extent_m=0.08, samples=128,
                                  iterations=8, seed=i)
        measured.append(step)
        inferred.append(d)
        positions.append(p + step)
    fit = fit_rotation(np.array(measured), np.array(inferred))
    assert abs(fit.yaw_deg - (-30)) < 2.0, fit.as_dict()
    assert fit.residual_m < 0.005
    states = np.array([np.r_[p, math.pi, 0, 0, 0] for p in positions])
    z = wm.encode(np.array(positions))
    scan = scan_yaw(wm, z[:-1], z[1:], states[:-1], np.array(measured))
    assert scan.yaw_deg == pytest.approx(-30.0, abs=1.0) and scan.scale == 1.0
    assert scan.energy.min() < 1e-3 < scan.energy.max()              # exact match at the truth, worse elsewhere


def test_the_planner_plans_in_the_model_frame_and_returns_robot_frame_actions():
    """Same model, goal and seed: with an action frame the planned Δxyz comes out rotated by Rᵀ."""
    R = yaw_matrix(40)
    wm = RotatedCameraModel(R)
    p, goal = np.array([0.45, 0.0, 0.25]), np.array([0.50, 0.04, 0.22])
    state = np.r_[p, math.pi, 0, 0, 0]
    plans = {}
    for name, frame in (("robot", None), ("model", tuple(R.reshape(-1)))):
        planner = Planner(wm, CEMConfig(samples=64, topk=8, iterations=4, action_frame=frame), seed=0)
        planner.set_goal_latent(wm.encode(goal)[0])
        plans[name] = planner.plan(p, state)
    np.testing.assert_allclose(plans["model"].action[:3], R.T @ plans["robot"].action[:3], atol=1e-9)
    assert plans["model"].diagnostics["action_frame"] and not plans["robot"].diagnostics["action_frame"]
    # executed in the robot frame, the rotated plan moves towards the true goal
    assert np.linalg.norm(p + plans["model"].action[:3] - goal) < np.linalg.norm(p - goal)
    # the same frame set on a running planner (`~/calibrate` applies its result so): the same plan
    planner = Planner(wm, CEMConfig(samples=64, topk=8, iterations=4), seed=0)
    planner.set_goal_latent(wm.encode(goal)[0])
    planner.set_action_frame(R.reshape(-1), (0.0, 0.0, 0.0))
    planner.reset()
    np.testing.assert_allclose(planner.plan(p, state).action, plans["model"].action, atol=1e-12)
    with pytest.raises(ConfigError, match="must be a rotation"):
        planner.set_action_frame((2.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    assert planner.frame is not None and np.allclose(planner.frame.rotation, R)      # unchanged by the refusal
    planner.set_action_frame(None)
    assert planner.frame is None and planner.cfg.action_frame is None
    with pytest.raises(ConfigError, match="9 numbers"):
        CEMConfig(action_frame=(1.0, 0.0, 0.0))
    with pytest.raises(ConfigError, match="must be a rotation"):
        CEMConfig(action_frame=(2.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
