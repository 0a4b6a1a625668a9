"""`vjepa2-ros bench goal-energy`: the observation's energy to a goal, by distance from it.

Where the planner's stop rule (control.goal_stop_below_energy) puts its threshold: for held-out
reach goals (`bench sim-reach`'s tasks, by default the validation seed 1), the camera's view with
the flange at the goal and at positions `--distances-cm` away from it (random directions, the
goal's orientation, solved by IK), each encoded and scored against the goal view with the
planner's L1 energy. No planning, no motion: a minute on a CPU.

Prints the energy's p10 / p50 / p90 per distance, then for each candidate threshold the share of
views below it at each distance (how close the arm must come before it stops) and, of the views
below it, the share at or beyond the success radius (how often it would stop short).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vjepa2_ros.control.bench_reach import DEMO_CONFIG, REACH_SEED_OFFSET, bench_config, sample_reach_tasks
from vjepa2_ros.control.goal_view import goal_view
from vjepa2_ros.control.stack import build_backend, build_world_model, sim_camera_px
from vjepa2_ros.errors import ConfigError, SafetyError
from vjepa2_ros.planning.cem import energy

DISTANCES_CM = (1, 2, 3, 4, 5, 6, 8, 10, 15)
THRESHOLDS = (0.05, 0.06, 0.065, 0.07, 0.075, 0.08, 0.09, 0.10)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG, help="stack YAML (default: the shipped sim model)")
    parser.add_argument("--goals", type=int, default=20, help="held-out goals (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="task seed, as bench sim-reach's (default 1: validation)")
    parser.add_argument("--per-distance", type=int, default=3, help="random directions per goal and distance")
    parser.add_argument("--distances-cm", type=float, nargs="+", default=list(DISTANCES_CM))
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS))
    parser.add_argument("--success-m", type=float, default=0.05, help="success radius (m), as bench sim-reach's")
    parser.add_argument("--json", type=Path, default=None, help="also write every view's (goal, distance, energy)")


def measure(cfg: Any, goals: int, seed: int, distances_m: list[float], per_distance: int,
            progress: bool = True) -> np.ndarray:
    """Rows [goal, distance m, energy] (distance 0: the goal view itself, one per goal)."""
    if goals < 1 or per_distance < 1:
        raise ConfigError(f"goals and per_distance must be >= 1, got {goals} and {per_distance}")
    if any(not d > 0 for d in distances_m):
        raise ConfigError(f"distances must be > 0, got {distances_m}")
    world_model = build_world_model(cfg.model)
    px = sim_camera_px(cfg.model)
    backend = build_backend(cfg, camera_width=px, camera_height=px)
    backend.connect()
    rows = []
    try:
        frame, kin = cfg.control.ee_frame, backend.kinematics
        rng = np.random.default_rng(seed)
        for task in tqdm(sample_reach_tasks(backend.envelope, frame, goals, seed), desc="goal-energy", unit="goal",
                         disable=not progress):
            goal = world_model.encode(goal_view(backend, task.q_goal))[0]                   # N, D
            rotation = kin.fk(task.q_goal, frame)[:3, :3]
            rows.append((task.index, 0.0, 0.0))
            for d in distances_m:
                for _ in range(per_distance):
                    u = rng.normal(size=3)
                    p = task.p_goal_m + d * u / np.linalg.norm(u)
                    ik = kin.ik_position(p, task.q_goal, frame, rotation=rotation, position_tol_m=1e-4,
                                         rotation_tol_rad=1e-3)
                    if not ik.success:
                        continue
                    try:
                        view = goal_view(backend, ik.q)
                    except SafetyError:                                  # outside the envelope: skip it
                        continue
                    z = world_model.encode(view)[0]
                    rows.append((task.index, d, float(energy(z[None].float(), goal.float())[0])))
    finally:
        backend.disconnect()
    return np.array(rows)


def table(rows: np.ndarray, thresholds: list[float], success_m: float) -> str:
    d, e = rows[:, 1], rows[:, 2]
    distances = sorted(set(d[d > 0].tolist()))
    lines = ["energy to the goal by distance (p10 / p50 / p90)"]
    lines += [f"  {100 * x:5.1f} cm  n {int(np.sum(d == x)):4d}  {np.percentile(e[d == x], 10):.4f} / "
              f"{np.median(e[d == x]):.4f} / {np.percentile(e[d == x], 90):.4f}" for x in distances]
    head = "  ".join(f"{100 * x:4.0f}cm" for x in distances)
    lines += ["", f"threshold  share below it at  {head}   of the views below: >= {100 * success_m:.0f} cm"]
    for t in thresholds:
        below = (e < t) & (d > 0)
        shares = "  ".join(f"{np.mean(e[d == x] < t):6.2f}" for x in distances)
        short = f"{np.mean(d[below] >= success_m - 1e-9):.2f} of {int(below.sum())}" if below.any() else "-"
        lines.append(f"  {t:7.3f}                    {shares}   {short}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    cfg = bench_config(args.config)
    if cfg.model.checkpoint is None:
        print("goal-energy: the model has no checkpoint (random weights): the table says nothing about a trained model")
    distances = [x / 100 for x in args.distances_cm]
    rows = measure(cfg, args.goals, args.seed, distances, args.per_distance)
    print(f"goal-energy: {args.goals} goals (seeds [{REACH_SEED_OFFSET + args.seed}, i]), {len(rows)} views, "
          f"model {cfg.model.checkpoint}")
    print(table(rows, args.thresholds, args.success_m))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"config": str(args.config), "seed": args.seed,
                                         "rows": rows.round(6).tolist()}))
    return 0
