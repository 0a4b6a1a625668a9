"""`vjepa2-ros bench ros`: its arguments and its table (the 60 s run itself is a benchmark, not a test)."""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2 Jazzy) is not installed: scripts/bootstrap.sh installs it")

from vjepa2_ros.nodes import bench_ros  # noqa: E402


def test_set_values_parse_to_ros_parameter_types():
    assert [bench_ros._value(v) for v in ("false", "True", "3", "0.5", "cpu")] == [False, True, 3, 0.5, "cpu"]


def test_table_reports_every_figure():
    result = {"seconds": 60.0, "cpu": "AMD EPYC", "cores": 2, "domain_id": 7,
              "commands": {"count": 5900, "rate_hz": 98.4,
                           "period_ms": bench_ros._percentiles([10.0] * 98 + [15.0, 40.0])},
              "joint_state_age_ms": bench_ros._percentiles([5.0, 7.0, 30.0]),
              "plans": {"count": 45, "per_s": 0.75},
              "reach": {"start_cm": 19.7, "final_cm": 1.2, "min_cm": 1.0, "reached_5cm_after_s": 21.0},
              "exit_codes": {"planner_node": 0, "sim_station": 0}}
    text = bench_ros.table(result)
    for expected in ("98.4 Hz (5900)", "p50 10.0 ms", "max 40.0 ms", "p50 7.0 ms", "0.75 per s",
                     "19.7 cm -> 1.2 cm", "<= 5 cm after 21 s", "planner_node 0"):
        assert expected in text, (expected, text)
    assert bench_ros._percentiles([])["n"] == 0
