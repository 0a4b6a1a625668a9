"""`vjepa2-ros calibrate`: find the rotation between the robot's frame and the world model's.

With the arm at rest at its start pose: N small random end-effector moves, each through the
control loop (IK, safety envelope, interpolator; blocking mode: stop, move, settle), with the
camera frame and end-effector state recorded before and after each. Then, per move, the
displacement the world model infers from the two frames (`planning.calibration.
infer_displacement`), and the rotation that best maps the measured displacements onto the
inferred ones (`fit_rotation`: yaw-only and full 3-D, residual, per-move table).

Writes to --out: `action_frame.yaml` (the planning keys to merge into a stack YAML),
`stack.yaml` (the input config with them applied), `calibration.json` (fit, moves) and
`calibration.png` (measured vs inferred displacement, before and after the fit). Dry run is
refused: calibration needs motion. The simulator's camera can be turned about the vertical
axis through its target (--camera-yaw-deg), to test the calibration against a known rotation.

The same parts serve the planner node's `~/calibrate`: `make_moves` runs the moves in simulated
time (the CLI), `LiveCalibration` in real time on a running ControlLoop (the node's arm and
camera), and `infer_calibration` infers and fits from the recorded frames and poses on a world
model, in the planner process when there is one (`infer_on_planner`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from vjepa2_ros.control.config import StackConfig, load_config
from vjepa2_ros.control.loop import ControlLoop
from vjepa2_ros.control.state import LoopState
from vjepa2_ros.control.stack import build_backend, build_loop, build_world_model, sim_camera_px
from vjepa2_ros.errors import ConfigError, PlanningError, SafetyError
from vjepa2_ros.planning.calibration import (MIN_MOVES, ActionFrame, RotationFit, YawScan, fit_rotation,
                                             infer_displacement, move_table, scan_yaw, yaw_matrix)
from vjepa2_ros.planning.planner import PlanResult

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "sim_demo.yaml"
FITS = ("scan", "yaw", "full")
POLL_S = 0.02                      # LiveCalibration: how often the waiting thread looks at the moves
ARRIVE_TOL_M = 0.005               # LiveCalibration: a move is done once the measured position is this close
Progress = Callable[[str], None]   # one line of progress ("move 2/12", "inference: move 1/12: ...")


@dataclass(frozen=True)
class CalibrationConfig:
    moves: int = 12                    # random moves (>= 3; 10-20 is plenty)
    step_m: float = 0.04               # length of each move's Δxyz (m)
    box_m: float = 0.06                # moves stay within ±box_m of the start position, per axis
    fit: str = "scan"                  # which estimate becomes the action frame: "scan" (pooled yaw scan),
                                       # "yaw" or "full" (Kabsch on the per-move inferences)
    samples: int = 128                 # CEM per inferred move
    iterations: int = 6
    extent_m: float = 0.1              # the inference's search box, ±m per axis
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.moves, int) or self.moves < 3:
            raise ConfigError(f"calibration needs at least 3 moves, got {self.moves!r}")
        if not 0.005 <= self.step_m <= 0.075:
            raise ConfigError(f"step_m must be in [0.005, 0.075] m (one model step), got {self.step_m!r}")
        if not self.box_m >= self.step_m:
            raise ConfigError(f"box_m ({self.box_m}) must be at least step_m ({self.step_m})")
        if self.fit not in FITS:
            raise ConfigError(f"fit must be one of {FITS}, got {self.fit!r}")
        for name, low in (("samples", 2), ("iterations", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"calibration {name} must be an int >= {low}, got {v!r}")


def camera_yaw_overrides(yaw_deg: float, pos_m: tuple[float, float, float] = (1.15, 0.6, 0.7),
                         target_m: tuple[float, float, float] = (0.4, 0.0, 0.15)) -> dict[str, Any]:
    """SimConfig overrides that turn the sim camera by yaw_deg about the vertical axis through its
    target (defaults: SimConfig's camera), still looking at the target."""
    p, c = np.asarray(pos_m, float), np.asarray(target_m, float)
    q = c + yaw_matrix(yaw_deg) @ (p - c)
    return {"camera_pos_m": tuple(float(v) for v in q), "camera_target_m": tuple(float(v) for v in c)}


class ScriptedMoves:
    """Planner stand-in for the control loop: records what each planning step saw (frame, pose)
    and returns the next scripted move; after the last move one more observation, then no goal.

    arrive_tol_m (real time): an observation is recorded only once the measured position is within
    this of the last move's target on `settle` planning steps in a row (a lagging controller or a
    delayed joint state would otherwise be measured before the move); meanwhile each step asks
    for the same target again (no motion). More than max_waits such steps: PlanningError (a fault).
    None (simulated time): every planning step is recorded.
    """

    def __init__(self, cfg: CalibrationConfig, arrive_tol_m: float | None = None, settle: int = 2,
                 max_waits: int = 40) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.frames: list[np.ndarray] = []
        self.poses: list[np.ndarray] = []
        self.commanded: list[np.ndarray] = []
        self.start: np.ndarray | None = None
        self.arrive_tol_m, self.settle, self.max_waits = arrive_tol_m, settle, max_waits
        self.target: np.ndarray | None = None             # where the last move should take the arm
        self._on_target = self._waits = 0

    @property
    def has_goal(self) -> bool:
        return len(self.poses) <= self.cfg.moves

    def _next_move(self, p: np.ndarray) -> np.ndarray:
        d = self.rng.normal(size=3)
        d *= self.cfg.step_m / np.linalg.norm(d)
        out = np.abs(p + d - self.start) > self.cfg.box_m
        d[out] = -d[out]                                   # turn back into the box
        return d

    def _wait(self, pose: np.ndarray) -> PlanResult | None:
        """The same target again while the arm has not settled on it; None once it has."""
        if self.arrive_tol_m is None or self.target is None:
            return None
        off_m = float(np.linalg.norm(pose[:3] - self.target))
        self._on_target = self._on_target + 1 if off_m <= self.arrive_tol_m else 0
        if self._on_target >= self.settle:
            return None
        self._waits += 1
        if self._waits > self.max_waits:
            raise PlanningError(f"the arm did not settle on move {len(self.commanded)}'s target within "
                                f"{self.arrive_tol_m * 100:.1f} cm: {off_m * 100:.2f} cm away after {self._waits - 1} "
                                "steps")
        action = np.zeros(7)
        action[:3] = self.target - pose[:3]                 # the target it was sent to, measured from here
        return PlanResult(action=action, plan=action[None].copy(), energy=0.0,
                          diagnostics={"scripted": True, "waiting_m": off_m})

    def plan(self, frame: np.ndarray, pose: np.ndarray) -> PlanResult:
        pose = np.array(pose, dtype=np.float64)
        waiting = self._wait(pose)
        if waiting is not None:
            return waiting
        self.frames.append(np.array(frame, copy=True))
        self.poses.append(pose)
        if self.start is None:
            self.start = pose[:3].copy()
        action = np.zeros(7)
        self.target, self._on_target, self._waits = None, 0, 0
        if len(self.poses) <= self.cfg.moves:
            action[:3] = self._next_move(pose[:3])
            self.commanded.append(action[:3].copy())
            self.target = pose[:3] + action[:3]
        return PlanResult(action=action, plan=action[None].copy(), energy=0.0, diagnostics={"scripted": True})


@dataclass
class CalibrationResult:
    fit: RotationFit                # Kabsch on the per-move inferences
    scan: YawScan                   # the pooled yaw scan
    measured_m: np.ndarray          # [n, 3] robot frame
    inferred_m: np.ndarray          # [n, 3] model frame
    commanded_m: np.ndarray         # [n, 3]
    energies: list[float]
    center_m: np.ndarray            # [3] the start position: the frame's centre
    action_frame: tuple[float, ...]  # 9 numbers, the chosen fit's rotation row-major
    seconds: float


def _blocking(stack: StackConfig) -> StackConfig:
    """The stack as the moves run it: blocking mode (stop, move, settle), nothing recorded."""
    if stack.control.dry_run:
        raise ConfigError("calibration needs motion, and control.dry_run is true: nothing would move")
    return dataclasses.replace(stack, control=dataclasses.replace(stack.control, mode="blocking", record_dir=None))


def make_moves(stack: StackConfig, cfg: CalibrationConfig, backend: Any, camera: Any) -> ScriptedMoves:
    """Run the scripted moves through the control loop (blocking mode) on a connected backend, in
    simulated time (`loop.step()`, the backend advanced by the loop)."""
    stack = _blocking(stack)
    moves = ScriptedMoves(cfg)
    loop = build_loop(stack, moves, backend, camera)
    loop.activate()
    cap_s = (cfg.moves + 2) * max(4 * stack.control.model_step_s, 1.0)
    t0 = backend.now_s()
    try:
        while moves.has_goal and loop.state is not LoopState.FAULT:
            if backend.now_s() - t0 > cap_s:
                raise SafetyError(f"calibration moves did not finish in {cap_s:.0f} s of simulated time "
                                  f"({len(moves.poses)} of {cfg.moves + 1} observations)")
            loop.step()
        if loop.state is LoopState.FAULT:
            raise SafetyError(f"calibration stopped at move {len(moves.poses)}: {loop.reason}")
    finally:
        loop.close()
    return moves


def check_recording(frames: Any, poses: Any, commanded: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The recorded moves as arrays: frames uint8 [N+1, H, W, 3], poses [N+1, 7], commanded [N, 3],
    N >= 3; else ConfigError naming the shapes."""
    F, P, C = np.asarray(frames), np.asarray(poses, dtype=np.float64), np.asarray(commanded, dtype=np.float64)
    n = len(P) - 1
    if F.dtype != np.uint8 or F.ndim != 4 or F.shape[-1] != 3:
        raise ConfigError(f"calibration frames must be uint8 [N+1, H, W, 3], got {F.dtype} {list(F.shape)}")
    if P.ndim != 2 or P.shape[1] != 7 or len(F) != len(P) or C.shape != (n, 3):
        raise ConfigError(f"calibration needs N+1 frames and poses [N+1, 7] and N commanded moves [N, 3], got "
                          f"{len(F)} frames, poses {list(P.shape)}, commanded {list(C.shape)}")
    if n < MIN_MOVES:
        raise ConfigError(f"calibration needs at least {MIN_MOVES} moves, got {n}")
    if not np.isfinite(P).all():
        raise ConfigError(f"calibration poses contain NaN/inf at observations "
                          f"{np.nonzero(~np.isfinite(P).all(1))[0].tolist()}")
    return F, P, C


def infer_calibration(world_model: Any, frames: Any, poses: Any, commanded: Any, cfg: CalibrationConfig,
                      progress: Progress | None = None) -> CalibrationResult:
    """The recorded moves -> per-move inference on `world_model`, the rotation fits, the yaw scan.

    frames: uint8 [N+1, H, W, 3], the camera before each move and after the last; poses [N+1, 7]
    the end-effector states at the same instants (robot frame); commanded [N, 3] the Δxyz each
    move asked for (m). progress(text) after each move's inference. `seconds` is this call's time.
    """
    t0 = time.monotonic()
    frames, poses, commanded = check_recording(frames, poses, commanded)
    n = len(poses) - 1
    measured, inferred, energies = [], [], []
    for i in range(n):
        d, e = infer_displacement(world_model, frames[i], poses[i], frames[i + 1], cfg.extent_m,
                                  cfg.samples, cfg.iterations, seed=cfg.seed + i)
        measured.append(poses[i + 1, :3] - poses[i, :3])
        inferred.append(d)
        energies.append(e)
        if progress is not None:
            progress(f"move {i + 1}/{n}: measured {np.round(100 * measured[-1], 2).tolist()} cm, "
                     f"inferred {np.round(100 * d, 2).tolist()} cm")
    fit = fit_rotation(np.array(measured), np.array(inferred))
    z = world_model.encode(frames)                                                   # N+1, tokens, D
    scan = scan_yaw(world_model, z[:-1], z[1:], poses[:-1], np.array(measured))
    R = {"scan": yaw_matrix(scan.yaw_deg), "yaw": fit.yaw_rotation, "full": fit.rotation}[cfg.fit]
    return CalibrationResult(fit=fit, scan=scan, measured_m=np.array(measured), inferred_m=np.array(inferred),
                             commanded_m=commanded, energies=energies, center_m=poses[0, :3].copy(),
                             action_frame=tuple(float(v) for v in R.reshape(-1).round(9)),
                             seconds=time.monotonic() - t0)


def calibrate(stack: StackConfig, cfg: CalibrationConfig, world_model: Any, backend: Any, camera: Any,
              progress: bool = True) -> CalibrationResult:
    """Moves on the arm (simulated time), then per-move inference on `world_model` and the rotation fit."""
    t0 = time.monotonic()
    moves = make_moves(stack, cfg, backend, camera)
    say = (lambda text: print(f"calibrate: {text}", flush=True)) if progress else None
    result = infer_calibration(world_model, np.stack(moves.frames), np.array(moves.poses),
                               np.array(moves.commanded), cfg, say)
    result.seconds = time.monotonic() - t0
    return result


def infer_on_planner(planner: Any, frames: Any, poses: Any, commanded: Any, cfg: CalibrationConfig,
                     progress: Progress | None = None) -> CalibrationResult:
    """`infer_calibration` on the planner's world model: in the planner's child process when it has
    one (PlannerProcess.calibrate), else here."""
    remote = getattr(planner, "calibrate", None)
    if remote is not None:
        return remote(frames, poses, commanded, cfg, progress=progress)
    return infer_calibration(planner.world_model, frames, poses, commanded, cfg, progress)


def describe_result(result: CalibrationResult, cfg: CalibrationConfig) -> str:
    """One line: the chosen yaw, the per-move fit and its residual."""
    R = np.reshape(result.action_frame, (3, 3))
    yaw = math.degrees(math.atan2(R[1, 0], R[0, 0]))
    fit = result.fit
    return (f"action frame yaw {yaw:+.1f} deg ({cfg.fit} fit; pooled scan {result.scan.yaw_deg:+.1f} deg), "
            f"per-move fit yaw {fit.yaw_deg:+.1f} deg, residual {100 * fit.yaw_residual_m:.2f} cm, "
            f"{len(result.measured_m)} moves, {result.seconds:.0f} s")


class LiveCalibration:
    """The calibration on a running ControlLoop (the planner node's `~/calibrate`): real time.

    `run(out)`: the loop stops (hold, brake, its threads end); the scripted moves run in blocking
    mode through a second ControlLoop on the same backend, camera, clock and publish hook, started
    in real time (each observation once the measured position has settled on the move's target:
    ScriptedMoves' arrive_tol_m), until the last move is done, a fault, a hold or a time cap; the first loop is
    given back resynced at the measured joints and holding, its goal kept (a failure leaves it so
    too); then the inference and the fit on its planner (`infer_on_planner`), the files written
    to `out` (`write_outputs`), and the frame applied to the planner. The arm is never moved by
    two loops at once, and after `run` it holds: ~/enable true goes on.

    `hold(reason)` (another thread: ~/enable false, a rejected message, deactivate) stops the moves
    at once; with restart=False the first loop stays stopped afterwards (the node is deactivating).
    `progress(text)` reports each move, the inference and the result.
    """

    def __init__(self, loop: ControlLoop, cfg: CalibrationConfig, progress: Progress | None = None,
                 timeout_s: float | None = None) -> None:
        stack = _blocking(loop.cfg)
        if not loop.running:
            raise ConfigError("calibration needs the control loop running (started once a joint state and a "
                              "camera frame have arrived)")
        if loop.state is LoopState.FAULT:
            raise SafetyError(f"the control loop is in a fault ({loop.reason}); leave it first (~/enable true)")
        self.loop, self.cfg = loop, cfg
        self.progress = progress
        self.moves = ScriptedMoves(cfg, arrive_tol_m=ARRIVE_TOL_M)
        self.move_loop = ControlLoop(stack, self.moves, loop.backend, loop.camera, clock=loop.clock,
                                     publish=loop.publish)
        # real time on a busy machine (and the settling steps): more slack than make_moves' simulated cap
        self.timeout_s = (cfg.moves + 2) * max(8 * stack.control.model_step_s, 3.0) + 10.0 \
            if timeout_s is None else float(timeout_s)
        self._lock = threading.Lock()          # hold() vs starting the moves / giving the loop back
        self._stopped: str | None = None
        self._restart = True

    def hold(self, reason: str, restart: bool = True, wait_s: float = 0.0) -> None:
        """Stop the moves at once (the move loop brakes and holds); `run` then fails with the reason.
        restart False: the first loop stays stopped afterwards. wait_s: wait up to this long for the
        move loop's braking to end (its threads stopped)."""
        with self._lock:
            self._stopped = self._stopped or reason
            self._restart = self._restart and restart
        self.move_loop.hold(reason)
        deadline = time.monotonic() + wait_s
        while self.move_loop.running and time.monotonic() < deadline:
            time.sleep(POLL_S)

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    def run(self, out: Path | None = None) -> CalibrationResult:
        t0 = time.monotonic()
        self.loop.stop()                                         # hold, brake, its threads end
        try:
            self._move()
        except BaseException as e:
            self._give_back(f"calibration stopped: {e}")
            raise
        self._give_back("calibrating: inferring the action frame")
        n = self.cfg.moves
        self._say(f"inference: {n} moves on the world model")
        try:
            result = infer_on_planner(self.loop.planner, np.stack(self.moves.frames), np.array(self.moves.poses),
                                      np.array(self.moves.commanded), self.cfg,
                                      progress=lambda text: self._say(f"inference: {text}"))
            result.seconds = time.monotonic() - t0
            frame = ActionFrame(np.reshape(result.action_frame, (3, 3)), result.center_m)   # ConfigError if NaN
            if out is not None:
                write_outputs(out, self.loop.cfg, result, self.cfg, None)
            self.loop.planner.set_action_frame(result.action_frame, frame.center_m)
        except BaseException as e:
            self.loop.hold(f"calibration failed: {e}")
            raise
        self.loop.hold(f"calibrated: {describe_result(result, self.cfg)}; ~/enable true goes on")
        self._say(f"done: {describe_result(result, self.cfg)}")
        return result

    def _move(self) -> None:
        """The scripted moves in real time; SafetyError unless all are done."""
        n, moves, loop = self.cfg.moves, self.moves, self.move_loop
        with self._lock:
            if self._stopped is not None:
                raise SafetyError(f"stopped before the first move: {self._stopped}")
            loop.activate()
            loop.start()
        deadline = time.monotonic() + self.timeout_s
        said = 0
        try:
            while moves.has_goal:
                k = min(len(moves.commanded), n)                   # moves commanded so far
                if k > said:
                    said = k
                    self._say(f"move {k}/{n}")
                if loop.state is not LoopState.ACTIVE:             # a fault, or held (~/enable false)
                    raise SafetyError(f"at move {k}/{n}: {loop.state.value}: {loop.reason}")
                if time.monotonic() > deadline:
                    loop.hold("calibration moves timed out")
                    raise SafetyError(f"the moves did not finish in {self.timeout_s:.0f} s (at move {k}/{n})")
                time.sleep(POLL_S)
        finally:
            loop.close()                                           # hold, brake, its threads end
        if loop.state is LoopState.FAULT:
            raise SafetyError(f"after the last move: fault: {loop.reason}")
        if len(moves.poses) != n + 1:
            raise PlanningError(f"expected {n + 1} observations, got {len(moves.poses)}")

    def _give_back(self, reason: str) -> None:
        """The first loop holds; started again (resynced: the arm has moved) unless told otherwise."""
        with self._lock:
            self.loop.hold(reason)
            if self._restart:
                self.loop.resync()
                self.loop.start()


def frame_keys(result: CalibrationResult) -> dict[str, Any]:
    """The planning keys a stack YAML takes."""
    return {"action_frame": list(result.action_frame),
            "action_frame_center_m": [round(float(v), 6) for v in result.center_m]}


def write_outputs(out: Path, stack: StackConfig, result: CalibrationResult, cfg: CalibrationConfig,
                  camera_yaw_deg: float | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = frame_keys(result)
    (out / "action_frame.yaml").write_text(
        "# vjepa2-ros calibrate: the world model's action frame; merge into a stack YAML's planning: section\n"
        + yaml.safe_dump({"planning": keys}, sort_keys=False))
    calibrated = dataclasses.replace(stack, planning=dataclasses.replace(stack.planning, **{
        "action_frame": result.action_frame, "action_frame_center_m": tuple(keys["action_frame_center_m"])}))
    (out / "stack.yaml").write_text("# the input stack config with the calibrated action frame\n"
                                    + yaml.safe_dump(calibrated.to_dict(), sort_keys=False))
    summary = {"fit": result.fit.as_dict(), "scan": result.scan.as_dict(), "chosen": cfg.fit, "planning": keys,
               "measured_m": result.measured_m.round(6).tolist(), "inferred_m": result.inferred_m.round(6).tolist(),
               "commanded_m": result.commanded_m.round(6).tolist(), "energies": result.energies,
               "seconds": result.seconds, "config": dataclasses.asdict(cfg), "camera_yaw_deg": camera_yaw_deg}
    (out / "calibration.json").write_text(json.dumps(summary, indent=2))
    plot(out / "calibration.png", result)


def plot(path: Path, result: CalibrationResult) -> None:
    """Top view: measured displacements against inferred ones before and after the fit (cm)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    P, Q = 100 * result.measured_m, 100 * result.inferred_m
    R = np.reshape(result.action_frame, (3, 3))
    back = Q @ R                                         # inferred, mapped back into the robot frame (Rᵀ q)
    chosen = math.degrees(math.atan2(R[1, 0], R[0, 0]))
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, other, title in ((axes[0], Q, "before: inferred (model frame)"),
                             (axes[1], back, f"after: Rᵀ inferred ({chosen:+.1f}° yaw)")):
        for p, q in zip(P, other):
            ax.annotate("", xy=p[:2], xytext=(0, 0), arrowprops=dict(arrowstyle="->", color="tab:blue"))
            ax.annotate("", xy=q[:2], xytext=(0, 0), arrowprops=dict(arrowstyle="->", color="tab:orange"))
            ax.plot([p[0], q[0]], [p[1], q[1]], color="0.7", linewidth=0.8)
        lim = 1.2 * max(np.abs(P[:, :2]).max(), np.abs(other[:, :2]).max(), 1.0)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel="Δx (cm)", ylabel="Δy (cm)", title=title)
        ax.plot([], [], color="tab:blue", label="measured (robot)")
        ax.plot([], [], color="tab:orange", label="inferred")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    scan = result.scan
    axes[2].plot(scan.grid_deg, scan.energy, color="tab:green")
    axes[2].axvline(scan.yaw_deg, color="tab:red", linestyle="--", label=f"scan minimum {scan.yaw_deg:+.0f}°")
    axes[2].set(xlabel="yaw of the measured moves (deg)", ylabel="energy / zero-action energy (mean over moves)",
                title="pooled yaw scan")
    axes[2].legend(loc="upper left", fontsize=8)
    axes[2].grid(alpha=0.3)
    fig.suptitle(f"camera calibration: {len(P)} moves, residual {100 * result.fit.yaw_residual_m:.2f} cm (yaw fit), "
                 f"{100 * result.fit.residual_m:.2f} cm (full)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = CalibrationConfig()
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG,
                        help="stack YAML (default: config/sim_demo.yaml, the simulated Panda and the shipped model)")
    parser.add_argument("--moves", type=int, default=d.moves, help="random moves (at least 3)")
    parser.add_argument("--step-m", type=float, default=d.step_m, help="length of each move (m)")
    parser.add_argument("--fit", choices=FITS, default=d.fit,
                        help="which estimate becomes the action frame: the pooled yaw scan (default), or Kabsch on "
                             "the per-move inferences, yaw-only or full 3-D")
    parser.add_argument("--samples", type=int, default=d.samples, help="CEM samples per inferred move")
    parser.add_argument("--iterations", type=int, default=d.iterations, help="CEM iterations per inferred move")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/calibrate-<UTC time>)")
    parser.add_argument("--camera-yaw-deg", type=float, default=None,
                        help="simulator only: turn the camera by this angle about the vertical axis through its "
                             "target (a known rotation to test against)")


def main(args: argparse.Namespace) -> int:
    stack = load_config(args.config)
    cfg = CalibrationConfig(moves=args.moves, step_m=args.step_m, fit=args.fit, samples=args.samples,
                            iterations=args.iterations, seed=args.seed)
    if stack.control.dry_run:
        raise ConfigError(f"{args.config}: control.dry_run is true, and calibration needs motion; set it false")
    if stack.control.backend != "sim":
        raise ConfigError(f"the calibrate command drives the simulator (control.backend sim); on a robot, call the "
                          f"planner node's ~/calibrate service, which has the camera (backend {stack.control.backend!r})")
    out = args.out or Path("runs") / time.strftime("calibrate-%Y%m%d-%H%M%S", time.gmtime())
    overrides = {} if args.camera_yaw_deg is None else camera_yaw_overrides(args.camera_yaw_deg)
    px = sim_camera_px(stack.model)
    print(f"calibrate: {cfg.moves} moves of {100 * cfg.step_m:.1f} cm on the simulated arm"
          f"{'' if args.camera_yaw_deg is None else f', camera turned {args.camera_yaw_deg:+.0f} deg'}; "
          f"model {stack.model.checkpoint}", flush=True)
    world_model = build_world_model(stack.model)
    backend = build_backend(stack, camera_width=px, camera_height=px, **overrides)
    backend.connect()
    try:
        result = calibrate(stack, cfg, world_model, backend, backend.camera())
    finally:
        backend.disconnect()
    write_outputs(out, stack, result, cfg, args.camera_yaw_deg)
    fit = result.fit
    print(move_table(result.measured_m, result.inferred_m, fit))
    truth = "" if args.camera_yaw_deg is None else f" (camera turned {args.camera_yaw_deg:+.1f} deg)"
    print(f"calibrate: yaw {result.scan.yaw_deg:+.1f} deg by the pooled scan{truth}; per-move fits: yaw "
          f"{fit.yaw_deg:+.1f} deg, residual {100 * fit.yaw_residual_m:.2f} cm; full {fit.full_angle_deg:.1f} deg, "
          f"residual {100 * fit.residual_m:.2f} cm; model gain {fit.scale:.2f}; "
          f"{result.seconds:.0f} s. Action frame ({cfg.fit} fit) in {out / 'action_frame.yaml'}; "
          f"plan with it: --config {out / 'stack.yaml'}")
    return 0
