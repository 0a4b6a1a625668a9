"""The ROS-free control loop: camera frames and joint states in, joint targets out at rate.

Two activities share one `ControlLoop`:
  * the command tick (`_tick`, every 1 / rate_hz s): read the joint state, check it is fresh and
    error-free, take the newest joint target from the planner, step the interpolator, pass the
    envelope's limits (checked), send (unless dry run), publish and record;
  * the planning step (`_plan_once`): freshest frame + state -> planner -> action -> EE target
    (integrate_pose on the current EE pose) -> IK seeded with the current joints -> safety
    checks -> new joint target, spread over `model_step_s` by the interpolator.

Real time: `start()` runs the tick in a command thread on a monotonic deadline schedule and
planning in a planner thread, so the command stream never waits for a plan. Simulated time:
`step()` / `run_steps(n)` run tick + plan (when due, inline) + `backend.advance(period)`, so a
run is deterministic. Mode "async" plans every `plan_period_s` on the freshest observation;
mode "blocking" waits until the arm is at rest, plans, and moves for one model step.

Any fault puts the state machine in `fault` and the arm brakes to a stop at the acceleration
limit (`JointInterpolator.brake`), from the first command computed after the fault: the same
tick for a stale or erroneous joint state, the next one for a failed send or a planning fault
(planner exception, non-finite plan, IK or safety rejection). While the loop is active with a
goal, the tick also checks the camera's newest frame stamp (a camera that stopped holds the arm
one period after its frame passes safety.max_frame_age_s, not at the next plan), and a planner
process (control.planner_process) that died or hung past control.plan_timeout_s
(`planner.problem()`), so the arm holds within one control period even while the planner thread
waits on it. Only `resume()` leaves a fault (restarting a planner
process that failed); `hold()` is always one call away.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vjepa2_ros.control.config import StackConfig
from vjepa2_ros.control.interpolate import JointInterpolator
from vjepa2_ros.control.recorder import Recorder
from vjepa2_ros.control.state import LoopState, StateMachine
from vjepa2_ros.errors import ConfigError, PlanningError, SafetyError
from vjepa2_ros.planning.pose import integrate_pose, matrix_from_pose7, pose7_from_matrix
from vjepa2_ros.robot.backend import Camera, RobotBackend, RobotState
from vjepa2_ros.robot.safety import check_finite, check_fresh

log = logging.getLogger(__name__)

IK_POSITION_TOL_M = 1e-3          # accept IK solutions within 1 mm / 0.01 rad of the EE target
IK_ROTATION_TOL_RAD = 1e-2
# (stamp_s, q_cmd [7], gripper_cmd, sent): what the ROS node publishes on each tick.
Publisher = Callable[[float, np.ndarray, float, bool], None]


def read_image(path: str | Path) -> np.ndarray:
    """An image file -> uint8 RGB [H, W, 3]."""
    import cv2
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ConfigError(f"goal image {path} could not be read (missing, or not an image file)")
    return np.ascontiguousarray(bgr[:, :, ::-1])


class ControlLoop:
    """Plans -> safe joint targets at control rate, on any RobotBackend + Camera.

    Args:
        cfg: the stack configuration (control, safety; model and planning are the planner's).
        planner: a vjepa2_ros.planning.Planner, or a PlannerProcess (the same calls, in a child process).
        backend: connected robot backend; its `read_state` stamps share `clock`.
        camera: frame source; its stamps share `clock`.
        clock: seconds, the clock of the state and frame stamps (default: `backend.now_s`,
            time.monotonic on hardware, simulation time in the simulator).
        recorder: optional; every planning step, command and transition is written to it.
        publish: optional callback per tick (the ROS node's command publisher).
    """

    def __init__(self, cfg: StackConfig, planner: Any, backend: RobotBackend, camera: Camera,
                 clock: Callable[[], float] | None = None, recorder: Recorder | None = None,
                 publish: Publisher | None = None) -> None:
        self.cfg, self.ctl = cfg, cfg.control
        self.planner, self.backend, self.camera = planner, backend, camera
        # A planner in another process (PlannerProcess) says when it died or hung: checked every tick.
        self._planner_problem: Callable[[], str | None] = getattr(planner, "problem", lambda: None)
        self.clock = backend.now_s if clock is None else clock
        self.recorder, self.publish = recorder, publish
        if backend.spec.name != self.ctl.robot:
            raise ConfigError(f"control.robot is {self.ctl.robot!r} but the backend drives a {backend.spec.name!r}")
        self.kinematics = backend.kinematics
        self.envelope = backend.envelope
        self.period_s = self.ctl.period_s
        self.interp = JointInterpolator(self.envelope.dq_max, self.envelope.ddq_max, self.period_s)
        self.sm = StateMachine()
        self._lock = threading.Lock()            # guards the fields below (tick <-> planner <-> caller)
        self._planner_lock = threading.Lock()    # one planner call at a time (goal encoding vs plan)
        self._state: RobotState | None = None
        self._pending: tuple[np.ndarray, float] | None = None   # (q_target [7], gripper) from the last plan
        self._resync = True                      # reset the interpolator to the measured q on next tick
        self._braking = False
        self._send_blocked = False               # set by a failed send; cleared by resume()
        self._gripper_cmd: float | None = None
        self._gripper_sent: float | None = None
        self._next_plan_s = -np.inf
        self._move_start_s = -np.inf
        self.plan_count = 0
        self.tick_count = 0
        self.last_plan: dict[str, Any] | None = None
        self.tick_stamps: collections.deque[float] = collections.deque(maxlen=100_000)  # tick starts, monotonic s
        self._threads: list[threading.Thread] = []
        self._running = threading.Event()
        self._saved_switch_interval = sys.getswitchinterval()
        self.realtime_priority = False            # True once the command thread runs SCHED_FIFO

    # --- state machine helpers -------------------------------------------------------------
    @property
    def state(self) -> LoopState:
        return self.sm.state

    @property
    def reason(self) -> str:
        return self.sm.reason

    def _record_event(self) -> None:
        e = self.sm.events[-1]
        log.info("control: %s (%s)", e.state.value, e.reason)
        if self.recorder is not None:
            self.recorder.event(e.stamp_s, e.state.value, e.reason)

    def _fault(self, reason: str) -> None:
        if self.sm.fault(reason, self.clock()):
            with self._lock:
                self._pending = None
            log.warning("control fault: %s", reason)
            self._record_event()

    def hold(self, reason: str = "hold requested") -> None:
        """Brake to a stop and hold; planning pauses until `activate()` or a new goal."""
        with self._lock:
            self._pending = None
        if self.sm.hold(reason, self.clock()):
            self._record_event()

    def activate(self) -> None:
        """Leave idle / holding: execute plans (needs a goal). Faults need `resume()`."""
        if not self.planner.has_goal:
            raise PlanningError("cannot activate without a goal; set one with set_goal_image / set_goals")
        if self.sm.activate("activated", self.clock()):
            self._record_event()

    def resume(self) -> None:
        """The explicit way out of a fault: recover the robot, restart a planner process that died
        or hung (its goals re-sent), resync to the measured joints."""
        if self.state is LoopState.FAULT and not self.backend.recover():
            raise SafetyError(f"the {self.backend.name} backend did not recover; still holding "
                              f"(fault: {self.reason})")
        recover = getattr(self.planner, "recover", None)
        if recover is not None:
            recover()
        self.resync()
        self._send_blocked = False
        self.sm.resume(self.planner.has_goal, self.clock())
        self._record_event()

    def resync(self) -> None:
        """Forget the commanded trajectory: the next tick restarts the interpolator at the measured
        joints (after something else moved the arm, e.g. `~/calibrate`'s moves), nothing sent before."""
        with self._lock:
            self._resync, self._pending = True, None
            self._next_plan_s = -np.inf

    # --- goals ------------------------------------------------------------------------------
    def set_goal_image(self, image: np.ndarray) -> None:
        """Goal from a uint8 RGB image [H, W, 3]; starts executing when idle (a hold or a fault
        stays until activate() / resume(): a goal never lifts a hold)."""
        with self._planner_lock:
            self.planner.set_goal_image(image)
        self._goal_set("goal image set")

    def set_goal_file(self, path: str | Path) -> None:
        self.set_goal_image(read_image(path))

    def set_goal_from_camera(self) -> None:
        """The current camera frame becomes the goal (e.g. 'stay here')."""
        frame = self.camera.read_latest()
        if frame is None:
            raise PlanningError("no camera frame yet to use as the goal")
        self.set_goal_image(frame.image)

    def set_goals(self, images: list[np.ndarray]) -> None:
        """A sequence of sub-goal images; the planner advances by control.goal_advance_* ."""
        with self._planner_lock:
            self.planner.set_goals(images, advance_after_steps=self.ctl.goal_advance_after_steps,
                                   advance_below_energy=self.ctl.goal_advance_below_energy)
        self._goal_set(f"{len(images)} sub-goals set")

    def _goal_set(self, reason: str) -> None:
        with self._lock:
            self._next_plan_s = -np.inf
        if self.sm.goal_set(reason, self.clock()):
            self._record_event()

    def clear_goal(self) -> None:
        with self._planner_lock:
            self.planner.clear_goal()
        with self._lock:
            self._pending = None
        if self.sm.idle("goal cleared", self.clock()):
            self._record_event()

    # --- the command tick -----------------------------------------------------------------------
    def _tick(self) -> None:
        self.tick_stamps.append(time.monotonic())
        now = self.clock()
        try:
            state = self.backend.read_state()
        except Exception as e:                                    # the robot's I/O failed
            self._fault(f"backend error reading state: {type(e).__name__}: {e}")
            state = None
        if state is not None:
            if state.error:
                self._fault(f"backend error: {state.error}")
            try:
                check_fresh(state.stamp_s, now, self.cfg.safety.max_state_age_s, "joint state")
                check_finite(state.q, (7,), "measured joint state")
            except SafetyError as e:
                self._fault(str(e))
        problem = self._planner_problem()                         # a planner process that died or hung
        if problem is not None:
            self._fault(problem)
        if self.state is LoopState.ACTIVE and self.planner.has_goal:
            try:                                                  # the next plan needs a fresh frame
                self._check_camera(self.camera.latest_stamp(), now)
            except Exception as e:                                # SafetyError, or the camera's own failure
                self._fault(str(e) if isinstance(e, SafetyError) else f"camera error: {type(e).__name__}: {e}")
        with self._lock:
            if state is not None:
                self._state = state
            if self._resync and state is not None:
                self.interp.reset(state.q)
                self._resync, self._braking = False, False
            pending, self._pending = self._pending, None
        if self.state is LoopState.ACTIVE:
            if pending is not None:
                self.interp.move_to(pending[0], self.ctl.model_step_s)
                self._move_start_s, self._braking = now, False
                self._gripper_cmd = pending[1]
        elif not self._braking:                                   # fault / hold / idle: stop
            self.interp.brake()
            self._braking = True
        self._command(now)

    def _command(self, now: float) -> None:
        if self._resync:                          # no measured joint state since start / resume:
            return                                # nothing is known to hold, so nothing is sent
        q_prev, dq_prev = self.interp.q.copy(), self.interp.dq.copy()
        q_cmd = self.interp.step()
        try:
            self._check_stream(q_cmd, q_prev, dq_prev)
        except SafetyError as e:                                  # never expected: the interpolator keeps the limits
            self._fault(str(e))
            q_cmd = self.envelope.stop_step(q_prev, dq_prev, self.period_s)
            self.interp.reset(q_cmd)
            self.interp.dq = (q_cmd - q_prev) / self.period_s
            self.interp.brake()
        gripper = self._gripper_cmd
        sent = False
        if not self.ctl.dry_run and not self._send_blocked:
            try:
                self.backend.send_joint_target(q_cmd)
                sent = True
                if (gripper is not None and self.state is LoopState.ACTIVE and
                        (self._gripper_sent is None or abs(gripper - self._gripper_sent) > self.ctl.gripper_deadband)):
                    self._gripper_sent = self.backend.set_gripper(gripper)
            except SafetyError as e:                              # nothing was sent; the robot keeps its target
                self._send_blocked = True
                self._fault(f"command rejected by the safety envelope: {e}")
            except Exception as e:
                self._send_blocked = True
                self._fault(f"backend error sending the command: {type(e).__name__}: {e}")
                self._stop_backend()
        self.tick_count += 1
        g = float("nan") if gripper is None else gripper
        if self.publish is not None:
            self.publish(now, q_cmd, g, sent)
        if self.recorder is not None:
            self.recorder.command(now, q_cmd, g, sent)

    def _check_stream(self, q: np.ndarray, q_prev: np.ndarray, dq_prev: np.ndarray) -> None:
        """SafetyError unless the command q [7] keeps the envelope's position (or stands still),
        velocity and acceleration limits after q_prev moving at dq_prev."""
        env, dt = self.envelope, self.period_s
        check_finite(q, (7,), "streamed joint command")
        v = (q - q_prev) / dt
        outside = ((q < env.q_min) | (q > env.q_max)) & (v != 0)
        fast = np.abs(v) > env.dq_max * (1 + 1e-9)
        jerky = np.abs(v - dq_prev) > env.ddq_max * dt * (1 + 1e-6) + 1e-12
        for bad, what in ((outside, "leaves the joint limits"), (fast, "exceeds the velocity limit"),
                          (jerky, "exceeds the acceleration limit")):
            if np.any(bad):
                j = int(np.flatnonzero(bad)[0])
                raise SafetyError(f"streamed command {what} at {env.spec.joint_names[j]}: q {q[j]:.4f} rad, "
                                  f"v {v[j]:.4f} rad/s, previous v {dq_prev[j]:.4f} rad/s")

    def _stop_backend(self) -> None:
        try:
            self.backend.stop()
        except Exception as e:                                    # already failing: report, keep holding
            log.error("backend stop() failed too: %s: %s", type(e).__name__, e)

    # --- planning ----------------------------------------------------------------------------
    def plan_due(self, now: float) -> bool:
        if self.state is not LoopState.ACTIVE or not self.planner.has_goal:
            return False
        with self._lock:
            if self._state is None or self._pending is not None:
                return False
            if self.ctl.mode == "blocking":                       # stop, plan, move
                moved_long_enough = now - self._move_start_s >= self.ctl.model_step_s - 1e-9
                still = bool(np.all(np.abs(self._state.dq) < self.ctl.settle_velocity_rad_s))
                return moved_long_enough and self.interp.at_rest and still
            return now >= self._next_plan_s

    def _check_camera(self, stamp_s: float | None, now: float) -> None:
        """SafetyError unless a camera frame has arrived and is at most max_frame_age_s old."""
        if stamp_s is None:
            raise SafetyError("no camera frame received")
        check_fresh(stamp_s, now, self.cfg.safety.max_frame_age_s, "camera frame")

    def _plan_once(self) -> None:
        """One planning step on the freshest observation; never raises (faults instead)."""
        now = self.clock()
        period = self.ctl.model_step_s if self.ctl.plan_period_s is None else self.ctl.plan_period_s
        with self._lock:
            state = self._state
            self._next_plan_s = now + period
        if state is None:
            return
        frame = self.camera.read_latest()                          # the freshest frame, checked below
        try:
            self._check_camera(None if frame is None else frame.stamp_s, now)
        except SafetyError as e:
            self._fault(str(e))
            return
        t0 = time.monotonic()
        q = np.asarray(state.q, dtype=np.float64)
        T_now = self.kinematics.fk(q, self.ctl.ee_frame)
        pose = pose7_from_matrix(T_now, float(state.gripper)).numpy()          # [7]
        info: dict[str, Any] = {"stamp_s": now, "frame_stamp_s": frame.stamp_s, "state_stamp_s": state.stamp_s,
                                "ok": False}
        result = None
        try:
            try:
                with self._planner_lock:
                    result = self.planner.plan(frame.image, pose)
            except PlanningError as e:
                raise PlanningError(f"planner: {e}") from None
            except Exception as e:                                # a bug or a runtime failure in the planner
                raise PlanningError(f"planner exception: {type(e).__name__}: {e}") from None
            action = np.asarray(result.action, dtype=np.float64)
            if action.shape != (7,) or not np.all(np.isfinite(action)) or not np.isfinite(result.energy):
                raise PlanningError(f"non-finite plan: action {action.tolist()}, energy {result.energy}")
            target = integrate_pose(pose, action).numpy()                       # [7]
            T_target = matrix_from_pose7(target).numpy()                        # [4, 4]
            # IK within the envelope's joint margin (and a hair more): a reachable target gets a
            # posture the envelope accepts, using the arm's redundancy, instead of one it refuses.
            ik = self.kinematics.ik(T_target, q, self.ctl.ee_frame,
                                    position_tol_m=IK_POSITION_TOL_M * 0.1, rotation_tol_rad=IK_ROTATION_TOL_RAD * 0.1,
                                    limit_margin_rad=self.envelope.cfg.joint_margin_rad + 1e-3)
            info.update(ik_position_error_m=ik.position_error_m, ik_rotation_error_rad=ik.rotation_error_rad)
            if ik.position_error_m > IK_POSITION_TOL_M or ik.rotation_error_rad > IK_ROTATION_TOL_RAD:
                raise SafetyError(f"no IK solution for the end-effector target {target[:3].round(4).tolist()}: "
                                  f"residual {ik.position_error_m:.4f} m, {ik.rotation_error_rad:.4f} rad")
            q_target = self.envelope.check_joint_target(ik.q, q)
            gripper = self.envelope.check_gripper(float(target[6]))
            info.update(ok=True, energy=float(result.energy), action=action, target_pose=target,
                        q_target=q_target, gripper_target=gripper)
            with self._lock:
                if self.state is LoopState.ACTIVE:                # not faulted / held meanwhile
                    self._pending = (q_target, gripper)
        except (PlanningError, SafetyError) as e:
            info["error"] = str(e)
            self._fault(str(e))
        info["plan_ms"] = (time.monotonic() - t0) * 1e3
        if result is not None:
            info["diagnostics"] = result.diagnostics
            info["goal_index"] = getattr(self.planner, "goal_index", None)
        self.plan_count += 1
        self.last_plan = info
        if self.recorder is not None:
            self.recorder.plan_step(frame.image, pose, q, None if result is None else result.plan,
                                    None if result is None else result.action,
                                    {k: v for k, v in info.items()})

    # --- simulated time --------------------------------------------------------------------------
    def step(self) -> None:
        """One control period in simulated time: tick, plan if due (inline, taking no simulated
        time: its target is taken up by the next tick), advance the sim."""
        self._tick()
        if self.plan_due(self.clock()):
            self._plan_once()
        self.backend.advance(self.period_s)

    def run_steps(self, n: int, until: Callable[[], bool] | None = None) -> int:
        """n periods of `step()` (stops early when `until()` is true); returns periods run."""
        for i in range(n):
            self.step()
            if until is not None and until():
                return i + 1
        return n

    # --- real time --------------------------------------------------------------------------------
    def start(self) -> None:
        """Command thread at rate_hz + planner thread. Stop with `stop()`."""
        if self._threads:
            raise ConfigError("control loop already started")
        self._saved_switch_interval = sys.getswitchinterval()
        if self.ctl.gil_switch_interval_s is not None:           # process-wide while the loop runs; stop() restores
            sys.setswitchinterval(self.ctl.gil_switch_interval_s)
        self._running.set()
        self._threads = [threading.Thread(target=self._command_thread, name="vjepa2-command", daemon=True),
                         threading.Thread(target=self._planner_thread, name="vjepa2-planner", daemon=True)]
        for t in self._threads:
            t.start()

    @property
    def running(self) -> bool:
        """The command and planner threads run (`start()` called, `stop()` not yet)."""
        return bool(self._threads)

    def stop(self) -> None:
        """Hold, let the command thread brake for a moment, stop both threads."""
        if not self._threads:
            return
        self.hold("loop stopping")
        time.sleep(min(0.5, 20 * self.period_s))
        self._running.clear()
        for t in self._threads:
            t.join(timeout=5.0)
        self._threads = []
        sys.setswitchinterval(self._saved_switch_interval)

    def _command_thread(self) -> None:
        if self.ctl.command_priority is not None:
            try:                                                  # this thread only (Linux: pid 0 = caller)
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.ctl.command_priority))
                self.realtime_priority = True
            except (OSError, AttributeError) as e:
                log.warning("command thread stays at normal priority: SCHED_FIFO %d refused (%s); "
                            "grant rtprio (limits.conf) or set control.command_priority: null",
                            self.ctl.command_priority, e)
        period = self.period_s
        start = time.monotonic()
        k = 0
        while self._running.is_set():
            try:
                self._tick()
            except Exception as e:                                # never die silently: fault and keep holding
                self._fault(f"control tick failed: {type(e).__name__}: {e}")
            k += 1
            deadline = start + k * period
            delay = deadline - time.monotonic()
            if delay < 0:                                         # overran: skip missed ticks, keep the grid
                k += int(-delay // period) + 1
                delay = start + k * period - time.monotonic()
            time.sleep(max(delay, 0.0))

    def _planner_thread(self) -> None:
        if self.ctl.planner_nice:                                 # in real time only: the command stream goes first
            try:                                                  # this thread (and the torch threads it starts),
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.ctl.planner_nice)
                renice = getattr(self.planner, "renice", None)    # or the planner process, all its threads
                if renice is not None:
                    renice(self.ctl.planner_nice)
            except (OSError, AttributeError) as e:
                log.warning("planner keeps its priority: nice %d refused (%s)", self.ctl.planner_nice, e)
        while self._running.is_set():
            try:
                if self.plan_due(self.clock()):
                    self._plan_once()
                    continue
            except Exception as e:                                # e.g. the backend's clock, disconnected
                if not self._running.is_set():                    # a plan that outlived stop(): dropped
                    return
                log.error("planner thread: %s: %s", type(e).__name__, e)
            time.sleep(self.period_s / 2)

    def close(self) -> None:
        """Stop the threads (if started) and finish the recording; the backend stays connected."""
        self.stop()
        if self.recorder is not None:
            self.recorder.close()

    def __enter__(self) -> "ControlLoop":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status(self) -> dict[str, Any]:
        return {"state": self.state.value, "reason": self.reason, "has_goal": bool(self.planner.has_goal),
                "plans": self.plan_count, "ticks": self.tick_count, "dry_run": self.ctl.dry_run,
                "mode": self.ctl.mode}
