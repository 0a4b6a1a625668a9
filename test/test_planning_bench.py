"""`bench plan`: the notebook-structured reference plans exactly like this planner; the command runs."""

import argparse

import numpy as np
import torch

from vjepa2_ros.planning import CEMConfig, integrate_pose, make_example_frame, make_example_state, run_cem
from vjepa2_ros.planning.bench import (NotebookPlanner, add_arguments, main, notebook_compute_new_pose,
                                       random_world_model)


def test_notebook_pose_update_equals_batched_pose_math():
    g = torch.Generator().manual_seed(0)
    pose = torch.rand(50, 1, 7, generator=g, dtype=torch.float64) * 2 - 1
    pose[..., 3] = np.pi                                     # the ±π roll seam of a gripper pointing down
    action = (torch.rand(50, 1, 7, generator=g, dtype=torch.float64) * 2 - 1) * 0.1
    ref = notebook_compute_new_pose(pose, action)
    torch.testing.assert_close(ref, integrate_pose(pose, action), atol=1e-12, rtol=0)


def test_reference_and_planner_return_identical_actions():
    wm = random_world_model("tiny", "cpu", torch.float64)
    cfg = CEMConfig(horizon=2, samples=48, topk=6, iterations=3)
    frame, state = make_example_frame(seed=0), make_example_state()   # roll = π: the seam is exercised
    goal = wm.encode(make_example_frame(seed=1))[0].float()
    noise = torch.randn(3, 2, 48, 4, generator=torch.Generator().manual_seed(0))
    ours = run_cem(wm, wm.encode(frame)[0], torch.from_numpy(state), goal, cfg, noise=noise).plan
    ref = NotebookPlanner(wm).plan(frame, state, goal, cfg, noise)
    assert torch.equal(ours, ref)
    assert ours[:, :3].abs().sum(-1).max().item() > 0                  # a real plan, not zeros


def test_bench_command_prints_the_table(capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--samples", "24", "--iterations", "2", "--topk", "4", "--repeats", "1",
                              "--threads", "0"])              # 0: leave the process-wide thread count alone
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "reference (notebook)" in out and "this planner" in out and "24x2x2" in out
    assert "actions identical to the reference: yes" in out
    assert "memory estimate" in out


def test_bench_runs_this_planner_on_onnxruntime_with_the_same_weights(capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--samples", "24", "--iterations", "2", "--topk", "4", "--repeats", "1",
                              "--threads", "0", "--dtype", "float32", "--runtime", "onnxruntime"])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "float32 cpu l1 torch " in out and "float32 cpu l1 onnxruntime" in out
    first = [float(v) for v in out.split("first action: [")[1].split("]")[0].split(",")]
    assert any(abs(v) > 0 for v in first[:3])                          # a real plan from the ONNX graphs
