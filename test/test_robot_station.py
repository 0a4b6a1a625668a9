"""The simulated station without ROS: trajectory interpolation in time, commands, stepping, stats."""

from __future__ import annotations

import numpy as np
import pytest

from vjepa2_ros.errors import DataError
from vjepa2_ros.robot.kinematics import PANDA
from vjepa2_ros.robot.station import CommandStats, TrajectoryFollower, check_trajectory

NAMES = list(PANDA.joint_names)
Q0 = np.array([0.0, -0.6, 0.0, -2.5, 0.0, 1.9, 0.0])


def test_follower_interpolates_linearly_from_the_last_command_and_holds_the_end():
    f = TrajectoryFollower(Q0)
    target = Q0 + 0.1
    f.set(np.array([0.5]), target[None], None, start_s=10.0)
    np.testing.assert_allclose(f.sample(9.0), Q0)                      # before the start: hold
    np.testing.assert_allclose(f.sample(10.25), Q0 + 0.05)              # halfway in time, halfway in space
    np.testing.assert_allclose(f.sample(10.5), target)
    np.testing.assert_allclose(f.sample(20.0), target)                  # after the end: hold the last point


def test_a_new_trajectory_starts_where_the_old_one_was_cut():
    f = TrajectoryFollower(Q0)
    f.set(np.array([1.0]), (Q0 + 1.0)[None], None, start_s=0.0)
    cut = f.sample(0.4)                                                 # 40 % of the way
    f.set(np.array([0.1]), (Q0 - 1.0)[None], None, start_s=0.4)
    np.testing.assert_allclose(f.sample(0.4), cut)                      # no jump at the switch
    np.testing.assert_allclose(f.sample(0.45), (cut + Q0 - 1.0) / 2)


def test_points_with_velocities_are_cubic_hermite_and_pass_through_every_point():
    f = TrajectoryFollower(Q0)
    t = np.array([0.0, 1.0, 2.0])
    q = np.stack([Q0, Q0 + 0.2, Q0 + 0.3])
    dq = np.stack([np.zeros(7), np.full(7, 0.15), np.zeros(7)])
    f.set(t, q, dq, start_s=5.0)
    for k in range(3):
        np.testing.assert_allclose(f.sample(5.0 + t[k]), q[k], atol=1e-12)
    h = 1e-5                                                            # slope at the middle point = its velocity
    slope = (f.sample(6.0 + h) - f.sample(6.0 - h)) / (2 * h)
    np.testing.assert_allclose(slope, dq[1], atol=1e-4)


def test_check_trajectory_reorders_by_name_and_rejects_bad_trajectories():
    shuffled = NAMES[::-1]
    t, q, dq = check_trajectory(shuffled, NAMES, [0.1, 0.2], [list(range(7)), list(range(7, 14))])
    np.testing.assert_array_equal(q[0], np.arange(7)[::-1]) and np.testing.assert_array_equal(t, [0.1, 0.2])
    assert dq is None
    cases = [
        (("fr3_joint1",) * 7, [0.1], [[0.0] * 7], "missing"),
        (NAMES, [], [], "no points"),
        (NAMES, [0.1], [[0.0] * 5], "5 positions"),
        (NAMES, [0.2, 0.1], [[0.0] * 7, [0.0] * 7], "increasing"),
        (NAMES, [0.1], [[float("nan")] * 7], "non-finite"),
    ]
    for names, times, positions, expected in cases:
        with pytest.raises(DataError, match=expected):
            check_trajectory(names, NAMES, times, positions)


def test_command_stats_rate_and_periods():
    stats = CommandStats()
    for k in range(101):
        stats.record(100.0 + 0.01 * k + (0.02 if k == 50 else 0.0))    # 100 Hz, one late command
    s = stats.summary()
    assert s["count"] == 101 and s["rate_hz"] == pytest.approx(100.0, rel=1e-3)
    assert s["period_p50_ms"] == pytest.approx(10.0, abs=1e-6) and s["period_max_ms"] == pytest.approx(30.0)
    assert stats.summary(since_s=1e9)["count"] == 0


@pytest.mark.slow
def test_station_follows_a_trajectory_in_simulated_time_and_rejects_bad_commands():
    from vjepa2_ros.robot.sim import SimConfig
    from vjepa2_ros.robot.station import SimStation
    clock = [0.0]
    station = SimStation(SimConfig(render=False), clock=lambda: clock[0])
    try:
        q_start = station.state().q
        target = q_start + np.array([0.2, 0.1, 0.0, 0.1, 0.0, 0.0, 0.0])
        station.command_trajectory(NAMES, [1.0], [target.tolist()], start_s=0.0)
        station.step_to(0.5)                                          # halfway: between start and target
        mid = station.state()
        assert mid.stamp_s == pytest.approx(0.5, abs=0.003)
        assert 0.2 < (mid.q[0] - q_start[0]) / 0.2 < 0.8
        for k in range(1, 41):                                        # then 2 s to settle
            station.step_to(0.5 + 0.05 * k)
        np.testing.assert_allclose(station.state().q, target, atol=0.01)
        with pytest.raises(DataError):
            station.command_trajectory(NAMES[:6], [0.1], [[0.0] * 6])
        with pytest.raises(DataError, match="7 finite"):
            station.command_positions([0.0] * 6)
        with pytest.raises(DataError, match="closedness"):
            station.command_gripper(1.5)
        assert station.commands.summary()["count"] == 1               # rejected commands are not counted
        station.command_positions(q_start)                            # forward position controller
        for k in range(1, 41):
            station.step_to(2.5 + 0.05 * k)
        np.testing.assert_allclose(station.state().q, q_start, atol=0.01)
        station.command_gripper(1.0)
        for k in range(1, 21):
            station.step_to(4.5 + 0.05 * k)
        assert station.state().fingers_m.sum() < 0.01                 # closed
    finally:
        station.close()
