"""Loop parts: the joint interpolator's limits, the state machine's rules, the recorder's files."""

import numpy as np
import pytest

from vjepa2_ros.control.interpolate import JointInterpolator
from vjepa2_ros.control.recorder import Recorder, read_recording
from vjepa2_ros.control.state import LoopState, StateMachine
from vjepa2_ros.errors import ConfigError, DataError
from vjepa2_ros.robot.kinematics import PANDA

DT = 0.01
DQ_MAX = PANDA.dq_max * 0.5
DDQ_MAX = PANDA.ddq_max * 0.5


def run(interp: JointInterpolator, n: int) -> np.ndarray:
    """n commands after the current one: [n + 1, 7] including the start."""
    return np.array([interp.q.copy()] + [interp.step() for _ in range(n)])


def assert_limits(q: np.ndarray, v0: np.ndarray | None = None) -> None:
    v = np.diff(q, axis=0) / DT
    v = np.vstack([np.zeros(7) if v0 is None else v0, v])
    assert np.all(np.abs(v) <= DQ_MAX + 1e-9)
    assert np.all(np.abs(np.diff(v, axis=0)) <= DDQ_MAX * DT * (1 + 1e-9))


@pytest.mark.parametrize("seed", range(5))
def test_interpolator_reaches_targets_within_limits(seed):
    rng = np.random.default_rng(seed)
    interp = JointInterpolator(DQ_MAX, DDQ_MAX, DT)
    q0 = rng.uniform(-1, 1, 7)
    interp.reset(q0)
    target = q0 + rng.uniform(-0.4, 0.4, 7)
    interp.move_to(target, duration_s=0.25)
    q = run(interp, 200)
    assert_limits(q)
    np.testing.assert_array_equal(q[-1], target)                # lands exactly, no creeping
    assert interp.at_rest
    # a small step is spread over the model step, not done in one jump
    interp.move_to(target + 0.01, duration_s=0.25)
    q = run(interp, 10)
    assert np.all(np.abs(q[-1] - target) < 0.01)


def test_interpolator_brake_stops_at_the_acceleration_limit():
    interp = JointInterpolator(DQ_MAX, DDQ_MAX, DT)
    interp.reset(np.zeros(7))
    interp.move_to(np.full(7, 1.0), duration_s=0.5)
    run(interp, 20)
    v0 = interp.dq.copy()
    assert np.all(v0 > 0.1)
    interp.brake()
    q = run(interp, 100)
    assert_limits(q, v0)
    assert interp.at_rest
    stop_periods = int(np.ceil(np.max(v0 / (DDQ_MAX * DT)))) + 2
    assert np.all(q[stop_periods:] == q[-1])                    # stopped as fast as allowed, then holds
    assert np.all(np.diff(q, axis=0) >= -DDQ_MAX * DT * DT)     # no overshoot back beyond one braking step


def test_interpolator_rejects_bad_limits():
    with pytest.raises(ConfigError, match="must be > 0"):
        JointInterpolator(np.zeros(7), DDQ_MAX, DT)
    with pytest.raises(ConfigError, match=r"\[7\]"):
        JointInterpolator(np.ones(6), DDQ_MAX, DT)


def test_state_machine_fault_needs_explicit_resume():
    sm = StateMachine()
    assert sm.state is LoopState.IDLE
    assert sm.activate("goal", 0.0) and sm.state is LoopState.ACTIVE
    assert not sm.activate("second goal", 0.5)                  # already active: no new event
    assert sm.fault("stale camera", 1.0)
    assert not sm.fault("second fault", 1.1)                    # the first reason is kept
    assert (sm.state, sm.reason) == (LoopState.FAULT, "stale camera")
    assert not sm.activate("goal again", 2.0)                   # a new goal does not clear a fault
    assert not sm.hold("hold", 2.0) and not sm.idle("cleared", 2.0)
    assert sm.state is LoopState.FAULT
    sm.resume(has_goal=True, stamp_s=3.0)
    assert sm.state is LoopState.ACTIVE
    sm.hold("operator", 4.0)
    assert (sm.state, sm.reason) == (LoopState.HOLDING, "operator")
    assert [e.state for e in sm.events] == [LoopState.ACTIVE, LoopState.FAULT, LoopState.ACTIVE, LoopState.HOLDING]


def test_recorder_writes_what_it_saw_and_decided(tmp_path):
    frame = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    with Recorder(tmp_path / "rec", config={"control.rate_hz": 100.0}) as rec:
        rec.event(0.0, "active", "goal set")
        rec.plan_step(frame, np.arange(7.0), np.zeros(7), np.ones((2, 7)), np.ones(7),
                      {"stamp_s": 0.0, "energy": np.float32(0.5), "diagnostics": {"iters": [1, 2]}})
        for k in range(3):
            rec.command(k * DT, np.full(7, k), 0.0, sent=k > 0)
    got = read_recording(tmp_path / "rec")
    (plan,) = got["plans"]
    np.testing.assert_array_equal(plan["frame"], frame)
    assert plan["energy"] == 0.5 and plan["diagnostics"] == {"iters": [1, 2]}
    assert plan["plan"].shape == (2, 7)
    assert got["commands"]["q_cmd"].shape == (3, 7)
    assert got["commands"]["sent"].tolist() == [False, True, True]
    assert got["events"] == [{"stamp_s": 0.0, "state": "active", "reason": "goal set"}]
    with pytest.raises(DataError, match="not a recording"):
        read_recording(tmp_path)
