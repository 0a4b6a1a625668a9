"""The franky backend against franky-sim (libfranka's network protocol on loopback, MuJoCo FR3 inside)."""

import time

import numpy as np
import pytest

from vjepa2_ros.errors import ConfigError, SafetyError, Vjepa2RosError

franky = pytest.importorskip("franky")
pytest.importorskip("franky_sim")
from vjepa2_ros.robot.backend import make_backend  # noqa: E402
from vjepa2_ros.robot.franky_backend import FrankyBackend, FrankyConfig, run_franky_sim  # noqa: E402
from vjepa2_ros.robot.kinematics import FR3, PANDA  # noqa: E402
from vjepa2_ros.robot.safety import SafetyConfig  # noqa: E402

TOL_RAD = 0.035


@pytest.fixture(scope="session")
def franky_sim_host():
    with run_franky_sim() as host:
        yield host


@pytest.fixture(scope="module")
def backend(franky_sim_host):
    # The way control.stack builds it: spec and safety by keyword, FrankyConfig fields as overrides.
    with make_backend("franky", spec=FR3, safety=SafetyConfig(), host=franky_sim_host, realtime="ignore",
                      relative_dynamics_factor=0.3) as b:
        assert b.cfg.arm == "fr3" and b.cfg.host == franky_sim_host
        yield b


def wait_until(predicate, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_state_has_joints_flange_and_gripper(backend):
    assert isinstance(backend, FrankyBackend) and backend.is_connected
    s = backend.read_state()
    assert s.q.shape == (7,) and s.dq.shape == (7,) and s.error is None
    assert abs(s.stamp_s - time.monotonic()) < 1.0
    assert 0.0 <= s.gripper <= 1.0
    # flange = O_T_EE F_T_EE^-1 equals our FR3 FK (franky-sim reports O_T_EE at the commanded q).
    np.testing.assert_allclose(s.flange_pose, backend.kinematics.fk(s.q, "flange"), atol=5e-3)


def test_streamed_targets_replace_each_other_and_are_reached(backend):
    q0 = backend.read_state().q
    first = q0 + np.array([0.3, -0.2, 0.2, 0.2, 0.2, 0.2, 0.3])
    backend.send_joint_target(first)
    time.sleep(0.3)
    final = q0 + np.array([0.15, 0.1, -0.1, -0.15, -0.1, 0.1, -0.2])   # pre-empts `first` mid-motion
    for alpha in np.linspace(0.2, 1.0, 5):                               # a short stream toward it
        backend.send_joint_target(q0 + alpha * (final - q0))
        time.sleep(0.05)
    assert wait_until(lambda: np.abs(backend.read_state().q - final).max() < TOL_RAD, 8.0)
    assert np.abs(backend.read_state().q - final).max() < TOL_RAD


def test_stop_holds_short_of_the_target(backend):
    q0 = backend.read_state().q
    target = q0 + np.array([0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5])
    backend.send_joint_target(target)
    time.sleep(0.25)
    backend.stop()
    time.sleep(1.5)
    held = backend.read_state().q
    time.sleep(0.5)
    assert np.abs(backend.read_state().q - held).max() < 0.01             # standing still
    assert np.abs(held - target).max() > 0.1                              # never went on to the target
    backend.recover()


def test_recovery_after_a_preempted_motion(backend):
    q0 = backend.read_state().q
    backend.send_joint_target(q0 + 0.2)
    time.sleep(0.2)
    backend._robot.stop()            # libfranka aborts the control loop: the motion ends in an error
    time.sleep(0.2)
    with pytest.raises(SafetyError, match="preempted"):   # the motion's exception surfaces on the next send
        backend.send_joint_target(q0)
    assert "preempted" in backend.read_state().error
    with pytest.raises(SafetyError, match="recover"):     # and blocks every send until recover()
        backend.send_joint_target(q0)
    assert backend.recover()
    assert backend.read_state().error is None
    backend.send_joint_target(q0)
    assert wait_until(lambda: np.abs(backend.read_state().q - q0).max() < TOL_RAD, 8.0)


def test_gripper_closes_and_opens(backend):
    backend.set_gripper(0.0)
    assert wait_until(lambda: backend.read_state().gripper < 0.05, 5.0)
    assert backend.set_gripper(1.0) == 1.0
    assert wait_until(lambda: backend.read_state().gripper > 0.9, 5.0)
    backend.set_gripper(0.25)                         # partial opening: move() to 0.06 m
    assert wait_until(lambda: abs(backend.read_state().gripper - 0.25) < 0.05, 5.0)


def test_unsafe_targets_are_rejected_before_franky(backend):
    q = backend.read_state().q
    with pytest.raises(SafetyError, match="non-finite"):
        backend.send_joint_target(np.full(7, np.inf))
    bad = q.copy()
    bad[5] = 0.2                                          # below the FR3's joint-6 minimum 0.5445
    with pytest.raises(SafetyError, match="fr3_joint6"):
        backend.send_joint_target(bad)
    time.sleep(0.2)
    assert np.abs(backend.read_state().q - q).max() < 0.02


def test_connection_errors_and_config():
    with pytest.raises(ConfigError, match="realtime"):
        FrankyConfig(realtime="maybe")
    with pytest.raises(ConfigError, match="relative_dynamics_factor"):
        FrankyConfig(relative_dynamics_factor=0.0)
    assert FrankyBackend(spec=PANDA, gripper=False).cfg.arm == "panda"
    with pytest.raises(ConfigError, match="FrankyConfig fields"):
        FrankyBackend(hostname="x")
    with pytest.raises(Vjepa2RosError, match="cannot connect"):
        FrankyBackend(FrankyConfig(host="127.0.0.254", realtime="ignore", gripper=False)).connect()
