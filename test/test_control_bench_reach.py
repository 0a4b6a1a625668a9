"""`vjepa2-ros bench sim-reach` on the simulated arm: held-out tasks, the oracle reaches, the report."""

import json
import math

import numpy as np
import pytest

from vjepa2_ros.cli import main as cli_main
from vjepa2_ros.control.bench_reach import (DEMO_CONFIG, MIN_SEPARATION_M, WORKSPACE_MAX_M, WORKSPACE_MIN_M,
                                            OracleWorldModel, bench_config, run_bench, sample_reach_tasks)
from vjepa2_ros.errors import ConfigError
from vjepa2_ros.robot.safety import make_example_envelope


def test_tasks_are_reachable_separated_fixed_and_prefix_stable():
    env = make_example_envelope()
    tasks = sample_reach_tasks(env, "flange", 4, seed=0)
    for t in tasks:
        for q, p in ((t.q_start, t.p_start_m), (t.q_goal, t.p_goal_m)):
            env.check_joint_position(q)
            assert np.allclose(env.kinematics.fk(q, "flange")[:3, 3], p, atol=1e-6)
            assert np.all(p >= np.array(WORKSPACE_MIN_M) - 1e-6) and np.all(p <= np.array(WORKSPACE_MAX_M) + 1e-6)
            # pointing down as at home: the flange z axis points down
            assert env.kinematics.fk(q, "flange")[2, 2] < -0.99
        assert np.linalg.norm(t.p_goal_m - t.p_start_m) >= MIN_SEPARATION_M
    again = sample_reach_tasks(env, "flange", 2, seed=0)          # the first tasks do not depend on the count
    assert all(np.array_equal(a.q_goal, b.q_goal) and np.array_equal(a.q_start, b.q_start)
               for a, b in zip(tasks, again))
    other = sample_reach_tasks(env, "flange", 1, seed=1)
    assert not np.allclose(other[0].p_goal_m, tasks[0].p_goal_m)
    with pytest.raises(ConfigError, match="goals must be >= 1"):
        sample_reach_tasks(env, "flange", 0)


def test_oracle_latent_is_the_integrated_position():
    oracle = OracleWorldModel(lambda: np.array([0.4, 0.1, 0.3]))
    import torch
    z = oracle.encode(np.zeros((8, 8, 3), np.uint8))[0]
    assert z.shape == (1, 3) and torch.allclose(z, torch.tensor([[0.4, 0.1, 0.3]]))
    actions = torch.zeros(2, 2, 7)
    actions[0, :, 0] = 0.05
    actions[1, 1, 2] = -0.02
    zf, poses = oracle.rollout(z, torch.tensor([0.4, 0.1, 0.3, np.pi, 0, 0, 0]), actions)
    assert torch.allclose(zf[:, 0], torch.tensor([[0.5, 0.1, 0.3], [0.4, 0.1, 0.28]]), atol=1e-6)
    assert poses.shape == (2, 3, 7) and torch.allclose(poses[:, -1, :3], zf[:, 0], atol=1e-6)


def test_oracle_reaches_both_goals_in_both_modes():
    cfg = bench_config(DEMO_CONFIG, samples=32, iterations=2)
    result = run_bench(cfg, goals=2, seed=0, max_plans=20, oracle=True, camera_px=64, progress=False)
    assert len(result["tasks"]) == 2
    for mode in ("async", "blocking"):
        episodes = result["modes"][mode]["episodes"]
        for e in episodes:
            assert e["start_distance_m"] > MIN_SEPARATION_M - 0.01
            assert e["final_distance_m"] < 0.05 and e["success"] and e["reached"]
            assert e["plans"] == 20 and e["state"] == "active"
        s = result["modes"][mode]["summary"]
        assert s["success_rate"] == 1.0 and s["faults"] == 0 and s["final_distance_m_mean"] < 0.05


def test_cli_shipped_model_reports_every_number(tmp_path, capsys):
    out = tmp_path / "reach.json"
    assert cli_main(["bench", "sim-reach", "--goals", "2", "--max-plans", "3", "--samples", "8", "--iterations", "1",
                     "--camera-px", "64", "--hold-rule", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "expect ~0% success" not in printed and "models/sim_reach/predictor.safetensors" in printed
    assert printed.count("final success") == 2 and "mode async" in printed and "mode blocking" in printed
    report = json.loads(out.read_text())
    assert report["seed_offset"] == 10_000 and report["oracle"] is False and report["hold_rule"] is True
    for mode in ("async", "blocking"):
        s = report["modes"][mode]["summary"]
        assert s["goals"] == 2 and 0.0 <= s["success_rate"] <= s["reached_rate"] <= 1.0
        assert all(math.isfinite(s[k]) for k in ("final_distance_m_mean", "planner_s_mean", "sim_s_mean"))
        for e in report["modes"][mode]["episodes"]:
            assert 1 <= e["plans"] <= 3 and e["planner_s_mean"] > 0
            assert math.isfinite(e["final_distance_m"]) and e["min_distance_m"] <= e["final_distance_m"] + 1e-12


def test_oracle_reaches_in_real_time_with_the_loop_threads():
    cfg = bench_config(DEMO_CONFIG, samples=32, iterations=2)
    result = run_bench(cfg, goals=1, seed=0, max_plans=8, oracle=True, camera_px=64, real_time=True, progress=False)
    for mode in ("async", "blocking"):
        (e,) = result["modes"][mode]["episodes"]
        assert e["success"] and e["final_distance_m"] < 0.05 and e["plans"] == 8 and e["state"] == "active"
        # the run took real time: at least the plans' model steps
        assert e["wall_s"] >= 8 * cfg.control.model_step_s
