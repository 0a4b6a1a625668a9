"""The ROS layer without ROS: launch files, parameter files, import rules, message conversions.

What needs rclpy is in test_nodes_ros.py (skipped here, run on a ROS 2 Jazzy host).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vjepa2_ros.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
DOCS = REPO / "docs" / "ros2.md"
SCHEMA_SECTIONS = ("model", "planning", "safety", "control")


def launch_arguments(path: Path) -> dict[str, str | None]:
    """ARGUMENTS = ((name, default, description), ...) of a launch file, read with ast."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "ARGUMENTS" for t in node.targets):
            return {name: default for name, default, _ in ast.literal_eval(node.value)}
    raise AssertionError(f"{path.name} has no ARGUMENTS table")


def documented_arguments(launch_file: str) -> list[str]:
    """Argument names in the docs/ros2.md table under the heading naming `launch_file`."""
    text = DOCS.read_text()
    section = text.split(f"### `{launch_file}`", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE)


def string_constants(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)}


# --- launch files ------------------------------------------------------------------------------------

LAB_REQUIRED = ("robot_ip", "robot_model", "command_interface", "camera_topic", "joint_states_topic",
                "checkpoint", "engine_dir", "params_file", "use_sim_time", "dry_run")


def test_lab_launch_declares_the_documented_arguments():
    args = launch_arguments(LAUNCH / "lab.launch.py")
    assert set(LAB_REQUIRED) <= set(args), f"missing: {set(LAB_REQUIRED) - set(args)}"
    assert documented_arguments("lab.launch.py") == list(args)
    assert all(isinstance(d, str) for d in args.values())          # every lab argument has a default


def test_replay_launch_declares_the_documented_arguments_and_requires_a_bag():
    args = launch_arguments(LAUNCH / "replay.launch.py")
    assert args["bag"] is None                                       # no default: must be given
    assert documented_arguments("replay.launch.py") == list(args)
    text = (LAUNCH / "replay.launch.py").read_text()
    # --clock takes an optional frequency: the bag path must come before it, not after.
    assert re.search(r'"play", bag, "--clock", "\d+"', text)


def test_sim_launch_declares_the_documented_arguments_and_the_session_values():
    args = launch_arguments(LAUNCH / "sim.launch.py")
    assert documented_arguments("sim.launch.py") == list(args)
    assert all(isinstance(d, str) for d in args.values())

    def constant(path: Path, name: str):
        return next(ast.literal_eval(n.value) for n in ast.parse(path.read_text()).body
                    if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == name)
    session = REPO / "vjepa2_ros" / "nodes" / "ros_session.py"
    for name in ("SIM_OVER_DDS", "STATION_TOPICS"):             # the e2e test runs what the launch file runs
        assert constant(LAUNCH / "sim.launch.py", name) == constant(session, name), name


def test_one_gripper_default_in_node_and_lab_launch():
    from vjepa2_ros.nodes.parameters import GRIPPER_DEFAULT, NODE_PARAMETERS
    assert launch_arguments(LAUNCH / "lab.launch.py")["gripper"] == GRIPPER_DEFAULT
    assert next(p.default for p in NODE_PARAMETERS if p.name == "gripper") == GRIPPER_DEFAULT
    assert f'arg.get("gripper", "{GRIPPER_DEFAULT}")' in (LAUNCH / "lab.launch.py").read_text()


def test_replay_forwards_only_arguments_that_lab_declares():
    lab = set(launch_arguments(LAUNCH / "lab.launch.py"))
    tree = ast.parse((LAUNCH / "replay.launch.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "planner")
    forwarded = next(ast.literal_eval(n.value) for n in ast.walk(fn)
                     if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "forwarded")
    update = next(n for n in ast.walk(fn) if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "update")
    assert set(forwarded) | {k.arg for k in update.keywords} <= lab


def test_lab_launch_parameters_are_node_or_schema_parameters():
    from vjepa2_ros.control.config import StackConfig
    from vjepa2_ros.nodes.parameters import NODE_PARAMETER_NAMES
    schema = set(StackConfig().to_flat_dict())
    path = LAUNCH / "lab.launch.py"
    dotted = {s for s in string_constants(path) if re.fullmatch(r"(%s)\.\w+" % "|".join(SCHEMA_SECTIONS), s)}
    assert dotted and dotted <= schema, f"not in the schema: {dotted - schema}"
    tree = ast.parse(path.read_text())
    params = next(n.value for n in ast.walk(tree)
                  if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "parameters")
    keys = {k.value for k in params.keys}
    assert keys <= NODE_PARAMETER_NAMES | {"use_sim_time"}, keys - NODE_PARAMETER_NAMES


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None, reason="launch_ros is not installed (ROS 2 host)")
def test_launch_files_build_their_descriptions():
    from launch.actions import DeclareLaunchArgument
    for name in ("lab.launch.py", "replay.launch.py", "sim.launch.py"):
        spec = importlib.util.spec_from_file_location(name.replace(".", "_"), LAUNCH / name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        ld = module.generate_launch_description()
        declared = [e.name for e in ld.entities if isinstance(e, DeclareLaunchArgument)]
        assert declared == list(launch_arguments(LAUNCH / name))


# --- parameter files ----------------------------------------------------------------------------------------

def _is_ros_value(v) -> bool:
    scalar = (bool, int, float, str)
    if v is None or isinstance(v, scalar):
        return True
    return isinstance(v, list) and bool(v) and len({type(x) for x in v}) == 1 and isinstance(v[0], scalar)


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_parameter_files_validate_and_round_trip_through_ros_parameters(path):
    from vjepa2_ros.control.config import load_config
    from vjepa2_ros.nodes.parameters import schema_parameters, stack_config
    if path.name.startswith("train"):
        pytest.skip("a training config, not a stack config")
    cfg = load_config(path)
    specs = schema_parameters(path)
    assert all(_is_ros_value(s.default) for s in specs), [s for s in specs if not _is_ros_value(s.default)]
    assert stack_config({s.name: s.default for s in specs}) == cfg


def test_lab_yaml_is_the_ros_station_config():
    from vjepa2_ros.control.config import load_config
    cfg = load_config(REPO / "config" / "lab.yaml")
    assert cfg.model.device.startswith("cuda") and cfg.control.robot == "fr3"
    assert cfg.safety.max_state_age_s >= 0.05          # /joint_states at 30 Hz must not fault the loop


def test_every_node_parameter_is_documented():
    from vjepa2_ros.nodes.parameters import NODE_PARAMETERS
    text = DOCS.read_text()
    assert [p.name for p in NODE_PARAMETERS if f"`{p.name}`" not in text] == []


def test_stack_config_from_ros_values_handles_unset_nested_and_bad_values():
    import array
    from vjepa2_ros.nodes.parameters import from_parameter_value, stack_config, to_parameter_value
    cfg = stack_config({"control.rate_hz": 50, "model.checkpoint": "", "control.plan_period_s": None,
                        "safety.workspace_min_m": array.array("d", [0.2, -0.5, 0.0]),
                        "model.encoder": "vit_giant", "model.encoder.preset": "vit_tiny",
                        "model.predictor": "ac_tiny", "use_sim_time": True})
    assert cfg.control.rate_hz == 50.0 and cfg.model.checkpoint is None and cfg.control.plan_period_s is None
    assert cfg.safety.workspace_min_m == (0.2, -0.5, 0.0)
    assert cfg.model.encoder == {"preset": "vit_tiny"}             # the nested override wins
    assert to_parameter_value((0, 0.5, 1)) == [0.0, 0.5, 1.0] and to_parameter_value(()) is None
    assert from_parameter_value("") is None
    with pytest.raises(ConfigError, match="rate_hz"):
        stack_config({"control.rate_hz": -1.0})
    with pytest.raises(ConfigError, match="robot"):
        stack_config({"control.robot": "ur5"})


# --- import rules -------------------------------------------------------------------------------------------------

def _top_level_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def _all_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_only_nodes_import_rclpy():
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "vjepa2_ros").rglob("*.py")
                 if "nodes" not in p.relative_to(REPO / "vjepa2_ros").parts
                 and any(m.split(".")[0] == "rclpy" for m in _all_imports(p))]
    assert offenders == []


def test_planner_node_imports_nothing_heavy_at_module_level():
    allowed_roots = {"__future__", "array", "dataclasses", "json", "os", "pathlib", "signal", "subprocess", "sys",
                     "threading", "time", "typing",
                     "numpy", "rclpy", "rcl_interfaces",
                     "control_msgs", "diagnostic_msgs", "geometry_msgs", "sensor_msgs", "std_msgs", "std_srvs",
                     "trajectory_msgs"}
    allowed_ours = {"vjepa2_ros.errors", "vjepa2_ros.nodes", "vjepa2_ros.nodes.parameters",
                    "vjepa2_ros.nodes.process",  # nodes: ros_session
                    "vjepa2_ros.robot.kinematics"}                                   # numpy only
    for path in (REPO / "vjepa2_ros" / "nodes").glob("*.py"):
        for module in _top_level_imports(path):
            assert module.split(".")[0] in allowed_roots | sys.stdlib_module_names or module in allowed_ours or (
                path.name == "topic_backend.py" and module.startswith("vjepa2_ros.")), f"{path.name}: {module}"


def test_ros_free_node_helpers_do_not_load_torch_or_engines():
    code = ("import sys, vjepa2_ros.nodes.parameters, vjepa2_ros.nodes.topic_backend; "
            "print(sorted(m for m in ('torch', 'tensorrt', 'onnxruntime', 'cv2', 'rclpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- the message conversions the node relies on --------------------------------------------------------------------

NODE_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")         # docs/ros2.md lists these


def _image(rgb: np.ndarray, encoding: str):
    from vjepa2_ros.data.messages import rgb_to_image_msg
    return rgb_to_image_msg(rgb, stamp_ns=1_500_000_000, encoding=encoding)


@pytest.mark.parametrize("encoding", NODE_ENCODINGS)
def test_every_documented_raw_encoding_converts(encoding):
    from vjepa2_ros.data.messages import image_msg_to_rgb
    rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    out = image_msg_to_rgb(_image(rgb, encoding))
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8
    if encoding != "mono8":
        np.testing.assert_array_equal(out, rgb)
    assert encoding in DOCS.read_text()


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_images_convert(fmt):
    from vjepa2_ros.data.messages import image_msg_to_rgb, rgb_to_compressed_msg
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, 8:] = (200, 30, 60)
    out = image_msg_to_rgb(rgb_to_compressed_msg(rgb, stamp_ns=0, fmt=fmt))
    tol = 0 if fmt == "png" else 12                     # jpeg: away from the edge (chroma subsampling)
    for cols in (slice(0, 4), slice(12, 16)):
        assert np.abs(out[:, cols].astype(int) - rgb[:, cols]).max() <= tol


def test_bad_images_are_data_errors():
    from vjepa2_ros.data.messages import image_msg_to_rgb
    msg = _image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    msg.encoding = "16UC1"                                          # a depth image on the colour topic
    with pytest.raises(DataError, match="16UC1"):
        image_msg_to_rgb(msg)
    msg = _image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    msg.data = msg.data[:10]                                        # truncated
    with pytest.raises(DataError, match="bytes"):
        image_msg_to_rgb(msg)


@pytest.mark.parametrize("robot", ["panda", "fr3"])
def test_joint_states_are_reordered_by_the_arm_joint_names(robot):
    from vjepa2_ros.data.messages import joint_state_to_array
    from vjepa2_ros.robot.kinematics import arm_spec
    names = list(arm_spec(robot).joint_names)
    shuffled = names[::-1] + [f"{robot}_finger_joint1"]
    msg = SimpleNamespace(name=shuffled, position=[float(i) for i in range(8)],
                          header=SimpleNamespace(stamp=SimpleNamespace(sec=3, nanosec=500_000_000)))
    q, stamp = joint_state_to_array(msg, names)
    np.testing.assert_array_equal(q, [6, 5, 4, 3, 2, 1, 0])
    assert stamp == 3.5
    other = "fr3" if robot == "panda" else "panda"
    with pytest.raises(DataError, match="lacks joints"):
        joint_state_to_array(msg, arm_spec(other).joint_names)
