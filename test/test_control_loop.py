"""The control loop on the real MuJoCo sim with a real (tiny, random) planner, in stepped time.

Faults (stale camera, stale joint state, NaN plan, planner exception, backend error) must hold
the arm within one control period, report the reason, and recover only on request.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Callable

import cv2
import numpy as np
import pytest
import torch

from vjepa2_ros.control.config import load_config
from vjepa2_ros.control.loop import ControlLoop, read_image
from vjepa2_ros.control.recorder import Recorder, read_recording
from vjepa2_ros.control.state import LoopState
from vjepa2_ros.errors import ConfigError, PlanningError
from vjepa2_ros.planning import Planner, WorldModel
from vjepa2_ros.robot.backend import RobotState
from vjepa2_ros.robot.sim import SimBackend, SimCamera, SimConfig

PERIOD_S = 0.01
CFG = load_config({
    "model": {"encoder": "vit_tiny", "predictor": "ac_tiny"},
    "planning": {"horizon": 1, "samples": 16, "topk": 4, "iterations": 2, "maxnorm": 0.05, "bound": "box"},
    "safety": {"max_frame_age_s": 0.15, "max_state_age_s": 0.03},
    "control": {"rate_hz": 100.0, "model_step_s": 0.1, "backend": "sim"},
})
GOAL_OFFSET_Q = np.array([0.3, 0.2, 0.0, 0.2, 0.0, -0.1, 0.0])     # rad: the goal view's arm pose


class FlakySim(SimBackend):
    """The real sim, plus the failures a real robot has: a joint state that stops updating
    (`frozen`), a command link that fails (`send_error`), a robot error (`robot_error`)."""

    frozen: RobotState | None = None
    send_error: str | None = None
    robot_error: str | None = None
    sends = 0
    stop_calls = 0

    def read_state(self) -> RobotState:
        state = self.frozen if self.frozen is not None else super().read_state()
        return dataclasses.replace(state, error=self.robot_error) if self.robot_error else state

    def _send_joint_target(self, q: np.ndarray) -> None:
        if self.send_error is not None:
            raise RuntimeError(self.send_error)
        self.sends += 1
        super()._send_joint_target(q)

    def stop(self) -> None:
        self.stop_calls += 1
        super().stop()


class FreezableCamera(SimCamera):
    """The sim camera; with `frozen` set it keeps returning its last frame (a dead camera driver)."""

    frozen = False

    def read_latest(self):
        if self.frozen and self._last is not None:
            return self._last
        return super().read_latest()

    def latest_stamp(self):
        if self.frozen and self._last is not None:
            return self._last.stamp_s
        return super().latest_stamp()


class CrashingPlanner(Planner):
    """The real planner; with `crash` set, plan() fails like a runtime bug would. `observer` is
    called at the start of every plan (the tests look at the arm then)."""

    crash: str | None = None
    observer: Callable[[], None] | None = None

    def plan(self, frame, state):
        if self.observer is not None:
            self.observer()
        if self.crash is not None:
            raise RuntimeError(self.crash)
        return super().plan(frame, state)


@pytest.fixture(scope="module")
def world_model() -> WorldModel:
    return WorldModel.tiny(seed=0)


class Rig:
    """Backend + camera + planner + loop, keeping every published command."""

    def __init__(self, world_model: WorldModel, tmp_path=None, planning: dict | None = None, **control):
        self.cfg = dataclasses.replace(CFG, control=dataclasses.replace(CFG.control, **control),
                                       planning=dataclasses.replace(CFG.planning, **(planning or {})))
        self.backend = FlakySim(SimConfig(camera_width=64, camera_height=64), self.cfg.safety)
        self.backend.connect()
        self.q0 = self.backend.read_state().q
        self.backend.reset(self.q0 + GOAL_OFFSET_Q)        # the goal: the view with the arm moved
        self.goal = self.backend.camera().read_latest().image.copy()
        self.backend.reset(self.q0)
        self.camera = FreezableCamera(self.backend)        # a fresh camera: no frame cached from the goal
        self.planner = CrashingPlanner(world_model, self.cfg.planning, seed=0)
        self.recorder = None if tmp_path is None else Recorder(tmp_path / "rec")
        self.commands: list[tuple[float, np.ndarray, float, bool, LoopState]] = []
        self.loop = ControlLoop(self.cfg, self.planner, self.backend, self.camera, recorder=self.recorder,
                                publish=lambda t, q, g, sent: self.commands.append((t, q.copy(), g, sent,
                                                                                   self.loop.state)))

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
        self.backend.disconnect()

    def q_cmd(self) -> np.ndarray:
        return q_cmd(self.commands)

    def first_tick_in(self, state: LoopState) -> int:
        return first_tick_in(self.commands, state)


def q_cmd(commands: list) -> np.ndarray:
    """The published joint commands [N, 7]."""
    return np.array([c[1] for c in commands])


def first_tick_in(commands: list, state: LoopState) -> int:
    """Index of the first command published in `state` (computed after the transition)."""
    return next(i for i, c in enumerate(commands) if c[4] is state)


@pytest.fixture
def rig(world_model, tmp_path):
    r = Rig(world_model, tmp_path)
    yield r
    r.close()


def run_active(rig: Rig, steps: int = 40) -> None:
    rig.loop.set_goal_image(rig.goal)
    rig.loop.run_steps(steps)
    assert rig.loop.state is LoopState.ACTIVE, rig.loop.reason
    assert rig.loop.plan_count >= 3
    assert np.max(np.abs(np.diff(rig.q_cmd(), axis=0))) > 0, "the arm never moved"


def assert_holds_from(rig: Rig, tick: int) -> None:
    """Command `tick` (the first after the fault) and all later ones brake: no joint speeds up,
    the arm is still as soon as the acceleration limit allows (+1 period), and stays still."""
    v = np.diff(rig.q_cmd(), axis=0) / PERIOD_S            # v[k]: velocity of command k+1
    speed = np.abs(v[tick - 2:])                          # speed[0]: command tick-1 (before the fault)
    assert np.max(speed[0]) > 0, "the arm was not moving at the fault: the test proves nothing"
    assert np.all(speed[1:] <= speed[:-1] + 1e-9), "a command after the fault accelerated"
    stop = int(np.ceil(np.max(speed[0] / (rig.loop.envelope.ddq_max * PERIOD_S)))) + 2
    assert len(speed) > stop + 2, "run longer after the fault"
    assert np.all(speed[stop:] == 0.0), "the arm is not held still after braking"


def fault_tick(rig: Rig) -> int:
    return rig.first_tick_in(LoopState.FAULT)


def resume_and_check(rig: Rig) -> None:
    plans = rig.loop.plan_count
    rig.loop.resume()
    assert rig.loop.state is LoopState.ACTIVE
    rig.loop.run_steps(30)
    assert rig.loop.state is LoopState.ACTIVE, rig.loop.reason
    assert rig.loop.plan_count > plans
    assert rig.commands[-1][3], "commands are sent again after resume"


def test_async_loop_streams_commands_within_limits_and_the_sim_follows(rig):
    run_active(rig, 60)
    q = rig.q_cmd()
    assert len(q) == 60 and all(c[3] for c in rig.commands)
    v = np.diff(q, axis=0) / PERIOD_S
    assert np.all(np.abs(v) <= rig.loop.envelope.dq_max + 1e-9)
    assert np.all(np.abs(np.diff(v, axis=0)) <= rig.loop.envelope.ddq_max * PERIOD_S * (1 + 1e-6))
    assert 5 <= rig.loop.plan_count <= 7                   # one plan per model step (0.1 s) in async mode
    rig.loop.hold()
    rig.loop.run_steps(60)                                 # the sim's position servos catch up and settle
    np.testing.assert_allclose(rig.backend.read_state().q, rig.q_cmd()[-1], atol=0.01)


def test_stale_joint_state_holds_within_one_period_and_recovers(rig):
    run_active(rig)
    rig.backend.frozen = rig.backend.read_state()
    rig.loop.run_steps(40)
    assert rig.loop.state is LoopState.FAULT
    assert "joint state is stale" in rig.loop.reason
    tick = fault_tick(rig)
    age = rig.commands[tick][0] - rig.backend.frozen.stamp_s
    assert age <= rig.cfg.safety.max_state_age_s + PERIOD_S + 1e-9     # detected on the first late tick
    assert_holds_from(rig, tick)
    rig.loop.run_steps(5)
    assert rig.loop.state is LoopState.FAULT, "a fault must not clear by itself"
    rig.backend.frozen = None
    resume_and_check(rig)


def test_stale_camera_holds_and_recovers(rig):
    run_active(rig)
    rig.camera.frozen = True
    frozen_at = rig.camera._last.stamp_s
    rig.loop.run_steps(40)
    assert rig.loop.state is LoopState.FAULT
    assert "camera frame is stale" in rig.loop.reason
    tick = fault_tick(rig)
    # Checked by the tick, not only when a plan needs the frame: on the first late tick.
    age = rig.commands[tick][0] - frozen_at
    assert rig.cfg.safety.max_frame_age_s < age <= rig.cfg.safety.max_frame_age_s + PERIOD_S + 1e-9
    assert_holds_from(rig, tick)
    rig.camera.frozen = False
    resume_and_check(rig)


def test_nan_plan_holds_and_recovers(tmp_path):
    wm = WorldModel.tiny(seed=1)                           # its own model: the test poisons its weights
    r = Rig(wm, tmp_path)
    try:
        run_active(r)
        weight = r.planner.world_model.runtime.predictor.predictor_proj.weight
        saved = weight.detach().clone()
        with torch.no_grad():
            weight.fill_(float("nan"))                    # the predictor now outputs NaN
        r.loop.run_steps(30)
        assert r.loop.state is LoopState.FAULT
        assert "non-finite" in r.loop.reason
        assert_holds_from(r, fault_tick(r))
        with torch.no_grad():
            weight.copy_(saved)
        resume_and_check(r)
    finally:
        r.close()


def test_planner_exception_holds_and_recovers(rig):
    run_active(rig)
    rig.planner.crash = "CUDA error: an illegal memory access was encountered"
    rig.loop.run_steps(30)
    assert rig.loop.state is LoopState.FAULT
    assert rig.loop.reason == "planner exception: RuntimeError: CUDA error: an illegal memory access was encountered"
    assert_holds_from(rig, fault_tick(rig))
    rig.planner.crash = None
    resume_and_check(rig)


def test_backend_error_holds_stops_the_robot_and_recovers(rig):
    run_active(rig)
    rig.backend.send_error = "communication_constraints_violation"
    rig.loop.run_steps(30)
    assert rig.loop.state is LoopState.FAULT
    assert "backend error" in rig.loop.reason and "communication_constraints_violation" in rig.loop.reason
    assert rig.backend.stop_calls == 1                     # the robot was told to stop, once
    tick = fault_tick(rig)
    assert not any(c[3] for c in rig.commands[tick:]), "nothing is sent to a failed backend"
    assert_holds_from(rig, tick + 1)                       # the send that failed was tick's; the next brakes
    rig.backend.send_error = None
    resume_and_check(rig)
    # The robot's own error state is a fault too.
    rig.backend.robot_error = "joint_velocity_violation"
    rig.loop.run_steps(3)
    assert (rig.loop.state, rig.loop.reason) == (LoopState.FAULT, "backend error: joint_velocity_violation")


def test_hold_is_one_call_away_and_activate_continues(rig):
    run_active(rig)
    plans = rig.loop.plan_count
    rig.loop.hold("operator pressed hold")
    rig.loop.run_steps(40)
    assert (rig.loop.state, rig.loop.reason) == (LoopState.HOLDING, "operator pressed hold")
    assert rig.loop.plan_count == plans                    # no planning while held
    assert_holds_from(rig, rig.first_tick_in(LoopState.HOLDING))
    rig.loop.activate()
    rig.loop.run_steps(20)
    assert rig.loop.state is LoopState.ACTIVE and rig.loop.plan_count > plans


def test_clear_goal_goes_idle_and_stops_planning(rig):
    run_active(rig)
    plans = rig.loop.plan_count
    rig.loop.clear_goal()
    rig.loop.run_steps(40)
    assert rig.loop.state is LoopState.IDLE and rig.loop.plan_count == plans
    assert_holds_from(rig, rig.first_tick_in(LoopState.IDLE))
    with pytest.raises(PlanningError, match="without a goal"):
        rig.loop.activate()


def test_blocking_mode_plans_only_at_rest(world_model):
    r = Rig(world_model, mode="blocking")
    seen = []
    r.planner.observer = lambda: seen.append((r.loop.clock(), np.abs(r.loop.interp.dq).max(),
                                              np.abs(r.backend.read_state().dq).max()))
    try:
        r.loop.set_goal_image(r.goal)
        r.loop.run_steps(150)
        assert r.loop.state is LoopState.ACTIVE, r.loop.reason
        assert len(seen) >= 3
        stamps, cmd_speed, measured_speed = map(np.array, zip(*seen))
        assert np.all(cmd_speed == 0.0)                                   # stopped ...
        assert np.all(measured_speed < r.cfg.control.settle_velocity_rad_s)
        assert np.all(np.diff(stamps) >= r.cfg.control.model_step_s)      # ... plan, move one model step
        assert np.max(np.abs(np.diff(r.q_cmd(), axis=0))) > 0
    finally:
        r.close()


def test_dry_run_plans_and_publishes_but_never_commands(world_model):
    r = Rig(world_model, dry_run=True, planning={"close_gripper": 0})
    try:
        run_active(r)
        assert r.backend.sends == 0 and not any(c[3] for c in r.commands)
        assert r.backend.read_state().gripper < 0.05                     # the gripper is not commanded either
        assert r.commands[-1][2] > 0.9                                    # ... but its command is published
    finally:
        r.close()


def test_plan_gripper_action_drives_the_gripper(world_model):
    r = Rig(world_model, planning={"close_gripper": 0})                  # Meta's option: Δgripper = 1
    try:
        assert r.backend.read_state().gripper < 0.05
        run_active(r, 60)
        assert r.backend.read_state().gripper > 0.5
    finally:
        r.close()


def test_a_new_goal_never_lifts_a_hold(rig):
    run_active(rig)
    rig.loop.hold("operator hold")
    rig.loop.set_goal_image(rig.goal)                      # e.g. a goal message while disabled / deactivated
    rig.loop.run_steps(20)
    assert rig.loop.state is LoopState.HOLDING and rig.loop.reason == "operator hold"
    assert np.all(np.diff(rig.q_cmd()[-5:], axis=0) == 0.0), "the arm moved while holding"
    rig.loop.activate()
    assert rig.loop.state is LoopState.ACTIVE


def test_goal_from_file_and_from_camera(rig, tmp_path):
    path = tmp_path / "goal.png"
    cv2.imwrite(str(path), np.ascontiguousarray(rig.goal[:, :, ::-1]))
    np.testing.assert_array_equal(read_image(path), rig.goal)
    rig.loop.set_goal_file(path)
    assert rig.loop.state is LoopState.ACTIVE
    with pytest.raises(ConfigError, match="could not be read"):
        rig.loop.set_goal_file(tmp_path / "missing.png")
    rig.loop.set_goal_from_camera()                        # "stay here": the observation is the goal
    rig.loop.run_steps(1)
    assert rig.loop.last_plan["diagnostics"]["observation_energy"] == pytest.approx(0.0, abs=1e-6)


def test_sub_goals_advance(world_model):
    r = Rig(world_model, goal_advance_after_steps=2)
    try:
        second = r.camera.read_latest().image.copy()
        r.loop.set_goals([r.goal, second])
        r.loop.run_steps(1)
        assert r.loop.last_plan["goal_index"] == 0
        r.loop.run_steps(30)
        assert r.loop.last_plan["goal_index"] == 1
    finally:
        r.close()


def test_recording_has_every_plan_command_and_transition(rig, tmp_path):
    run_active(rig)
    rig.planner.crash = "boom"
    rig.loop.run_steps(12)
    rig.loop.close()                                       # finishes the recording
    rec = read_recording(tmp_path / "rec")
    assert len(rec["plans"]) == rig.loop.plan_count
    ok = [p for p in rec["plans"] if p["ok"]]
    assert ok and all(p["frame"].shape == (64, 64, 3) and p["plan"].shape == (1, 7) for p in ok)
    assert all(np.isfinite(p["energy"]) and len(p["q_target"]) == 7 for p in ok)
    assert rec["plans"][-1]["error"] == "planner exception: RuntimeError: boom"
    assert len(rec["commands"]["t_s"]) == rig.loop.tick_count == len(rig.commands)
    np.testing.assert_array_equal(rec["commands"]["q_cmd"], rig.q_cmd())
    assert [e["state"] for e in rec["events"]] == ["active", "fault"]


class SlowPlanner(CrashingPlanner):
    """The real planner taking `delay_s` longer per plan (a big model on a small machine)."""

    delay_s = 0.5

    def plan(self, frame, state):
        time.sleep(self.delay_s)
        return super().plan(frame, state)


def test_real_time_stream_never_waits_for_the_planner_and_faults_hold(world_model):
    cfg = dataclasses.replace(CFG, control=dataclasses.replace(CFG.control, plan_period_s=0.0))
    backend = FlakySim(SimConfig(camera_width=64, camera_height=64, real_time=True), cfg.safety)
    backend.connect()
    camera = SimCamera(backend)
    planner = SlowPlanner(world_model, cfg.planning, seed=0)
    commands = []
    loop = ControlLoop(cfg, planner, backend, camera,
                       publish=lambda t, q, g, sent: commands.append((t, q.copy(), g, sent, loop.state)))
    switch_interval = sys.getswitchinterval()
    try:
        loop.set_goal_image(camera.read_latest().image)
        loop.start()
        time.sleep(1.6)
        ticks, plans = loop.tick_count, loop.plan_count
        assert ticks >= 120, f"{ticks} commands in 1.6 s at 100 Hz"
        assert 2 <= plans <= 4                             # 0.5 s per plan
        gaps = np.diff(np.array(loop.tick_stamps))
        assert gaps.max() < 0.25, f"the command stream stalled {gaps.max():.3f} s (a plan takes 0.5 s)"
        planner.crash = "worker died"
        time.sleep(1.2)
        assert (loop.state, loop.reason) == (LoopState.FAULT, "planner exception: RuntimeError: worker died")
        q = q_cmd(commands)
        speed = np.abs(np.diff(q[first_tick_in(commands, LoopState.FAULT) - 1:], axis=0))
        assert np.all(speed[1:] <= speed[:-1] + 1e-9), "a command after the fault accelerated"
        assert np.all(q[-10:] == q[-1]), "held still after the fault"
    finally:
        loop.stop()
        backend.disconnect()
    assert sys.getswitchinterval() == switch_interval
    assert loop.state is LoopState.FAULT                   # stopping does not hide the fault


def test_stepped_runs_are_deterministic(world_model):
    streams = []
    for _ in range(2):
        r = Rig(world_model)
        try:
            r.loop.set_goal_image(r.goal)
            r.loop.run_steps(30)
            streams.append(r.q_cmd())
        finally:
            r.close()
    assert np.max(np.abs(np.diff(streams[0], axis=0))) > 0
    np.testing.assert_array_equal(streams[0], streams[1])


def test_stack_builds_an_fr3_loop_with_the_configured_roi():
    from vjepa2_ros.control.stack import build_backend, build_loop, build_planner, build_world_model
    cfg = dataclasses.replace(CFG, control=dataclasses.replace(CFG.control, robot="fr3"),
                              model=dataclasses.replace(CFG.model, roi=(8, 0, 48, 48)))
    wm = build_world_model(cfg.model)
    assert wm.preprocess.roi == (8, 0, 48, 48) and wm.preprocess.crop_size == 64
    backend = build_backend(cfg, camera_width=64, camera_height=64)
    backend.connect()
    try:
        assert backend.spec.name == "fr3"
        loop = build_loop(cfg, build_planner(cfg, wm), backend, backend.camera())
        loop.set_goal_from_camera()
        loop.run_steps(25)
        assert loop.state is LoopState.ACTIVE and loop.plan_count >= 2, loop.reason
    finally:
        backend.disconnect()
    with pytest.raises(ConfigError, match="control.robot is 'panda'"):
        ControlLoop(CFG, None, build_backend(cfg), None)


class NoStateYet(FlakySim):
    """A robot link that has not delivered a joint state yet (read_state fails)."""

    def read_state(self) -> RobotState:
        raise TimeoutError("no joint state received yet")


def test_nothing_is_commanded_before_a_measured_joint_state(world_model):
    rig = Rig(world_model)
    try:
        backend = NoStateYet(SimConfig(camera_width=64, camera_height=64), rig.cfg.safety)
        backend.connect()
        loop = ControlLoop(rig.cfg, rig.planner, backend, SimCamera(backend), publish=lambda *a: rig.commands.append(a))
        loop.run_steps(5)
        assert loop.state is LoopState.FAULT and "no joint state received yet" in loop.reason
        assert backend.sends == 0 and rig.commands == [], "a command was sent without knowing where the arm is"
        backend.disconnect()
    finally:
        rig.close()
