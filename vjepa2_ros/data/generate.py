"""DROID-layout episodes from the MuJoCo arm: test data for everyone without DROID access.

Each episode drives the flange through smooth random waypoints above the table (minimum-jerk
segments, hand pointing down, small yaw changes) and opens or closes the gripper once or twice,
tracking the path with IK and the simulator's position actuators. Rows are recorded at DROID's
15 Hz with rendered frames, the measured joints, their flange pose (forward kinematics) and the
measured gripper closedness, so images, joints and states are consistent.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vjepa2_ros.data.droid import CONTENT_RATE_HZ, write_droid_episode
from vjepa2_ros.data.episode import DEFAULT_STEP_S, Episode
from vjepa2_ros.data.video import parse_size
from vjepa2_ros.errors import ConfigError
from vjepa2_ros.planning.pose import matrix_to_euler_xyz, pose7_from_matrix
from vjepa2_ros.robot.kinematics import PANDA, Kinematics

START_S = 1_700_000_000.0        # recording wall clock of the first episode (2023-11-14, like DROID's era)
RECORD_MARKER = "sim_record.json"  # written last into the output folder: what was recorded (see record_params)


@dataclass(frozen=True)
class MotionConfig:
    """Where and how fast the generated motions go (robot base frame)."""

    workspace_min_m: tuple[float, float, float] = (0.35, -0.20, 0.12)   # flange xyz box
    workspace_max_m: tuple[float, float, float] = (0.65, 0.20, 0.40)
    segment_s: tuple[float, float] = (1.0, 2.0)                         # duration range of one waypoint move
    max_yaw_rad: float = 0.4                                            # yaw offset range about the home pose
    control_hz: float = 60.0                                            # IK / joint-target rate

    def __post_init__(self) -> None:
        if not all(lo < hi for lo, hi in zip(self.workspace_min_m, self.workspace_max_m)):
            raise ConfigError(f"workspace_min_m {self.workspace_min_m} must be below workspace_max_m "
                              f"{self.workspace_max_m} on every axis")
        if not 0 < self.segment_s[0] <= self.segment_s[1]:
            raise ConfigError(f"segment_s {self.segment_s} must be 0 < min <= max seconds")
        if not 1.0 <= self.control_hz <= 1000.0:
            raise ConfigError(f"control_hz {self.control_hz} must be in [1, 1000]")


def generate_episodes(out_dir: str | Path, count: int = 1, steps: int = 12, seed: int = 0,
                      step_s: float = DEFAULT_STEP_S, camera_size: tuple[int, int] = (64, 64),
                      record_hz: float = CONTENT_RATE_HZ, motion: MotionConfig = MotionConfig(),
                      stereo: bool = False, progress: bool = False, progress_position: int = 0) -> list[Path]:
    """Write `count` episodes of `steps` model steps (of step_s seconds) under out_dir/episode_NNN,
    then out_dir/sim_record.json (record_params: what a finished recording holds).

    camera_size: (height, width) of the rendered frames (even numbers, for MP4); record_hz: rows
    per second (DROID: 15). Deterministic for a given seed. progress_position: the progress
    bar's line when several recorders run side by side.
    """
    from vjepa2_ros.robot.sim import PandaSim, SimConfig
    if count < 1 or steps < 2:
        raise ConfigError(f"need count >= 1 and steps >= 2, got count={count}, steps={steps}")
    if not (step_s > 0 and record_hz > 0):
        raise ConfigError(f"step_s ({step_s}) and record_hz ({record_hz}) must be positive")
    h, w = camera_size
    out_dir = Path(out_dir)
    sim = PandaSim(SimConfig(camera_height=h, camera_width=w, seed=seed))
    try:
        paths = []
        for i in tqdm(range(count), desc=f"sim episodes (seed {seed})", disable=not progress,
                      position=progress_position):
            rng = np.random.default_rng([seed, i])
            duration_s = (steps - 1) * step_s
            start_s = START_S + i * (duration_s + 60.0)
            episode = record_episode(sim, rng, duration_s, record_hz, motion, start_s, source=f"sim seed={seed} #{i}")
            paths.append(write_droid_episode(out_dir / f"episode_{i:03d}", episode, stereo=stereo, lab="SIM",
                                             task="move the arm around the cube"))
        params = record_params(count, steps, seed, step_s, camera_size, record_hz)
        (out_dir / RECORD_MARKER).write_text(json.dumps(params, indent=1) + "\n")
        return paths
    finally:
        sim.close()


def record_params(count: int, steps: int, seed: int, step_s: float, camera_size: tuple[int, int],
                  record_hz: float = CONTENT_RATE_HZ) -> dict:
    """What `generate_episodes` recorded, as written to sim_record.json (the default motion)."""
    return {"count": int(count), "steps": int(steps), "seed": int(seed), "step_s": float(step_s),
            "size": [int(v) for v in camera_size], "record_hz": float(record_hz)}


def record_episode(sim, rng: np.random.Generator, duration_s: float, record_hz: float, motion: MotionConfig,
                   start_s: float, source: str) -> Episode:
    """One episode on an existing PandaSim: reset with a random scene, move, record rows."""
    kin = Kinematics(PANDA)
    gripper0 = float(rng.choice([0.0, 1.0]))
    sim.reset(gripper=gripper0, rng=rng)
    sim.advance(0.3)                                           # settle the hand and the cube
    q = sim.joint_positions()
    home = kin.fk(q, "flange")
    path = _waypoint_path(home, rng, duration_s, motion)
    toggles = np.sort(rng.uniform(0.15, 0.85, size=rng.integers(1, 3))) * duration_s

    n_rows = int(math.ceil(duration_s * record_hz - 1e-9)) + 1        # rows cover the whole duration
    row_t = np.arange(n_rows) / record_hz
    sub = max(1, int(round(motion.control_hz / record_hz)))    # control ticks per recorded row
    dt = 1.0 / (record_hz * sub)
    frames, joints, grips = [], [], []
    t0 = sim.time_s
    for k in range(n_rows):
        frames.append(sim.render())
        joints.append(sim.joint_positions())
        grips.append(sim.gripper_closedness())
        if k == n_rows - 1:
            break
        for j in range(1, sub + 1):
            t = row_t[k] + j * dt
            result = kin.ik(path(t), q, "flange", max_iterations=30, position_tol_m=1e-5, rotation_tol_rad=1e-4)
            q = result.q
            sim.set_joint_target(q)
            sim.set_gripper(gripper0 if np.sum(toggles <= t) % 2 == 0 else 1.0 - gripper0)
            sim.advance(dt)
    joints_a = np.stack(joints)
    states = pose7_from_matrix(kin.fk_batch(joints_a, "flange"), np.asarray(grips)).numpy()
    stamps_s = np.round((start_s + row_t) * 1000.0) / 1000.0   # DROID stores milliseconds
    cam = sim.model.cam("exterior").id
    R_cv = sim.data.cam_xmat[cam].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])   # MuJoCo (-z view) -> OpenCV
    extrinsics = np.r_[sim.data.cam_xpos[cam], matrix_to_euler_xyz(R_cv).numpy()]
    return Episode(frames=np.stack(frames), states=states, joint_positions=joints_a, stamps_s=stamps_s,
                   source=source, meta={"camera_extrinsics": extrinsics.tolist(), "sim_time_s": sim.time_s - t0})


def _waypoint_path(home: np.ndarray, rng: np.random.Generator, duration_s: float, motion: MotionConfig):
    """t (s) -> flange target [4, 4]: minimum-jerk moves through random waypoints, starting at home."""
    lo, hi = np.asarray(motion.workspace_min_m), np.asarray(motion.workspace_max_m)
    knots_t, points, yaws = [0.0], [home[:3, 3].copy()], [0.0]
    while knots_t[-1] < duration_s:
        knots_t.append(knots_t[-1] + rng.uniform(*motion.segment_s))
        points.append(rng.uniform(lo, hi))
        yaws.append(rng.uniform(-motion.max_yaw_rad, motion.max_yaw_rad))
    knots = np.asarray(knots_t)

    def target(t: float) -> np.ndarray:
        i = int(np.clip(np.searchsorted(knots, t, side="right") - 1, 0, len(knots) - 2))
        s = np.clip((t - knots[i]) / (knots[i + 1] - knots[i]), 0.0, 1.0)
        blend = s**3 * (10 - 15 * s + 6 * s**2)                 # minimum jerk
        yaw = yaws[i] + blend * (yaws[i + 1] - yaws[i])
        c, s_ = math.cos(yaw), math.sin(yaw)
        T = home.copy()
        T[:3, :3] = np.array([[c, -s_, 0.0], [s_, c, 0.0], [0.0, 0.0, 1.0]]) @ home[:3, :3]
        T[:3, 3] = points[i] + blend * (points[i + 1] - points[i])
        return T

    return target


# -- `vjepa2-ros sim record` --------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder to write episode_NNN/ folders into")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--steps", type=int, default=16, help="model steps per episode")
    parser.add_argument("--step-s", type=float, default=DEFAULT_STEP_S, help="model step duration (s)")
    parser.add_argument("--record-hz", type=float, default=CONTENT_RATE_HZ, help="rows per second (DROID: 15)")
    parser.add_argument("--size", default="128x128", help="frame HEIGHTxWIDTH (even numbers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stereo", action="store_true", help="also write <serial>-stereo.mp4")


def main(args: argparse.Namespace) -> int:
    paths = generate_episodes(args.out, args.episodes, args.steps, args.seed, args.step_s, parse_size(args.size),
                              record_hz=args.record_hz, stereo=args.stereo, progress=True)
    for p in paths:
        print(p)
    return 0

