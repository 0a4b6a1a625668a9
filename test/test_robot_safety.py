"""The safety envelope: checks raise with the reason, and streamed commands never leave any limit."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vjepa2_ros.errors import ConfigError, SafetyError
from vjepa2_ros.robot.kinematics import FR3, PANDA, Kinematics
from vjepa2_ros.robot.safety import SafetyConfig, SafetyEnvelope, check_fresh, make_example_envelope

ENVELOPES = {"panda": make_example_envelope("panda"), "fr3": make_example_envelope("fr3")}
Q_HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


def assert_within_limits(env: SafetyEnvelope, q: np.ndarray, q_prev: np.ndarray, dq_prev: np.ndarray,
                         dt: float) -> np.ndarray:
    """Checks one streamed command against every limit; returns its velocity."""
    assert np.all(np.isfinite(q))
    assert np.all(q >= env.q_min - 1e-12) and np.all(q <= env.q_max + 1e-12)
    v = (q - q_prev) / dt
    assert np.all(np.abs(v) <= env.dq_max * (1 + 1e-9) + 1e-9)
    assert np.all(np.abs(v - dq_prev) <= env.ddq_max * dt * (1 + 1e-6) + 1e-9)
    return v


finite_or_not = st.one_of(st.floats(-4.0, 4.0), st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arm=st.sampled_from(sorted(ENVELOPES)),
    target=st.lists(finite_or_not, min_size=7, max_size=7),
    near_range=st.booleans(),
    dt=st.floats(1e-3, 0.1),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_command_leaves_the_envelope(arm, target, near_range, dt, seed):
    """A random plan target is either rejected or inside the limits and the workspace, and the
    streamed commands toward it (with random re-targets and NaN holds) respect position,
    velocity and acceleration limits at every tick."""
    env = ENVELOPES[arm]
    rng = np.random.default_rng(seed)
    target = np.array(target)
    if near_range:   # map [-4, 4] onto 10 % beyond each joint's range, so many targets are close calls
        target = env.spec.q_min + ((target + 4.0) / 8.0 * 1.2 - 0.1) * (env.spec.q_max - env.spec.q_min)
    try:
        q_target = env.check_joint_target(target)
    except SafetyError:
        q_target = None
    else:
        assert np.all(np.isfinite(q_target))
        assert np.all(q_target >= env.q_min) and np.all(q_target <= env.q_max)
        p = env.kinematics.fk(q_target, env.cfg.workspace_frame)[:3, 3]
        assert np.all(p >= env.workspace_min) and np.all(p <= env.workspace_max)
    q_prev = rng.uniform(env.q_min, env.q_max)
    dq_prev = np.zeros(7)
    for _ in range(6):
        q_cmd = q_target if q_target is not None and rng.random() < 0.5 else rng.uniform(-5, 5, 7)
        if rng.random() < 0.1:
            q_cmd = np.where(rng.random(7) < 0.5, np.nan, q_cmd)
        try:
            q = env.limit_step(q_cmd, q_prev, dq_prev, dt)
        except SafetyError:
            assert not np.all(np.isfinite(q_cmd))
            q = env.stop_step(q_prev, dq_prev, dt)
        dq_prev = assert_within_limits(env, q, q_prev, dq_prev, dt)
        q_prev = q


def test_limit_step_reaches_target_and_brakes_before_limits():
    env = ENVELOPES["panda"]
    dt = 0.01
    q, dq = Q_HOME.copy(), np.zeros(7)
    target = Q_HOME + np.array([0.5, -0.3, 0.2, 0.4, -0.5, 0.3, 0.6])
    for _ in range(400):
        q_next = env.limit_step(target, q, dq, dt)
        dq = assert_within_limits(env, q_next, q, dq, dt)
        q = q_next
    np.testing.assert_allclose(q, target, atol=1e-9)
    # A command far beyond the upper limit of joint 1: it stops at the limit less margin, and braked.
    beyond = q.copy()
    beyond[0] = 10.0
    for _ in range(400):
        q_next = env.limit_step(beyond, q, dq, dt)
        dq = assert_within_limits(env, q_next, q, dq, dt)
        q = q_next
    assert q[0] == pytest.approx(env.q_max[0], abs=1e-6)


def test_stop_step_decelerates_to_rest():
    env = ENVELOPES["fr3"]
    dt = 0.005
    q, dq = Q_HOME.copy(), env.dq_max * 0.9 * np.array([1, -1, 1, -1, 1, -1, 1])
    for _ in range(1000):
        q_next = env.stop_step(q, dq, dt)
        dq = assert_within_limits(env, q_next, q, dq, dt)
        q = q_next
    assert np.all(dq == 0.0)


def test_checks_name_what_limit_and_value():
    env = ENVELOPES["panda"]
    q = Q_HOME.copy()
    q[3] = -0.05                                            # above joint 4's upper limit less margin
    with pytest.raises(SafetyError, match=r"panda_joint4 = -0.0500 rad outside"):
        env.check_joint_target(q)
    with pytest.raises(SafetyError, match="non-finite"):
        env.check_joint_target(np.full(7, np.nan))
    with pytest.raises(SafetyError, match="shape"):
        env.check_joint_target(np.zeros(6))
    below = env.kinematics.ik_position(np.array([0.5, 0.0, -0.05]), Q_HOME, "tcp")   # through the table
    assert below.success
    low = below.q
    with pytest.raises(SafetyError, match="z = .* outside the workspace box"):
        env.check_joint_target(low)
    with pytest.raises(SafetyError, match="joint step of panda_joint1"):
        env.check_joint_target(Q_HOME + np.array([0.9, 0, 0, 0, 0, 0, 0]), Q_HOME)
    T0 = env.kinematics.fk(Q_HOME)
    T1 = T0.copy()
    T1[:3, 3] += [0.2, 0.0, 0.0]
    with pytest.raises(SafetyError, match=r"end-effector step 0.2000 m > limit 0.1000 m"):
        env.check_ee_step(T0, T1)
    assert env.check_joint_target(Q_HOME, Q_HOME + 0.05).shape == (7,)
    with pytest.raises(SafetyError, match="outside"):
        env.check_gripper(1.5)
    assert env.check_gripper(0.25) == 0.25


def test_freshness():
    check_fresh(10.0, 10.05, 0.1, "joint state")
    with pytest.raises(SafetyError, match=r"camera frame is stale: age 0.600 s > limit 0.500 s"):
        check_fresh(10.0, 10.6, 0.5, "camera frame")
    with pytest.raises(SafetyError, match="stale"):
        check_fresh(float("nan"), 10.0, 0.5, "camera frame")


def test_config_validation():
    with pytest.raises(ConfigError, match="velocity_scale=1.5"):
        SafetyConfig(velocity_scale=1.5)
    with pytest.raises(ConfigError, match="workspace"):
        SafetyConfig(workspace_min_m=(1.0, 0.0, 0.0), workspace_max_m=(0.5, 1.0, 1.0))
    with pytest.raises(ConfigError, match="workspace_frame"):
        SafetyConfig(workspace_frame="elbow")
    env = SafetyEnvelope(FR3, Kinematics(FR3), SafetyConfig(joint_margin_rad=0.1, velocity_scale=0.25))
    np.testing.assert_allclose(env.q_max, FR3.q_max - 0.1)
    np.testing.assert_allclose(env.dq_max, FR3.dq_max * 0.25)
    assert PANDA.joint_names[0] == "panda_joint1"
