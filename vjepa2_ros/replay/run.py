"""`vjepa2-ros replay SOURCE`: what the planner would have done on a recording; nothing moves.

For each model step t of a bag or DROID episode (resampled every `step_s` seconds; the step
duration is a parameter because the released checkpoint's is uncertain, spec i), with the goal
= the frame `goal_offset` steps ahead (or one goal image):

1. latent prediction error at horizons 1..H of rollouts with the recorded actions (+ copy baseline);
2. the planner's action vs the recorded one (angle, cm, sign per axis);
3. energy of the recorded action sequence vs the planned one vs doing nothing;
4. time per planning step;
and energy landscapes at chosen steps. `compare_step_s` adds the 1-step prediction error at
other step durations: which time base does the model predict best?
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vjepa2_ros.data.bags import BagTopics, read_bag_episode
from vjepa2_ros.data.droid import read_droid_episode
from vjepa2_ros.data.episode import DEFAULT_STEP_S, Episode
from vjepa2_ros.data.video import parse_size
from vjepa2_ros.errors import ConfigError, DataError
from vjepa2_ros.planning.calibration import scan_yaw
from vjepa2_ros.planning.cem import CEMConfig, energy
from vjepa2_ros.planning.planner import Planner
from vjepa2_ros.planning.world_model import WorldModel
from vjepa2_ros.replay.metrics import action_agreement, prediction_errors, summarise


@dataclass(frozen=True)
class ReplayConfig:
    step_s: float = DEFAULT_STEP_S            # model step duration (s) the recording is resampled to
    goal_offset: int = 4                      # goal = the frame this many steps ahead (ignored with a goal image)
    horizon: int = 3                          # prediction-error horizons 1..horizon (model steps)
    stride: int = 1                           # plan every stride-th step
    max_steps: int | None = None              # stop after this many planning steps
    landscape_steps: tuple[int, ...] = (0,)   # steps (indices into the replayed steps) to sweep the energy at
    landscape_grid_m: tuple[float, ...] = tuple(np.linspace(-0.075, 0.075, 9).round(6).tolist())   # Δ per axis (m)
    landscape_axes: tuple[str, str] = ("x", "y")
    sign_deadband_m: float = 0.001            # |Δ| below this counts as no motion (sign 0, no angle)
    compare_step_s: tuple[float, ...] = ()    # extra step durations for the 1-step prediction comparison
    batch_encode: int = 16                    # frames per encoder call

    def __post_init__(self) -> None:
        if not self.step_s > 0:
            raise ConfigError(f"step_s must be > 0 seconds, got {self.step_s!r}")
        for name in ("goal_offset", "horizon", "stride", "batch_encode"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"ReplayConfig.{name} must be an int >= 1, got {getattr(self, name)!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be None or >= 1, got {self.max_steps!r}")
        if not self.sign_deadband_m >= 0:
            raise ConfigError(f"sign_deadband_m must be >= 0, got {self.sign_deadband_m!r}")
        if len(self.landscape_grid_m) < 2 or len(self.landscape_axes) != 2:
            raise ConfigError(f"the energy landscape needs >= 2 grid points and 2 axes, got "
                              f"{len(self.landscape_grid_m)} points, axes {self.landscape_axes}")
        if any(not s > 0 for s in self.compare_step_s):
            raise ConfigError(f"compare_step_s must all be > 0 seconds, got {self.compare_step_s!r}")


@dataclass
class ReplayResult:
    rows: list[dict[str, Any]]                    # one per planning step (metrics.csv)
    summary: dict[str, Any]                       # summary.json
    landscapes: dict[int, dict[str, Any]] = field(default_factory=dict)   # step -> Planner.energy_landscape + marks
    step_comparison: list[dict[str, Any]] = field(default_factory=list)   # per compared step duration


def load_source(source: str | Path, step_s: float | None, camera: str = "left", topics: BagTopics = BagTopics(),
                arm: str = "panda", size: tuple[int, int] | None = None) -> Episode:
    """A DROID episode folder (has trajectory.h5) or a rosbag2 bag, resampled to step_s (None: every row)."""
    path = Path(source)
    if (path / "trajectory.h5").is_file() or path.name == "trajectory.h5":
        return read_droid_episode(path, camera=camera, step_s=step_s, size=size)
    if (path / "metadata.yaml").is_file() or path.suffix in (".mcap", ".db3"):
        episode = read_bag_episode(path, camera_topic=topics.camera, joint_states_topic=topics.joint_states, arm=arm,
                                   gripper_topic=topics.gripper, flange_pose_topic=topics.flange_pose, step_s=step_s)
        return episode if size is None else _resize(episode, size)
    raise DataError(f"{path}: neither a DROID episode folder (trajectory.h5) nor a rosbag2 bag (metadata.yaml)")


def encode_all(world_model: WorldModel, frames: np.ndarray, batch: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> normalised latents [T, N, D]."""
    return torch.cat([world_model.encode(frames[i:i + batch]) for i in range(0, len(frames), batch)])


def replay_episode(episode: Episode, world_model: WorldModel, cem_cfg: CEMConfig, cfg: ReplayConfig = ReplayConfig(),
                   goal_image: np.ndarray | None = None, seed: int = 0, progress: bool = False,
                   all_rows: Episode | None = None, hold_rule: bool = False) -> ReplayResult:
    """Replay a resampled episode (one row per model step). all_rows: the same recording at full
    rate, needed only for `compare_step_s`; hold_rule: the Planner option of the same name."""
    T = len(episode)
    recorded_step = episode.meta.get("step_s")
    if recorded_step is not None and abs(recorded_step - cfg.step_s) > 1e-9:
        raise ConfigError(f"{episode.source} was resampled every {recorded_step} s but the replay is configured "
                          f"for step_s={cfg.step_s} s; resample with episode.resample({cfg.step_s})")
    actions = episode.actions()                                                          # T-1, 7
    lookahead = max(cfg.horizon, cem_cfg.horizon, 0 if goal_image is not None else cfg.goal_offset)
    steps = list(range(0, T - lookahead, cfg.stride))[: cfg.max_steps]
    if not steps:
        raise DataError(f"{episode.source}: {T} model steps of {cfg.step_s} s are too few to look "
                        f"{lookahead} steps ahead; record longer or lower goal_offset/horizon")
    latents = encode_all(world_model, episode.frames, cfg.batch_encode)                  # T, N, D
    planner = Planner(world_model, cem_cfg, seed=seed, hold_rule=hold_rule)
    dev = world_model.device
    goal = world_model.encode(goal_image)[0] if goal_image is not None else None          # N, D
    if goal is not None:
        planner.set_goal_latent(goal)
    landscape_at = {steps[i] for i in cfg.landscape_steps if 0 <= i < len(steps)}
    rows, landscapes = [], {}
    started = time.perf_counter()
    for i, t in enumerate(tqdm(steps, desc="replay", unit="step", disable=not progress)):
        if i == 1 and progress:
            _print_estimate(time.perf_counter() - started, len(steps), cem_cfg)
        goal_t = None if goal_image is not None else t + cfg.goal_offset
        if goal_t is not None:
            goal = latents[goal_t]
            planner.set_goal_latent(goal)
        state = episode.states[t]
        pred, copy = prediction_errors(world_model, latents, episode.states, actions, t, cfg.horizon)

        t0 = time.perf_counter()
        result = planner.plan(episode.frames[t], state)
        plan_time = time.perf_counter() - t0

        recorded = actions[t:t + cem_cfg.horizon]                                        # Hp, 7
        z_rec, _ = world_model.rollout(latents[t], torch.as_tensor(state, dtype=torch.float64, device=dev),
                                       torch.as_tensor(recorded, dtype=torch.float32, device=dev)[None])
        e_rec = float(energy(z_rec.float(), goal.float())[0])
        row = {"step": t, "row": int(episode.meta.get("rows", range(T))[t]), "stamp_s": float(episode.stamps_s[t]),
               "goal_step": -1 if goal_t is None else goal_t}
        row |= {f"pred_err_h{h + 1}": float(v) for h, v in enumerate(pred)}
        row |= {f"copy_err_h{h + 1}": float(v) for h, v in enumerate(copy)}
        for name, a in (("planned", result.action), ("recorded", actions[t])):
            row |= {f"{name}_d{k}": float(a[i]) for i, k in enumerate(("x", "y", "z", "roll", "pitch", "yaw", "grip"))}
        row |= action_agreement(result.action, actions[t], cfg.sign_deadband_m)
        row |= {"energy_planned": result.diagnostics["plan_energy"], "energy_recorded": e_rec,
                "energy_zero": result.diagnostics["zero_action_energy"],
                "energy_observation": result.diagnostics["observation_energy"], "plan_time_s": plan_time}
        rows.append(row)
        if t in landscape_at:
            land = planner.energy_landscape(episode.frames[t], state, cfg.landscape_grid_m, cfg.landscape_axes)
            axis = {"x": 0, "y": 1, "z": 2}
            land["recorded_m"] = [float(actions[t][axis[a]]) for a in cfg.landscape_axes]
            land["planned_m"] = [float(result.action[axis[a]]) for a in cfg.landscape_axes]
            landscapes[t] = land

    summary = summarise(rows, cfg.horizon)
    summary["camera_yaw"] = estimate_camera_yaw(world_model, latents, episode.states)
    summary |= {"source": episode.source, "episode_steps": T, "step_s": cfg.step_s,
                "goal": "image" if goal_image is not None else f"frame +{cfg.goal_offset} steps",
                "config": _jsonable(asdict(cfg)), "cem": _jsonable(asdict(cem_cfg)),
                "model": _jsonable(world_model.runtime.describe()),
                "episode_meta": {k: v for k, v in episode.meta.items() if k != "rows" and _is_plain(v)}}
    comparison = compare_step_durations(world_model, all_rows, cfg) if cfg.compare_step_s and all_rows else []
    summary["step_comparison"] = comparison
    return ReplayResult(rows, summary, landscapes, comparison)


def estimate_camera_yaw(world_model: WorldModel, latents: torch.Tensor, states: np.ndarray, min_move_m: float = 0.01,
                        max_moves: int = 24) -> dict[str, Any]:
    """The yaw between the recording's robot frame and the model's action frame, from the episode's
    own moves (planning.calibration.scan_yaw: no motion needed), so a camera placement can be
    checked from a bag before the arm moves. Near 0: the camera sits where the model expects."""
    states = np.asarray(states, dtype=np.float64)
    steps = np.linalg.norm(states[1:, :3] - states[:-1, :3], axis=1)
    moving = np.nonzero(steps >= min_move_m)[0]
    if len(moving) < 3:
        return {"yaw_deg": None, "moves": int(len(moving)),
                "reason": f"only {len(moving)} model steps move >= {100 * min_move_m:.0f} cm: too few to estimate"}
    pick = np.unique(moving[np.linspace(0, len(moving) - 1, min(max_moves, len(moving))).round().astype(int)])
    try:
        scan = scan_yaw(world_model, latents[pick], latents[pick + 1], states[pick],
                        states[pick + 1, :3] - states[pick, :3])
    except ConfigError as e:
        return {"yaw_deg": None, "moves": int(len(pick)), "reason": str(e)}
    return {"yaw_deg": scan.yaw_deg, "gain": scan.scale, "moves": int(len(pick))}


def _print_estimate(first_step_s: float, steps: int, cem_cfg: CEMConfig) -> None:
    """Before a long replay: the time it will take, from the first step, and how to make it shorter."""
    total_s = first_step_s * steps
    print(f"replay: the first step took {first_step_s:.1f} s: {steps} steps will take about "
          f"{total_s / 60:.1f} min (CEM {cem_cfg.samples} samples x {cem_cfg.iterations} iterations, horizon "
          f"{cem_cfg.horizon}); shorter: --max-steps, --stride, --samples, --iterations", file=sys.stderr, flush=True)


def compare_step_durations(world_model: WorldModel, all_rows: Episode, cfg: ReplayConfig) -> list[dict[str, Any]]:
    """1-step prediction error (and copy baseline) for each step duration in cfg.compare_step_s (+ step_s)."""
    out = []
    for step_s in sorted({cfg.step_s, *cfg.compare_step_s}):
        ep = all_rows.resample(step_s)
        if len(ep) < 2:
            out.append({"step_s": step_s, "steps": len(ep), "pred_err_h1": float("nan"), "copy_err_h1": float("nan")})
            continue
        latents = encode_all(world_model, ep.frames, cfg.batch_encode)
        actions = ep.actions()
        errs = np.array([prediction_errors(world_model, latents, ep.states, actions, t, 1) for t in range(len(ep) - 1)])
        out.append({"step_s": step_s, "steps": len(ep) - 1, "pred_err_h1": float(errs[:, 0, 0].mean()),
                    "copy_err_h1": float(errs[:, 1, 0].mean()),
                    "ratio_to_copy": float(errs[:, 0, 0].mean() / errs[:, 1, 0].mean())})
    return out


def _resize(episode: Episode, size: tuple[int, int]) -> Episode:
    import cv2
    h, w = size
    frames = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in episode.frames])
    return replace(episode, frames=frames)


def _is_plain(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None))) or (isinstance(v, list) and all(_is_plain(x) for x in v))


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v if _is_plain(v) else str(v)


# -- CLI ------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="a rosbag2 bag folder or a DROID episode folder")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: runs/replay-<source name>)")
    parser.add_argument("--step-s", type=float, default=DEFAULT_STEP_S, help="model step duration (s)")
    parser.add_argument("--compare-step-s", type=float, nargs="*", default=[],
                        help="also measure 1-step prediction error at these step durations (e.g. 0.25 0.5 1.0)")
    parser.add_argument("--goal-offset", type=int, default=4, help="goal = the frame this many steps ahead")
    parser.add_argument("--goal-image", type=Path, default=None, help="a fixed goal image instead (PNG/JPEG)")
    parser.add_argument("--horizon", type=int, default=3, help="prediction-error horizons 1..N")
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--landscape-steps", type=int, nargs="*", default=[0],
                        help="replayed-step indices to plot the energy landscape at")
    parser.add_argument("--landscape-axes", nargs=2, default=["x", "y"], choices=("x", "y", "z"))
    parser.add_argument("--landscape-extent-m", type=float, default=0.075, help="grid from -extent to +extent (m)")
    parser.add_argument("--landscape-points", type=int, default=9, help="grid points per axis")
    parser.add_argument("--size", default=None, help="resize frames to HEIGHTxWIDTH before encoding")
    parser.add_argument("--roi", type=int, nargs=4, default=None, metavar=("X", "Y", "W", "H"),
                        help="camera crop applied before the model's centre crop (as the station's model.roi)")
    g = parser.add_argument_group("recording")
    g.add_argument("--camera", default="left", help="DROID camera: left, right, wrist, ext1, ext2 or a serial")
    defaults = BagTopics()
    g.add_argument("--camera-topic", default=defaults.camera)
    g.add_argument("--joint-states-topic", default=defaults.joint_states)
    g.add_argument("--gripper-topic", default=defaults.gripper)
    g.add_argument("--flange-pose-topic", default=defaults.flange_pose)
    g.add_argument("--arm", choices=("panda", "fr3"), default="panda")
    g = parser.add_argument_group("model")
    g.add_argument("--tiny", action="store_true", help="a random tiny model (smoke test; no weights needed)")
    g.add_argument("--runtime", choices=("torch", "onnxruntime", "tensorrt"), default="torch")
    g.add_argument("--checkpoint", default=None, help="AC checkpoint (.pt or safetensors)")
    g.add_argument("--model-card", type=Path, default=None,
                   help="model.json of a model `vjepa2-ros pipeline` shipped (e.g. models/sim_reach/model.json): "
                        "its networks and the weights beside it")
    g.add_argument("--engine-dir", default=None, help="engines from `vjepa2-ros export` / `build-engines`")
    g.add_argument("--device", default="cpu")
    g.add_argument("--precision", default="float32", choices=("float32", "float16", "bfloat16"))
    g.add_argument("--seed", type=int, default=0)
    g = parser.add_argument_group("planner (CEM)")
    d = CEMConfig()
    g.add_argument("--plan-horizon", type=int, default=d.horizon)
    g.add_argument("--samples", type=int, default=d.samples)
    g.add_argument("--topk", type=int, default=d.topk)
    g.add_argument("--iterations", type=int, default=d.iterations)
    g.add_argument("--maxnorm", type=float, default=d.maxnorm, help="m per step")
    g.add_argument("--bound", choices=("l1", "box"), default=d.bound)
    g.add_argument("--hold-rule", action="store_true", help="keep still unless the plan beats the zero action")


def main(args: argparse.Namespace) -> int:
    from vjepa2_ros.replay.report import write_report
    _require_model(args)
    cfg = ReplayConfig(step_s=args.step_s, goal_offset=args.goal_offset, horizon=args.horizon, stride=args.stride,
                       max_steps=args.max_steps, landscape_steps=tuple(args.landscape_steps),
                       landscape_grid_m=tuple(np.linspace(-args.landscape_extent_m, args.landscape_extent_m,
                                                          args.landscape_points).round(6).tolist()),
                       landscape_axes=tuple(args.landscape_axes), compare_step_s=tuple(args.compare_step_s))
    cem_cfg = CEMConfig(horizon=args.plan_horizon, samples=args.samples, topk=args.topk, iterations=args.iterations,
                        maxnorm=args.maxnorm, bound=args.bound)
    topics = BagTopics(args.camera_topic, args.joint_states_topic, args.gripper_topic, args.flange_pose_topic)
    size = parse_size(args.size) if args.size else None
    if cfg.compare_step_s:
        all_rows = load_source(args.source, None, args.camera, topics, args.arm, size)
        episode = all_rows.resample(cfg.step_s)
    else:
        all_rows, episode = None, load_source(args.source, cfg.step_s, args.camera, topics, args.arm, size)
    goal = None
    if args.goal_image is not None:
        import cv2
        bgr = cv2.imread(str(args.goal_image), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"{args.goal_image}: not a readable image")
        goal = np.ascontiguousarray(bgr[..., ::-1])
    world_model = _world_model(args)
    result = replay_episode(episode, world_model, cem_cfg, cfg, goal_image=goal, seed=args.seed, progress=True,
                            all_rows=all_rows, hold_rule=args.hold_rule)
    out = args.out or Path("runs") / f"replay-{Path(args.source).name}"
    page = write_report(out, result)
    print(f"report: {page}")
    return 0


def _require_model(args: argparse.Namespace) -> None:
    """Refuse before any work when no model is given: never replay with random networks by default."""
    if not (args.tiny or args.model_card or args.checkpoint or args.engine_dir):
        raise ConfigError("replay needs a model, and none was given (it would plan with randomly initialised "
                          "networks): pass --checkpoint FILE (the official AC checkpoint, .pt or .safetensors), "
                          "--model-card FILE (a shipped model, e.g. models/sim_reach/model.json), or --engine-dir "
                          "DIR with --runtime onnxruntime|tensorrt; --tiny runs a random tiny model as a smoke test")


def _world_model(args: argparse.Namespace) -> WorldModel:
    if args.tiny:
        wm = WorldModel.tiny(seed=args.seed)
    elif args.model_card is not None:
        from vjepa2_ros.engines.factory import open_runtime, runtime_config_from_card
        if args.checkpoint is not None or args.runtime != "torch":
            raise ConfigError("--model-card names the weights and runs them with torch; drop --checkpoint / --runtime")
        wm = WorldModel(open_runtime(runtime_config_from_card(args.model_card, device=args.device,
                                                              precision=args.precision)))
    else:
        from vjepa2_ros.engines.factory import RuntimeConfig, open_runtime
        wm = WorldModel(open_runtime(RuntimeConfig(kind=args.runtime, device=args.device, precision=args.precision,
                                                   checkpoint=args.checkpoint, engine_dir=args.engine_dir,
                                                   seed=args.seed)))
    if args.roi is not None:
        wm = WorldModel(wm.runtime, preprocess=replace(wm.preprocess, roi=tuple(args.roi)))
    return wm
