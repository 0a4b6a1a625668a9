"""The node's ROS-free half: TopicBackend + LatestFrameCamera under the real ControlLoop.

The planner node hands messages to these objects and publishes what the loop sends; here plain
threads play the subscriptions (joint states at 100 Hz tracking the commands perfectly, camera at
20 Hz) and a tiny random model plans, so the whole data path of the node runs without ROS.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from vjepa2_ros.errors import DataError, SafetyError
from vjepa2_ros.nodes.topic_backend import LatestFrameCamera, TopicBackend
from vjepa2_ros.robot.kinematics import arm_spec
from vjepa2_ros.robot.safety import SafetyConfig

Q_HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
RATE_HZ = 50.0


class Recorder:
    """The node's sinks: joint targets and gripper commands, with arrival times."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.targets: list[tuple[float, np.ndarray]] = []
        self.gripper: list[float] = []

    def send(self, q: np.ndarray) -> None:
        with self.lock:
            self.targets.append((time.monotonic(), np.array(q)))

    def last(self) -> np.ndarray:
        with self.lock:
            return self.targets[-1][1] if self.targets else Q_HOME

    def since(self, t0: float) -> list[np.ndarray]:
        with self.lock:
            return [q for t, q in self.targets if t >= t0]


def make_backend(rec: Recorder) -> TopicBackend:
    backend = TopicBackend(arm_spec("panda"), SafetyConfig(), send=rec.send, gripper=rec.gripper.append)
    backend.connect()
    return backend


def test_no_command_before_a_joint_state_and_bad_states_are_rejected():
    rec = Recorder()
    backend = make_backend(rec)
    with pytest.raises(DataError, match="no joint state"):
        backend.read_state()
    with pytest.raises(SafetyError, match="no joint state"):
        backend.send_joint_target(Q_HOME)
    assert rec.targets == []
    with pytest.raises(DataError, match="non-finite"):
        backend.put_joint_state(np.r_[Q_HOME[:6], np.nan], stamp_s=1.0)
    with pytest.raises(DataError, match="7 positions"):
        backend.put_joint_state(Q_HOME[:6], stamp_s=1.0)
    assert not backend.has_state
    backend.put_joint_state(Q_HOME, stamp_s=2.0, gripper=0.75)
    state = backend.read_state()
    assert state.stamp_s == 2.0 and state.gripper == 0.75
    backend.set_gripper(0.2)                                     # no finger joints: the last command stands in
    backend.put_joint_state(Q_HOME, stamp_s=2.1)
    assert backend.read_state().gripper == pytest.approx(0.2) and rec.gripper == [pytest.approx(0.2)]
    np.testing.assert_allclose(state.flange_pose, backend.kinematics.fk(Q_HOME, "flange"))
    assert np.array_equal(backend.send_joint_target(Q_HOME), Q_HOME) and len(rec.targets) == 1


def test_camera_keeps_only_the_latest_rgb_frame():
    camera = LatestFrameCamera()
    assert camera.read_latest() is None
    for k in range(3):
        camera.put(np.full((4, 4, 3), k, np.uint8), stamp_s=float(k))
    frame = camera.read_latest()
    assert frame.stamp_s == 2.0 and frame.image[0, 0, 0] == 2
    with pytest.raises(DataError, match="uint8"):
        camera.put(np.zeros((4, 4), np.uint8), stamp_s=3.0)


@pytest.mark.slow
def test_control_loop_streams_plans_holds_and_faults_on_stale_joint_states():
    from vjepa2_ros.control.config import load_config
    from vjepa2_ros.control.stack import build_loop, build_planner
    from vjepa2_ros.control.state import LoopState
    from vjepa2_ros.planning.planner import make_example_frame

    cfg = load_config({"model": {"encoder": "vit_tiny", "predictor": "ac_tiny"},
                       "planning": {"samples": 16, "topk": 4, "iterations": 2},
                       "safety": {"max_frame_age_s": 1.0, "max_state_age_s": 0.2},
                       "control": {"robot": "panda", "rate_hz": RATE_HZ, "model_step_s": 0.1}})
    rec = Recorder()
    backend, camera = make_backend(rec), LatestFrameCamera()
    feeding = threading.Event()
    feeding.set()
    stop = threading.Event()

    def joint_states():                     # the arm tracks the commands perfectly, 100 Hz
        while not stop.is_set():
            if feeding.is_set():
                backend.put_joint_state(rec.last(), time.monotonic())
            time.sleep(0.01)

    def frames():
        while not stop.is_set():
            camera.put(make_example_frame(64, 64, seed=0), time.monotonic())
            time.sleep(0.05)

    threads = [threading.Thread(target=joint_states, daemon=True), threading.Thread(target=frames, daemon=True)]
    for t in threads:
        t.start()
    loop = build_loop(cfg, build_planner(cfg), backend, camera, clock=time.monotonic)
    try:
        time.sleep(0.1)
        loop.start()
        # No goal: a hold stream at the control rate, at the measured position.
        t0 = time.monotonic()
        time.sleep(1.0)
        held = rec.since(t0)
        assert 0.6 * RATE_HZ <= len(held) <= 1.2 * RATE_HZ
        assert all(np.allclose(q, Q_HOME) for q in held)
        assert loop.state is LoopState.IDLE

        # A goal: plans arrive and the arm moves.
        loop.set_goal_image(make_example_frame(64, 64, seed=3))
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not (loop.plan_count >= 2 and
                                                   np.abs(rec.last() - Q_HOME).max() > 1e-4):
            time.sleep(0.05)
        assert loop.state is LoopState.ACTIVE, loop.reason
        assert loop.last_plan is not None and loop.last_plan["ok"], loop.last_plan
        assert np.abs(rec.last() - Q_HOME).max() > 1e-4

        # Bad joint states are rejected; the state goes stale and the loop faults and holds.
        with pytest.raises(DataError):
            backend.put_joint_state(np.full(7, np.nan), time.monotonic())
        feeding.clear()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and loop.state is not LoopState.FAULT:
            time.sleep(0.02)
        assert loop.state is LoopState.FAULT and "joint state" in loop.reason
        time.sleep(0.5)                                      # braking is done well within this
        t1 = time.monotonic()
        time.sleep(0.3)
        after = rec.since(t1)
        assert after and all(np.allclose(q, after[0], atol=1e-9) for q in after)   # holding still
    finally:
        loop.stop()
        stop.set()
        for t in threads:
            t.join(timeout=2.0)
