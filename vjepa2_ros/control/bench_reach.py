"""`vjepa2-ros bench sim-reach`: closed-loop reach success on the simulated arm.

Held-out random reach tasks: a goal end-effector position drawn in a workspace box (pointing down
as at home, solved to joints by IK from the home posture), and a start posture drawn the same
way at least `MIN_SEPARATION_M` away. The goal image is the camera's view at the goal posture;
then the arm is reset to the start and the real control loop (planner, IK, safety envelope,
interpolator, sim backend) runs until `max_plans` planning steps (then until the last move is
done and the arm is at rest) or a fault. Task seeds are `[REACH_SEED_OFFSET + seed, i]`;
`vjepa2-ros sim record` draws its training episodes from `[seed, i]`, so the tasks are held out
for any recording seed below REACH_SEED_OFFSET.

Per task: the end-effector distance to the goal position at every planning step's observation
and at the end, "reached" (within success_m at some planning step) and "final" (within
success_m at the end; spec/SIM_WORLD_MODEL_NOTES.md asks for both), and the planner's time per
step (its diagnostics' `timings.total_s`). Per mode (async: plan while moving; blocking: stop,
plan, move, the paper's) a table and a summary line. By default the sim is stepped and planning
takes no simulated time, so the two modes differ only in where each plan's observation is taken
(moving vs at rest) and in the simulated time a reach needs; `--real-time` runs the sim and the
loop's command and planner threads in real time, so a slow planner also costs motion time.

`--oracle` swaps the learned model for `OracleWorldModel`, whose latent is the true end-effector
position: a sanity check of goal sampling, CEM, IK, safety and control, not of any model; it
should reach ~100%. Without it the config's model runs (default: config/sim_demo.yaml, the
shipped sim world model in models/sim_reach/). The sim camera renders at the model's input size
(`--camera-px` overrides), as `sim record` rendered the training episodes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from vjepa2_ros.control.calibrate import camera_yaw_overrides
from vjepa2_ros.control.config import MODES, StackConfig, load_config
from vjepa2_ros.control.goal_view import goal_view
from vjepa2_ros.control.stack import build_backend, build_loop, build_planner, sim_camera_px
from vjepa2_ros.control.state import LoopState
from vjepa2_ros.errors import ConfigError, PlanningError, SafetyError
from vjepa2_ros.planning.pose import integrate_actions
from vjepa2_ros.planning.timing import StageTimer
from vjepa2_ros.robot.safety import SafetyEnvelope
from vjepa2_ros.robot.sim import Q_RESET

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "sim_demo.yaml"
REACH_SEED_OFFSET = 10_000                 # task seeds [REACH_SEED_OFFSET + seed, i]; sim record uses [seed, i]
WORKSPACE_MIN_M = (0.30, -0.25, 0.15)      # goal / start box of the end-effector frame, base frame x, y, z
WORKSPACE_MAX_M = (0.65, 0.25, 0.45)
MIN_SEPARATION_M = 0.10                    # start at least this far from the goal
MAX_DRAWS = 1000                           # rejection-sampling attempts per position
TARGET_SUCCESS = 0.8                       # issue 9: >= 80% success ...
TARGET_PLAN_S = 2.0                        # ... at <= 2 s per planning step on the 2-core CPU


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG,
                        help="stack YAML whose model, planning and control settings to use (default: "
                             "config/sim_demo.yaml, the shipped sim model); the bench always runs the sim")
    parser.add_argument("--goals", type=int, default=20, help="reach tasks per mode (default 20)")
    parser.add_argument("--seed", type=int, default=0,
                        help=f"task seed (tasks use [{REACH_SEED_OFFSET} + seed, i]); also the planner's seed")
    parser.add_argument("--max-plans", type=int, default=30, help="planning steps per task (default 30)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="control modes to run")
    parser.add_argument("--success-m", type=float, default=0.05, help="success radius around the goal, m (0.05)")
    parser.add_argument("--oracle", action="store_true",
                        help="sanity check: energy from the true end-effector position, no learned model")
    parser.add_argument("--hold-rule", action="store_true",
                        help="force the planner's hold rule on (default: the config's control.hold_rule)")
    parser.add_argument("--stop-below", type=float, default=None, metavar="ENERGY",
                        help="override control.goal_stop_below_energy, the planner's stop rule at the goal "
                             "(0: off)")
    parser.add_argument("--samples", type=int, default=None, help="override planning.samples")
    parser.add_argument("--iterations", type=int, default=None, help="override planning.iterations")
    parser.add_argument("--real-time", action="store_true",
                        help="run the sim and the loop's threads in real time, so planning takes time while the "
                             "arm moves (default: stepped simulated time, planning takes none)")
    parser.add_argument("--camera-px", type=int, default=None,
                        help="sim camera size (default: the model's input size, as `sim record` renders)")
    parser.add_argument("--camera-yaw-deg", type=float, default=None,
                        help="turn the sim camera by this angle about the vertical axis through its target (to test "
                             "a moved camera, with or without a `vjepa2-ros calibrate` action frame in --config)")
    parser.add_argument("--json", type=Path, default=None, help="also write every task's numbers here")


# --- tasks ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReachTask:
    """One held-out reach: start and goal postures and their end-effector positions."""

    index: int
    q_start: np.ndarray                    # [7] rad
    q_goal: np.ndarray                     # [7] rad
    p_start_m: np.ndarray                  # [3] end-effector frame position, base frame
    p_goal_m: np.ndarray                   # [3]


def _reachable(envelope: SafetyEnvelope, frame: str, rng: np.random.Generator, q_home: np.ndarray,
               rotation: np.ndarray, avoid_m: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(q [7], p [3]): a position in the box, pointing as at home, with an IK solution from q_home
    inside the envelope (joint limits less margin, workspace box), >= MIN_SEPARATION_M from avoid_m."""
    kin = envelope.kinematics
    for _ in range(MAX_DRAWS):
        p = rng.uniform(WORKSPACE_MIN_M, WORKSPACE_MAX_M)
        if avoid_m is not None and np.linalg.norm(p - avoid_m) < MIN_SEPARATION_M:
            continue
        ik = kin.ik_position(p, q_home, frame, rotation=rotation, position_tol_m=1e-4, rotation_tol_rad=1e-3)
        if not ik.success:
            continue
        try:
            envelope.check_joint_position(ik.q, "reach posture")
            envelope.check_workspace(kin.fk(ik.q, envelope.cfg.workspace_frame), "reach posture")
        except SafetyError:
            continue
        return ik.q, kin.fk(ik.q, frame)[:3, 3]
    raise ConfigError(f"no reachable {frame} position found in the box {WORKSPACE_MIN_M}..{WORKSPACE_MAX_M} m "
                      f"after {MAX_DRAWS} draws; check the arm's limits and the safety workspace box")


def sample_reach_tasks(envelope: SafetyEnvelope, frame: str, count: int, seed: int = 0,
                       q_home: np.ndarray | tuple[float, ...] = Q_RESET) -> list[ReachTask]:
    """`count` reach tasks, task i drawn from np.random.default_rng([REACH_SEED_OFFSET + seed, i]),
    so the first tasks do not depend on `count`."""
    if count < 1:
        raise ConfigError(f"goals must be >= 1, got {count}")
    q_home = np.asarray(q_home, dtype=np.float64)
    rotation = envelope.kinematics.fk(q_home, frame)[:3, :3]
    tasks = []
    for i in range(count):
        rng = np.random.default_rng([REACH_SEED_OFFSET + seed, i])
        q_goal, p_goal = _reachable(envelope, frame, rng, q_home, rotation, None)
        q_start, p_start = _reachable(envelope, frame, rng, q_home, rotation, p_goal)
        tasks.append(ReachTask(i, q_start, q_goal, p_start, p_goal))
    return tasks


# --- the oracle ----------------------------------------------------------------------------------
class OracleWorldModel:
    """SANITY CHECK ONLY, not a learned model: a world model whose latent is the true end-effector
    position [1, 3] (m). `encode` ignores the image and reads the arm's position now (the bench
    encodes the goal image with the arm at the goal posture); `rollout` adds the actions' Δxyz
    (exact, as the pose integration is). The planner's L1 energy is then the mean absolute
    position error: reaching with it tests goal sampling, CEM, IK, safety and control.

    Args:
        position_m: returns the end-effector position [3] (m) of the arm now.
    """

    latent_shape = (1, 3)                   # (N, D)
    device = torch.device("cpu")

    def __init__(self, position_m: Callable[[], np.ndarray]) -> None:
        self.position_m = position_m

    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 [H, W, 3] or [B, H, W, 3] -> [B, 1, 3], the position now (per frame)."""
        batch = 1 if frames.ndim == 3 else frames.shape[0]
        p = torch.as_tensor(np.asarray(self.position_m(), dtype=np.float32))
        return p.reshape(1, 1, 3).expand(batch, 1, 3).clone()

    def rollout(self, z_context: torch.Tensor, s_context: torch.Tensor, actions: torch.Tensor,
                timer: StageTimer | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z_context [1, 3], s_context [7], actions [S, H, 7] -> (positions [S, 1, 3], poses [S, H+1, 7])."""
        if tuple(z_context.shape) != self.latent_shape or actions.dim() != 3 or actions.shape[-1] != 7:
            raise PlanningError(f"oracle rollout needs z [1, 3] and actions [S, H, 7], got "
                                f"{tuple(z_context.shape)} and {tuple(actions.shape)}")
        timer = timer or StageTimer(self.device)
        with timer.stage("predict"):
            z = z_context.double() + actions[..., :3].double().sum(dim=1, keepdim=True)   # S, 1, 3
            poses = integrate_actions(s_context.double(), actions.double())
        return z.to(actions.dtype), poses.to(actions.dtype)


# --- one episode ---------------------------------------------------------------------------------
class PlanBudget:
    """The planner, allowed `max_plans` plans: after them `has_goal` is False, so the control loop
    plans no more while the last move runs to its end. Records what each plan saw (the
    end-effector pose [7]) and how long it took (diagnostics `timings.total_s`). Everything else
    is the wrapped planner's."""

    def __init__(self, planner: Any, max_plans: int) -> None:
        self.planner, self.max_plans = planner, int(max_plans)
        self.poses: list[np.ndarray] = []          # [7] per plan
        self.seconds: list[float] = []             # planner wall time per plan that searched
        self.stops = 0                             # plans answered by the stop rule (no search)

    @property
    def spent(self) -> bool:
        return len(self.poses) >= self.max_plans

    @property
    def has_goal(self) -> bool:
        return self.planner.has_goal and not self.spent

    def plan(self, frame: np.ndarray, state: np.ndarray) -> Any:
        self.poses.append(np.array(state, dtype=np.float64))
        result = self.planner.plan(frame, state)
        if result.diagnostics.get("at_goal"):
            self.stops += 1
        else:
            self.seconds.append(float(result.diagnostics["timings"]["total_s"]))
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.planner, name)


@dataclass
class EpisodeResult:
    index: int
    start_distance_m: float
    min_distance_m: float                   # over the planning steps' observations and the end
    final_distance_m: float                 # at rest after the last plan's move (or at a fault / the cap)
    reached: bool                           # within success_m at some planning step or at the end
    success: bool                           # within success_m at the end
    plans: int
    plans_to_reach: int | None              # first planning step (1-based) that saw the arm within success_m
    stops: int                              # plans the stop rule answered at the goal (no search)
    planner_s_mean: float                   # planner.plan wall time of the plans that searched (timings total_s)
    planner_s_max: float
    sim_s: float                            # simulated time of the episode
    wall_s: float
    state: str
    reason: str


def run_episode(cfg: StackConfig, planner: Any, backend: Any, task: ReachTask, max_plans: int,
                success_m: float) -> EpisodeResult:
    """Goal image at task.q_goal, reset to task.q_start, closed loop until max_plans plans, then
    until the last move is done and the arm is at rest; or until a fault or a time cap.

    A fast-mode sim is stepped here (planning takes no simulated time); a real-time sim runs the
    loop's command and planner threads while this thread watches."""
    t_wall = time.monotonic()
    frame, ctl = cfg.control.ee_frame, cfg.control
    real_time = backend.cfg.real_time

    def distance() -> float:
        return float(np.linalg.norm(backend.kinematics.fk(backend.read_state().q, frame)[:3, 3] - task.p_goal_m))

    planner.set_goal_image(goal_view(backend, task.q_goal))   # the oracle reads the arm here, at the goal
    backend.reset(task.q_start)
    budget = PlanBudget(planner, max_plans)
    loop = build_loop(cfg, budget, backend, backend.camera())   # a fresh camera: nothing cached from the goal
    loop.activate()
    t0 = backend.now_s()
    cap_s = max_plans * max(4 * ctl.model_step_s, 1.0) + 2.0
    start = distance()
    reason = ""
    if real_time:
        loop.start()
    try:
        while loop.state is not LoopState.FAULT:
            now = backend.now_s()
            if now - t0 > cap_s:
                reason = f"time cap {cap_s:.1f} s"
                break
            last = loop.last_plan
            if budget.spent and last is not None:      # the last move runs to its end, then the arm settles
                moved_from = last["stamp_s"] + (last["plan_ms"] / 1e3 if real_time else 0.0)
                if now - moved_from >= ctl.model_step_s and \
                        np.all(np.abs(backend.read_state().dq) < ctl.settle_velocity_rad_s):
                    break
            if real_time:
                time.sleep(ctl.period_s)
            else:
                loop.step()
        final = distance()                             # before stop(), which brakes and holds
        state, state_reason = loop.state.value, loop.reason
    finally:
        loop.close()
    dists = [float(np.linalg.norm(p[:3] - task.p_goal_m)) for p in budget.poses] + [final]
    within = [i for i, d in enumerate(dists) if d <= success_m]
    nan = float("nan")
    return EpisodeResult(
        index=task.index, start_distance_m=start, min_distance_m=min(dists), final_distance_m=final,
        reached=bool(within), success=final <= success_m, plans=len(budget.poses),
        plans_to_reach=min(within[0] + 1, len(budget.poses)) if within else None, stops=budget.stops,
        planner_s_mean=float(np.mean(budget.seconds)) if budget.seconds else nan,
        planner_s_max=float(np.max(budget.seconds)) if budget.seconds else nan,
        sim_s=backend.now_s() - t0, wall_s=time.monotonic() - t_wall, state=state, reason=reason or state_reason)


def _mean(values: list[float | None]) -> float:
    """Mean of the finite values, NaN when there are none."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def summarize(episodes: list[EpisodeResult]) -> dict[str, float]:
    """Rates and means over a mode's episodes."""
    planner_max = [e.planner_s_max for e in episodes if np.isfinite(e.planner_s_max)]
    return {"goals": len(episodes),
            "reached_rate": float(np.mean([e.reached for e in episodes])),
            "success_rate": float(np.mean([e.success for e in episodes])),
            "final_distance_m_mean": _mean([e.final_distance_m for e in episodes]),
            "min_distance_m_mean": _mean([e.min_distance_m for e in episodes]),
            "plans_to_reach_mean": _mean([e.plans_to_reach for e in episodes]),     # over the reached ones
            "planner_s_mean": _mean([e.planner_s_mean for e in episodes]),
            "planner_s_max": float(max(planner_max)) if planner_max else float("nan"),
            "faults": int(sum(e.state == LoopState.FAULT.value for e in episodes)),
            "sim_s_mean": _mean([e.sim_s for e in episodes])}


def format_table(mode: str, episodes: list[EpisodeResult]) -> str:
    head = (f"{'goal':>4} {'start cm':>8} {'min cm':>7} {'final cm':>8} {'reached':>7} {'final':>5} {'plans':>5} "
            f"{'to reach':>8} {'stops':>5} {'s/plan':>7} {'sim s':>6}  state")
    lines = [f"mode {mode}", head]
    for e in episodes:
        to_reach = "-" if e.plans_to_reach is None else e.plans_to_reach
        lines.append(f"{e.index:>4} {100 * e.start_distance_m:8.1f} {100 * e.min_distance_m:7.1f} "
                     f"{100 * e.final_distance_m:8.1f} {'yes' if e.reached else 'no':>7} "
                     f"{'yes' if e.success else 'no':>5} {e.plans:>5} {to_reach:>8} {e.stops:>5} "
                     f"{e.planner_s_mean:7.3f} {e.sim_s:6.1f}  "
                     f"{e.state}{'' if e.state != 'fault' else ': ' + e.reason[:70]}")
    return "\n".join(lines)


def summary_line(mode: str, s: dict[str, float], success_m: float, max_plans: int, oracle: bool = False) -> str:
    ok = s["success_rate"] >= TARGET_SUCCESS and s["planner_s_mean"] <= TARGET_PLAN_S
    after = f", after {s['plans_to_reach_mean']:.1f} plans on average" if s["reached_rate"] > 0 else ""
    return (f"{mode:>8}{' (ORACLE)' if oracle else ''}: final success {100 * s['success_rate']:.0f}% (reached at "
            f"some step {100 * s['reached_rate']:.0f}%{after}) "
            f"within {100 * success_m:.0f} cm in {max_plans} plans, mean final distance "
            f"{100 * s['final_distance_m_mean']:.1f} cm, {s['planner_s_mean']:.3f} s per plan "
            f"(max {s['planner_s_max']:.3f}), {s['faults']} faults over {s['goals']} goals; target >= "
            f"{100 * TARGET_SUCCESS:.0f}% at <= {TARGET_PLAN_S:.0f} s/plan: {'met' if ok else 'not met'}")


def bench_config(path: Path, hold_rule: bool = False, samples: int | None = None,
                 iterations: int | None = None, stop_below: float | None = None) -> StackConfig:
    """The config's model and planning on the sim backend, without recording; CLI overrides applied
    (stop_below 0 turns the stop rule off)."""
    cfg = load_config(path)
    stop = cfg.control.goal_stop_below_energy if stop_below is None else (stop_below or None)
    control = dataclasses.replace(cfg.control, backend="sim", record_dir=None,
                                  hold_rule=cfg.control.hold_rule or hold_rule, goal_stop_below_energy=stop)
    planning = cfg.planning
    overrides = {k: v for k, v in (("samples", samples), ("iterations", iterations)) if v is not None}
    if samples is not None:
        overrides["topk"] = min(planning.topk, samples)
    if overrides:
        planning = dataclasses.replace(planning, **overrides)
    return dataclasses.replace(cfg, control=control, planning=planning)


def run_bench(cfg: StackConfig, goals: int = 20, seed: int = 0, max_plans: int = 30,
              modes: tuple[str, ...] = MODES, success_m: float = 0.05, oracle: bool = False,
              camera_px: int | None = None, real_time: bool = False, progress: bool = True,
              camera_yaw_deg: float | None = None) -> dict[str, Any]:
    """The same held-out tasks in each mode -> {"tasks", "modes": {mode: {"episodes", "summary"}}}."""
    if max_plans < 1:
        raise ConfigError(f"max_plans must be >= 1, got {max_plans}")
    if not success_m > 0:
        raise ConfigError(f"success_m must be > 0 m, got {success_m}")
    for mode in modes:
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    camera_px = camera_px or sim_camera_px(cfg.model)
    turned = {} if camera_yaw_deg is None else camera_yaw_overrides(camera_yaw_deg)
    backend = build_backend(cfg, camera_width=camera_px, camera_height=camera_px, real_time=real_time, **turned)
    backend.connect()
    planner = None
    try:
        frame = cfg.control.ee_frame
        tasks = sample_reach_tasks(backend.envelope, frame, goals, seed)
        if oracle:                                     # reads the sim: planned in this process
            world_model = OracleWorldModel(lambda: backend.kinematics.fk(backend.read_state().q, frame)[:3, 3])
            planner = build_planner(cfg, world_model, seed=seed)
        else:                                          # in its own process (control.planner_process)
            planner = build_planner(cfg, seed=seed)
        out: dict[str, Any] = {"tasks": [{"index": t.index, "p_start_m": t.p_start_m.tolist(),
                                          "p_goal_m": t.p_goal_m.tolist(), "q_start": t.q_start.tolist(),
                                          "q_goal": t.q_goal.tolist()} for t in tasks], "modes": {}}
        for mode in modes:
            cfg_mode = dataclasses.replace(cfg, control=dataclasses.replace(cfg.control, mode=mode))
            episodes = []
            bar = tqdm(tasks, desc=f"sim-reach {mode}", unit="goal", disable=not progress)
            for task in bar:
                episodes.append(run_episode(cfg_mode, planner, backend, task, max_plans, success_m))
                bar.set_postfix(success=f"{sum(e.success for e in episodes)}/{len(episodes)}",
                                final_cm=f"{100 * episodes[-1].final_distance_m:.1f}")
            out["modes"][mode] = {"episodes": [dataclasses.asdict(e) for e in episodes],
                                  "summary": summarize(episodes)}
        return out
    finally:
        backend.disconnect()
        if planner is not None and not oracle:      # the oracle's planner holds no model
            planner.close()


def main(args: argparse.Namespace) -> int:
    cfg = bench_config(args.config, args.hold_rule, args.samples, args.iterations, args.stop_below)
    model = "ORACLE (true end-effector position; a sanity check of IK, safety and control, not a learned model)" \
        if args.oracle else f"{cfg.model.encoder} + {cfg.model.predictor}, checkpoint {cfg.model.checkpoint}"
    p = cfg.planning
    if not args.oracle and cfg.model.checkpoint is None:               # the first line says so
        print("sim-reach: the model has no checkpoint (random weights): expect ~0% success")
    print(f"sim-reach: {args.goals} held-out goals (seeds [{REACH_SEED_OFFSET + args.seed}, i]), model {model}; "
          f"CEM {p.samples} samples x {p.iterations} iterations, horizon {p.horizon}; hold rule "
          f"{'on' if cfg.control.hold_rule else 'off'}; stop rule "
          f"{'off' if cfg.control.goal_stop_below_energy is None else f'below {cfg.control.goal_stop_below_energy:g}'}; "
          f"{torch.get_num_threads()} torch threads; "
          f"{'real time' if args.real_time else 'stepped simulated time (planning takes none)'}"
          f"{'' if args.camera_yaw_deg is None else f'; camera turned {args.camera_yaw_deg:+.0f} deg'}"
          f"{'; planning in a calibrated action frame' if p.action_frame is not None else ''}")
    result = run_bench(cfg, args.goals, args.seed, args.max_plans, tuple(args.modes), args.success_m, args.oracle,
                       args.camera_px, args.real_time, camera_yaw_deg=args.camera_yaw_deg)
    for mode, r in result["modes"].items():
        print(format_table(mode, [EpisodeResult(**e) for e in r["episodes"]]))
    for mode, r in result["modes"].items():
        print(summary_line(mode, r["summary"], args.success_m, args.max_plans, args.oracle))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"config": str(args.config), "oracle": args.oracle, "goals": args.goals, "seed": args.seed,
                "seed_offset": REACH_SEED_OFFSET, "max_plans": args.max_plans, "success_m": args.success_m,
                "hold_rule": cfg.control.hold_rule, "stop_below_energy": cfg.control.goal_stop_below_energy,
                "real_time": args.real_time, "planning": dataclasses.asdict(cfg.planning),
                "torch_threads": torch.get_num_threads()}
        args.json.write_text(json.dumps({**meta, **result}, indent=1))
        print(f"sim-reach: wrote {args.json}")
    return 0
