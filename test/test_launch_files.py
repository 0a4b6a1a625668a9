"""The launch files under a real LaunchService: autostart once, shutdown when the node dies, Ctrl-C.

Needs `launch` and `launch_ros` (a ROS 2 install; there are no wheels for them): skipped without
them. The launch runs in a subprocess (as `ros2 launch` does) and starts the installed console
scripts; where the package is not in an ament index (a pip install), a scratch index in tmp_path
points at them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

if importlib.util.find_spec("launch_ros") is None or importlib.util.find_spec("launch") is None:
    pytest.skip("launch / launch_ros are not installed (no wheels exist; a ROS 2 install has them)",
                allow_module_level=True)
rclpy = pytest.importorskip("rclpy")

from vjepa2_ros.nodes import ros_session as rs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = """
model: {encoder: vit_tiny, predictor: ac_tiny, runtime: torch, device: cpu}
planning: {samples: 16, topk: 4, iterations: 2}
control: {robot: panda, rate_hz: 50.0, model_step_s: 0.1, planner_process: false}
"""
RUNNER = """
import sys
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
path, *args = sys.argv[1:]
service = LaunchService(argv=[])
service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
    PythonLaunchDescriptionSource(path), launch_arguments=[tuple(a.split(":=", 1)) for a in args])]))
sys.exit(service.run())
"""


def _ament_prefix(tmp_path: Path) -> str | None:
    """A scratch ament index with the console scripts, unless the package is installed in one."""
    try:
        from ament_index_python.packages import get_package_prefix
        get_package_prefix("vjepa2_ros")
        return None
    except Exception:
        pass
    prefix = tmp_path / "ament"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "vjepa2_ros").touch()
    (prefix / "share" / "vjepa2_ros" / "config").mkdir(parents=True)
    (prefix / "lib" / "vjepa2_ros").mkdir(parents=True)
    for script in ("planner_node", "sim_station"):
        (prefix / "lib" / "vjepa2_ros" / script).symlink_to(rs.console_script(script))
    return str(prefix)


@pytest.fixture
def launch(tmp_path):
    """launch(file, **arguments) -> (Popen, log path, monitor session); everything stopped after."""
    started = []
    domain = rs.private_domain_id()
    env = rs.ros_env(domain)
    prefix = _ament_prefix(tmp_path)
    if prefix:
        env["AMENT_PREFIX_PATH"] = os.pathsep.join(filter(None, [prefix, env.get("AMENT_PREFIX_PATH")]))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    session = rs.RosSession(domain)

    def start(name: str, **arguments: str):
        log = tmp_path / f"{name}.log"
        out = open(log, "w")
        proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(REPO / "launch" / name)]
                                + [f"{k}:={v}" for k, v in arguments.items()],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path),
                                start_new_session=True,          # its own process group, as in a terminal
                                preexec_fn=rs.normal_priority)
        out.close()
        started.append(proc)
        return proc, log
    yield start, session
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    session.close()


def _planner_pid(log: Path) -> int:
    match = re.search(r"planner_node-\d+\]: process started with pid \[(\d+)\]", log.read_text())
    assert match, log.read_text()[-2000:]
    return int(match.group(1))


def _wait_state(m, label: str, timeout_s: float) -> bool:
    def reached() -> bool:
        try:
            return m.lifecycle_state() == label
        except TimeoutError:
            return False
    return rs.wait_for(reached, timeout_s, 0.5)


def test_lab_launch_activates_once_stays_deactivated_and_ends_with_an_error_when_the_node_dies(launch, tmp_path):
    start, session = launch
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    proc, log = start("lab.launch.py", params_file=str(config), robot_model="panda", gripper="none")
    m = session.monitor
    assert _wait_state(m, "active", 120), log.read_text()[-3000:]
    assert m.change_state("deactivate")
    time.sleep(3.0)                                   # autostart must not activate it again
    assert m.lifecycle_state() == "inactive", log.read_text()[-3000:]
    os.kill(_planner_pid(log), signal.SIGKILL)        # the node dies: the launch ends, with an error
    assert proc.wait(60) == 1, log.read_text()[-3000:]
    assert "vjepa2_planner exited" in log.read_text()


def test_sim_launch_brings_up_station_and_planner_and_ctrl_c_exits_0(launch):
    start, session = launch
    proc, log = start("sim.launch.py", **{"dry_run": "true"})
    m = session.monitor
    assert _wait_state(m, "active", 180), log.read_text()[-3000:]
    assert rs.wait_for(lambda: len(m.since("joint_states", 0)) > 20, 30)
    goal, _ = rs.goal_image_for_offset()
    t0 = time.monotonic()
    m.publish_goal(goal)
    assert rs.wait_for(lambda: len(m.since("actions", t0)) >= 1, 120), log.read_text()[-3000:]
    assert m.since("commands", 0) == []               # dry run
    os.killpg(proc.pid, signal.SIGINT)                # Ctrl-C: the terminal signals the whole group
    assert proc.wait(60) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "SIGINT: braking" in text and "process has finished cleanly" in text, text[-3000:]
