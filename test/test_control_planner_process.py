"""The planner in its own process (control.planner_process): real child processes, the real
MuJoCo sim and a tiny random model. The same plans as the inline Planner; a child that dies,
hangs or returns garbage is a fault the loop holds on within one control period, with the
reason; resume() restarts it and plans again. Every child is reaped, every slot unlinked."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from multiprocessing.shared_memory import SharedMemory

import numpy as np
import pytest

from vjepa2_ros.control import planner_process
from vjepa2_ros.control.config import load_config
from vjepa2_ros.control.loop import ControlLoop
from vjepa2_ros.control.planner_process import PlannerProcess
from vjepa2_ros.control.stack import build_inline_planner, build_planner
from vjepa2_ros.control.state import LoopState
from vjepa2_ros.errors import PlanningError
from vjepa2_ros.planning.planner import make_example_frame, make_example_state
from vjepa2_ros.robot.sim import SimBackend, SimConfig

CFG = load_config({
    "model": {"encoder": "vit_tiny", "predictor": "ac_tiny"},
    "planning": {"horizon": 1, "samples": 16, "topk": 4, "iterations": 2, "maxnorm": 0.05, "bound": "box"},
    "safety": {"max_frame_age_s": 0.15, "max_state_age_s": 0.03},
    "control": {"rate_hz": 100.0, "model_step_s": 0.1, "backend": "sim", "planner_threads": 1, "planner_nice": 0},
})
GOAL_OFFSET_Q = np.array([0.3, 0.2, 0.0, 0.2, 0.0, -0.1, 0.0])


@pytest.fixture
def no_leaks(monkeypatch):
    """Every shared-memory slot the planners of this test made is unlinked at the end (other
    processes on the machine may hold slots of their own)."""
    made: list[str] = []

    class Recorded(SharedMemory):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if kwargs.get("create"):
                made.append(self.name)

    monkeypatch.setattr(planner_process, "SharedMemory", Recorded)
    yield made
    assert made, "no slot was made: the test did not plan through the process"
    for name in made:
        with pytest.raises(FileNotFoundError):            # unlinked
            SharedMemory(name=name)


class Rig:
    """Sim + camera + a planner (process or inline) + loop in stepped time, keeping every
    published command with the loop state and the start time of its tick."""

    def __init__(self, planner_process: bool = True, real_time: bool = False, **control):
        cfg = CFG if not real_time else dataclasses.replace(     # a busy machine must not fake stale data
            CFG, safety=dataclasses.replace(CFG.safety, max_frame_age_s=0.5, max_state_age_s=0.2))
        self.cfg = dataclasses.replace(cfg, control=dataclasses.replace(cfg.control, planner_process=planner_process,
                                                                        **control))
        self.backend = SimBackend(SimConfig(camera_width=64, camera_height=64, real_time=real_time), self.cfg.safety)
        self.backend.connect()
        if not real_time:                                     # the goal: the view with the arm moved
            q0 = self.backend.read_state().q
            self.backend.reset(q0 + GOAL_OFFSET_Q)
            self.goal = self.backend.camera().read_latest().image.copy()
            self.backend.reset(q0)
        self.planner = build_planner(self.cfg, seed=0)
        self.commands: list[tuple[float, np.ndarray, LoopState]] = []
        self.loop = ControlLoop(self.cfg, self.planner, self.backend, self.backend.camera(),
                                publish=lambda t, q, g, sent: self.commands.append(
                                    (self.loop.tick_stamps[-1], q.copy(), self.loop.state)))

    def close(self) -> None:
        self.loop.close()
        self.planner.close()
        self.backend.disconnect()

    def q_cmd(self) -> np.ndarray:
        return np.array([c[1] for c in self.commands])


@pytest.fixture
def rig(no_leaks):
    r = Rig()
    yield r
    r.close()
    assert r.planner.problem() is None and r.planner._child.proc is None


def resume_and_plan(rig: Rig) -> None:
    starts, plans = rig.planner.starts, rig.loop.plan_count
    rig.loop.resume()
    assert rig.planner.starts == starts + 1 and rig.planner.problem() is None
    assert rig.loop.state is LoopState.ACTIVE
    rig.loop.run_steps(25)
    assert rig.loop.state is LoopState.ACTIVE, rig.loop.reason
    assert rig.loop.plan_count >= plans + 2 and rig.loop.last_plan["ok"]


def test_process_plans_like_the_inline_planner_goals_encoded_in_the_child(no_leaks):
    inline = build_inline_planner(CFG, seed=5)
    with PlannerProcess(CFG, seed=5) as remote:
        assert remote.info["pid"] != os.getpid() and remote.info["torch_threads"] == 1     # control.planner_threads
        goals = [make_example_frame(seed=1), make_example_frame(seed=2)]
        for p in (inline, remote):
            p.set_goals(goals, advance_after_steps=2)
        for k in range(4):                                 # the second sub-goal from the third plan on
            frame, state = make_example_frame(seed=10 + k), make_example_state()
            a, b = inline.plan(frame, state), remote.plan(frame, state)
            np.testing.assert_array_equal(a.action, b.action)
            np.testing.assert_array_equal(a.plan, b.plan)
            assert a.energy == b.energy and remote.goal_index == inline.goal_index == (k >= 2)
            assert b.diagnostics["process"]["seq"] >= 1
        # what the ROS node asks of planner.world_model: encode a check frame (in the child)
        np.testing.assert_array_equal(remote.world_model.encode(goals[0]).numpy(),
                                      inline.world_model.encode(goals[0]).numpy())
        with pytest.raises(PlanningError, match="goal latent must be"):     # the child's error, the child lives on
            remote.set_goal_latent(np.zeros((3, 3), np.float32))
        assert remote.problem() is None and remote.has_goal and remote.goal_index == 1
        remote.clear_goal()
        with pytest.raises(PlanningError, match="no goal set"):
            remote.plan(goals[0], make_example_state())
        remote.world_model.runtime.release()               # the node's cleanup: the child is gone
        assert remote.problem() is None and remote._child.proc is None
        with pytest.raises(PlanningError, match="closed"):
            remote.plan(goals[0], make_example_state())


def test_the_loop_with_the_process_commands_what_it_commands_inline(no_leaks):
    streams = []
    for planner_process in (True, False):
        r = Rig(planner_process=planner_process)
        try:
            r.loop.set_goal_image(r.goal)
            r.loop.run_steps(40)
            assert r.loop.state is LoopState.ACTIVE and r.loop.plan_count >= 3, r.loop.reason
            streams.append(r.q_cmd())
        finally:
            r.close()
    assert np.max(np.abs(np.diff(streams[0], axis=0))) > 0
    np.testing.assert_array_equal(streams[0], streams[1])


def test_killed_planner_holds_on_the_next_tick_and_resume_restarts_it(rig):
    rig.loop.set_goal_image(rig.goal)
    rig.loop.run_steps(20)
    assert rig.loop.state is LoopState.ACTIVE
    rig.planner.kill()
    n = len(rig.commands)
    rig.loop.step()                                       # the next tick sees it, no plan needed
    assert rig.commands[n][2] is LoopState.FAULT
    assert rig.loop.reason == "planner process died (killed by signal 9 (SIGKILL))", rig.loop.reason
    with pytest.raises(PlanningError, match="planner process died"):
        rig.planner.plan(rig.goal, make_example_state())
    rig.loop.run_steps(10)
    assert rig.loop.state is LoopState.FAULT             # only resume() leaves it
    resume_and_plan(rig)


def test_a_death_is_seen_before_the_forkserver_reports_it(rig):
    """An outside SIGKILL while no plan is in flight: the pidfd says so at once, although the
    forkserver (stopped here) has not reaped the child or sent its exit status."""
    from multiprocessing import forkserver
    rig.loop.set_goal_image(rig.goal)
    rig.loop.run_steps(12)
    server = forkserver._forkserver._forkserver_pid
    os.kill(server, signal.SIGSTOP)
    try:
        os.kill(rig.planner.info["pid"], signal.SIGKILL)
        t_end = time.monotonic() + 10.0
        while not rig.planner._child.ended() and time.monotonic() < t_end:
            time.sleep(0.001)
        assert rig.planner._child.ended() and rig.planner._child.exitcode() is None
        n = len(rig.commands)
        rig.loop.step()                                   # the next tick holds
        assert rig.commands[n][2] is LoopState.FAULT
        assert rig.loop.reason == "planner process died (exit status not read yet)", rig.loop.reason
    finally:
        os.kill(server, signal.SIGCONT)
    resume_and_plan(rig)


@pytest.mark.parametrize("kind, reason", [("nan", "non-finite action"), ("shape", "action \\[3\\]"),
                                          ("stale", "a reply to request \\d+, expected \\d+")])
def test_garbage_from_the_planner_process_holds(rig, kind, reason):
    rig.loop.set_goal_image(rig.goal)
    rig.loop.run_steps(12)
    plans = rig.loop.plan_count
    rig.planner.send_garbage(kind)
    rig.loop.run_steps(12)
    assert rig.loop.state is LoopState.FAULT and rig.loop.plan_count == plans + 1
    assert rig.loop.last_plan["ok"] is False
    # the planner thread's call says it first (the tick would say the same on the next period)
    assert rig.loop.reason.startswith("planner: planner process returned garbage: ")
    import re
    assert re.search(reason, rig.loop.reason), rig.loop.reason
    assert "garbage" in rig.planner.problem()            # the lying child was killed
    resume_and_plan(rig)


def test_real_time_kill_and_hang_hold_within_one_period_while_commands_stream(no_leaks):
    r = Rig(real_time=True, plan_timeout_s=0.5, plan_period_s=0.0, planner_nice=5)     # the planner flat out

    def child_nice() -> int:                              # of the child's main thread (its torch threads inherit it)
        return os.getpriority(os.PRIO_PROCESS, r.planner.info["pid"])

    assert child_nice() == 0                              # stepped runs plan at full speed
    try:
        r.loop.set_goal_from_camera()
        r.loop.start()

        def wait_for(cond, timeout_s=20.0):
            t_end = time.monotonic() + timeout_s
            while not cond() and time.monotonic() < t_end:
                time.sleep(0.01)
            assert cond(), r.loop.reason

        wait_for(lambda: r.loop.plan_count >= 2)
        assert child_nice() == 5                          # in real time the planner yields to commands
        r.planner.kill()                                  # returns once the child is gone
        t_kill = time.monotonic()
        wait_for(lambda: r.loop.state is LoopState.FAULT and list(r.commands)[-1][0] > t_kill)
        first_after = next(c for c in list(r.commands) if c[0] > t_kill)
        assert first_after[2] is LoopState.FAULT           # the first tick after the death holds
        assert "planner process died" in r.loop.reason          # (its exit status may not be out yet)

        r.loop.resume()
        wait_for(lambda: r.loop.plan_count >= 4 and r.loop.state is LoopState.ACTIVE)
        plans = r.loop.plan_count
        r.planner.hang(30.0)                               # after the plan in flight, no more answers
        t_hang = time.monotonic()
        wait_for(lambda: r.loop.state is LoopState.FAULT)
        assert "planner process hung" in r.loop.reason and r.loop.plan_count <= plans + 2
        assert time.monotonic() - t_hang < 10.0
        ticks = np.array([c[0] for c in list(r.commands) if c[0] > t_hang])
        assert len(ticks) > 20 and np.max(np.diff(ticks)) < 0.25    # the stream never waited on the planner

        r.loop.resume()                                    # the hung child was killed; a fresh one plans
        wait_for(lambda: r.loop.plan_count >= plans + 3 and r.loop.state is LoopState.ACTIVE)
        assert r.planner.starts == 3 and child_nice() == 5
    finally:
        r.close()
