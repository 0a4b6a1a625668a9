"""Planner: goals and sub-goals, warm start, hold rule, diagnostics, landscape, bad input."""

import json

import numpy as np
import pytest
import torch

from vjepa2_ros.errors import ConfigError, PlanningError
from vjepa2_ros.planning import (CEMConfig, Planner, WorldModel, energy, make_example_frame, make_example_state,
                                 warm_start_mean)

SMALL = CEMConfig(samples=32, topk=4, iterations=2, horizon=2)


@pytest.fixture(scope="module")
def wm():
    return WorldModel.tiny(seed=0)


def planner(wm, cfg=SMALL, **kw) -> Planner:
    p = Planner(wm, cfg, seed=3, **kw)
    p.set_goal_image(make_example_frame(seed=1))
    return p


def test_plan_returns_a_finite_action_and_json_diagnostics(wm):
    res = planner(wm).plan(make_example_frame(seed=0), make_example_state())
    assert res.action.dtype == np.float64 and res.action.shape == (7,)
    assert res.plan.shape == (2, 7) and np.array_equal(res.action, res.plan[0])
    assert np.isfinite(res.action).all() and np.all(res.action[3:6] == 0.0)
    assert abs(res.action[:3]).sum() <= 0.075 + 1e-6
    d = json.loads(json.dumps(res.diagnostics))
    assert d["iterations"] == 2 and len(d["best_energy"]) == 2 and len(d["elite_spread"]) == 2
    assert d["energy"] == res.energy == d["plan_energy"]
    for stage in ("encode_s", "predict_s", "pose_s", "total_s"):
        assert d["timings"][stage] >= 0.0
    assert d["goal_index"] == 0 and d["held"] is False and d["warm_started"] is False


def test_plan_energy_is_the_rollout_energy_of_the_plan(wm):
    p = planner(wm)
    frame, state = make_example_frame(seed=0), make_example_state()
    res = p.plan(frame, state)
    z = wm.encode(frame)[0]
    z_final, _ = wm.rollout(z, torch.from_numpy(state), torch.from_numpy(res.plan).float()[None])
    goal = wm.encode(make_example_frame(seed=1))[0]
    assert abs(float(energy(z_final, goal)[0]) - res.energy) < 1e-5


def test_seeded_and_reset_plans_are_reproducible(wm):
    frame, state = make_example_frame(seed=0), make_example_state()
    a, b = planner(wm), planner(wm)
    first = a.plan(frame, state).action
    assert np.array_equal(first, b.plan(frame, state).action)
    a.reset()
    assert np.array_equal(first, a.plan(frame, state).action)


def test_warm_start_shifts_the_previous_plan(wm):
    mean = torch.tensor([[1.0, 0, 0, 0], [2.0, 0, 0, 0], [3.0, 0, 0, 0]])
    assert warm_start_mean(mean)[:, 0].tolist() == [2.0, 3.0, 3.0]
    p = planner(wm, CEMConfig(samples=32, topk=4, iterations=1, warm_start=True))
    frame, state = make_example_frame(seed=0), make_example_state()
    assert p.plan(frame, state).diagnostics["warm_started"] is False
    assert p.plan(frame, state).diagnostics["warm_started"] is True
    p.reset()
    assert p.plan(frame, state).diagnostics["warm_started"] is False


def test_hold_rule_keeps_still_when_the_zero_action_is_best(wm):
    frame, state = make_example_frame(seed=0), make_example_state()
    z = wm.encode(frame)[0]
    z_zero, _ = wm.rollout(z, torch.from_numpy(state), torch.zeros(1, 2, 7))
    p = Planner(wm, SMALL, seed=0, hold_rule=True)
    p.set_goal_latent(z_zero[0])                         # the zero action reaches the goal exactly
    res = p.plan(frame, state)
    assert res.diagnostics["held"] is True and np.all(res.action == 0.0) and np.all(res.plan == 0.0)
    assert res.energy == res.diagnostics["zero_action_energy"] < 1e-6
    assert res.diagnostics["plan_energy"] >= res.energy
    off = Planner(wm, SMALL, seed=0)
    off.set_goal_latent(z_zero[0])
    assert off.plan(frame, state).diagnostics["held"] is False


def test_sub_goals_advance_by_steps_and_by_energy(wm):
    frame, state = make_example_frame(seed=0), make_example_state()
    goals = [make_example_frame(seed=s) for s in (1, 2, 3)]
    p = Planner(wm, CEMConfig(samples=16, topk=2, iterations=1), seed=0)
    p.set_goals(goals, advance_after_steps=[1, 2])
    assert [p.plan(frame, state).diagnostics["goal_index"] for _ in range(5)] == [0, 1, 1, 2, 2]
    p.set_goals(goals, advance_below_energy=1e6)         # every observation is "close enough"
    idx = [p.plan(frame, state).diagnostics for _ in range(3)]
    assert [d["goal_index"] for d in idx] == [1, 2, 2] and idx[0]["goal_count"] == 3
    with pytest.raises(ConfigError, match="advance_after_steps"):
        p.set_goals(goals, advance_after_steps=[1, 0])


def test_stop_rule_keeps_still_at_the_final_goal_only(wm):
    frame, state, other = make_example_frame(seed=0), make_example_state(), make_example_frame(seed=1)
    e_other = float(energy(wm.encode(frame)[0][None], wm.encode(other)[0]))
    p = Planner(wm, SMALL, seed=0, stop_below_energy=0.5 * e_other)
    p.set_goal_image(frame)                              # the observation is the goal: energy 0
    res = p.plan(frame, state)
    d = res.diagnostics
    assert d["at_goal"] is True and d["held"] is True and "iterations" not in d     # no search ran
    assert np.all(res.plan == 0.0) and res.plan.shape == (2, 7) and res.energy == d["observation_energy"] < 1e-6
    p.set_goal_image(other)                              # far from the goal: it plans
    far = p.plan(frame, state).diagnostics
    assert far["at_goal"] is False and far["iterations"] == 2 and far["observation_energy"] == pytest.approx(e_other)
    p.set_goals([frame, other])                          # at a sub-goal that is not the last: it plans
    assert p.plan(frame, state).diagnostics["at_goal"] is False
    with pytest.raises(ConfigError, match="stop_below_energy"):
        Planner(wm, SMALL, stop_below_energy=0.0)


def test_energy_landscape(wm):
    p = planner(wm)
    frame, state = make_example_frame(seed=0), make_example_state()
    grid = np.linspace(-0.075, 0.075, 5)
    out = p.energy_landscape(frame, state, grid)
    assert out["energy"].shape == (5, 5) and out["axes"] == ["x", "y"]
    i, j = 3, 1
    a = torch.zeros(1, 1, 7)
    a[0, 0, 0], a[0, 0, 1] = float(grid[i]), float(grid[j])
    z_final, _ = wm.rollout(wm.encode(frame)[0], torch.from_numpy(state), a)
    e = float(energy(z_final, wm.encode(make_example_frame(seed=1))[0])[0])
    assert abs(out["energy"][i, j] - e) < 1e-5
    assert out["best_energy"] == out["energy"].min() and abs(out["energy"][2, 2] - out["zero_energy"]) < 1e-5


def test_bad_input_is_a_clear_error_never_a_nan_action(wm):
    frame, state = make_example_frame(seed=0), make_example_state()
    p = Planner(wm, SMALL)
    assert not p.has_goal
    with pytest.raises(PlanningError, match="no goal"):
        p.plan(frame, state)
    with pytest.raises(PlanningError, match=r"\[N, D\]"):
        p.set_goal_latent(torch.zeros(15, 64))
    with pytest.raises(PlanningError, match="NaN"):
        p.set_goal_latent(torch.full((16, 64), float("nan")))
    p.set_goal_image(make_example_frame(seed=1))
    assert p.has_goal
    bad = state.copy()
    bad[2] = np.nan
    with pytest.raises(PlanningError, match="NaN"):
        p.plan(frame, bad)
    with pytest.raises(PlanningError, match="7 floats"):
        p.plan(frame, state[:6])
    p.clear_goal()
    assert not p.has_goal
    with pytest.raises(ConfigError, match="time_budget_s"):
        Planner(wm, CEMConfig(time_budget_s=0))
    with pytest.raises(ConfigError, match="topk"):
        Planner(wm, CEMConfig(samples=4, topk=5))


def test_nan_weights_never_produce_an_action():
    wm = WorldModel.tiny(seed=0)
    with torch.no_grad():
        wm.runtime.predictor.predictor_proj.bias.fill_(float("nan"))
    p = Planner(wm, SMALL)
    p.set_goal_image(make_example_frame(seed=1))
    with pytest.raises(PlanningError, match="non-finite"):
        p.plan(make_example_frame(seed=0), make_example_state())
