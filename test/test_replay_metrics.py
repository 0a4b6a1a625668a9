"""Replay metrics: action agreement by hand-checked cases, prediction error against a model-made sequence."""

import math

import numpy as np
import pytest
import torch

from vjepa2_ros.planning.world_model import WorldModel
from vjepa2_ros.replay.metrics import action_agreement, prediction_errors, summarise


def test_action_agreement_cases():
    a = np.array([0.02, -0.01, 0.0, 0, 0, 0, 0.5])
    same = action_agreement(a, a)
    assert same["angle_deg"] == pytest.approx(0.0, abs=1e-6) and same["error_cm"] == 0.0
    assert same["sign_x"] == same["sign_y"] == same["sign_z"] == 1.0
    opposite = action_agreement(a, -a)
    assert opposite["angle_deg"] == pytest.approx(180.0)
    assert opposite["error_cm"] == pytest.approx(100 * 2 * math.hypot(0.02, 0.01))
    assert (opposite["sign_x"], opposite["sign_y"], opposite["sign_z"]) == (0.0, 0.0, 1.0)   # z: both within deadband
    right = action_agreement(np.array([0.01, 0, 0, 0, 0, 0, 0]), np.array([0, 0.03, 0, 0, 0, 0, 0]))
    assert right["angle_deg"] == pytest.approx(90.0)
    still = action_agreement(a, np.zeros(7))
    assert math.isnan(still["angle_deg"]) and still["error_cm"] == pytest.approx(100 * math.hypot(0.02, 0.01))


def test_prediction_error_is_zero_on_the_models_own_one_step_sequence():
    wm = WorldModel.tiny(seed=0)
    rng = np.random.default_rng(0)
    T = 5
    actions = np.zeros((T - 1, 7))
    actions[:, :3] = rng.uniform(-0.03, 0.03, (T - 1, 3))
    states = np.zeros((T, 7))
    states[0] = [0.45, 0.0, 0.3, np.pi, 0.0, 0.0, 0.0]
    states[1:, :3] = states[0, :3] + np.cumsum(actions[:, :3], axis=0)
    states[1:, 3:] = states[0, 3:]
    frame = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    z = [wm.encode(frame)[0]]
    for t in range(T - 1):                 # each latent = the model's one-step prediction from the previous one
        z_next, _ = wm.rollout(z[t], torch.as_tensor(states[t]), torch.as_tensor(actions[t:t + 1], dtype=torch.float32)[None])
        z.append(z_next[0])
    latents = torch.stack(z)
    for t in range(T - 1):
        model, copy = prediction_errors(wm, latents, states, actions, t, horizon=2)
        assert model[0] < 1e-5 < copy[0]
        assert (t + 2 < T) == np.isfinite(model[1]) == np.isfinite(copy[1])
    summary = summarise([{"pred_err_h1": 0.1, "copy_err_h1": 0.2, "angle_deg": math.nan, "error_cm": 1.0,
                          "sign_x": 1.0, "sign_y": 0.0, "sign_z": 1.0, "energy_planned": 1.0, "energy_recorded": 2.0,
                          "energy_zero": 3.0, "plan_time_s": 0.5}], horizon=1)
    assert summary["action"]["angle_deg"]["count"] == 0 and summary["energy"]["planned_below_recorded"] == 1.0
    assert summary["timing"]["plan_steps_per_s"] == 2.0
