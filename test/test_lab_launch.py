"""launch_testing: lab.launch.py starts the installed planner_node, configures and activates it.

Runs on a ROS 2 host after `colcon build` and `source install/setup.bash` (the launch file starts
the installed executable); skipped where launch_testing is missing. The node gets a tiny random
model on the CPU through params_file, with no robot and no camera: it must come up active,
holding, and say so on /diagnostics.
"""

import tempfile
import time
import unittest
from pathlib import Path

import pytest

launch_testing = pytest.importorskip("launch_testing", reason="launch_testing is not installed (no wheel; a ROS 2 install has it)")

import launch_testing.actions  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from lifecycle_msgs.srv import GetState  # noqa: E402

LAB = Path(__file__).resolve().parents[1] / "launch" / "lab.launch.py"
TINY_CONFIG = """
model: {encoder: vit_tiny, predictor: ac_tiny, runtime: torch, device: cpu}
planning: {samples: 16, topk: 4, iterations: 2}
control: {robot: fr3, rate_hz: 50.0, model_step_s: 0.1}
"""


@pytest.mark.launch_test
def generate_test_description():
    params = Path(tempfile.mkdtemp()) / "tiny.yaml"
    params.write_text(TINY_CONFIG)
    lab = IncludeLaunchDescription(PythonLaunchDescriptionSource(str(LAB)), launch_arguments={
        "params_file": str(params), "robot_model": "fr3", "gripper": "none", "autostart": "true"}.items())
    return LaunchDescription([lab, launch_testing.actions.ReadyToTest()]), {}


class TestLabLaunch(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node("lab_launch_test")

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_node_is_configured_and_activated(self, proc_output):
        proc_output.assertWaitFor("configured: torch runtime on cpu", timeout=120)
        client = self.node.create_client(GetState, "/vjepa2_planner/get_state")
        self.assertTrue(client.wait_for_service(timeout_sec=30.0))
        deadline = time.monotonic() + 60.0
        label = ""
        while time.monotonic() < deadline and label != "active":
            future = client.call_async(GetState.Request())
            rclpy.spin_until_future_complete(self.node, future, timeout_sec=5.0)
            label = future.result().current_state.label if future.done() else ""
            time.sleep(0.5)
        self.assertEqual(label, "active")

    def test_diagnostics_report_the_lifecycle_state(self):
        seen = []
        sub = self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                            lambda msg: seen.extend(msg.status), 10)

        def active() -> bool:
            return any(s.name.startswith("/vjepa2_planner") and
                       any(kv.key == "lifecycle" and kv.value == "active" for kv in s.values) for s in seen)
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline and not active():
            rclpy.spin_once(self.node, timeout_sec=0.5)
        self.node.destroy_subscription(sub)
        self.assertTrue(active(), [s.message for s in seen[-5:]])
