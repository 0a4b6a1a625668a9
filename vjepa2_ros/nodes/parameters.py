"""ROS parameters of the planner node: the stack's YAML schema flattened, plus the node's own.

One schema, two front ends: every leaf of `StackConfig` is a ROS parameter under its dotted
name ("control.rate_hz", "model.checkpoint"), with the config file's value as its default, and
`stack_config(values)` turns parameter values back into a checked `StackConfig`. ROS parameters
cannot hold null, so an optional field that is unset is a parameter with no value (NOT_SET),
and an empty string means unset too (a launch argument left empty).

No rclpy here: the node turns `ParameterSpec`s into `declare_parameter` calls.
"""

from __future__ import annotations

import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vjepa2_ros.errors import ConfigError

COMMAND_INTERFACES = ("trajectory", "position", "franky")
CAMERA_TRANSPORTS = ("raw", "compressed")
GRIPPER_INTERFACES = ("action", "topic", "none")
GRIPPER_DEFAULT = "action"       # lab.launch.py's `gripper` default is the same (test_nodes_static checks)
SECTIONS = ("model", "planning", "safety", "control")
CALIBRATION = "calibration"                          # the node's ~/calibrate parameters: calibration.*
CALIBRATION_OUT_DIR = "~/.ros/vjepa2_calibration"


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: Any                 # None: declared without a value (NOT_SET, any type may be set)
    description: str
    read_only: bool = False


# The node's own parameters (everything else is the stack schema).
NODE_PARAMETERS = (
    ParameterSpec("config_file", "", "YAML file in the vjepa2-ros schema; its values become the defaults of "
                  "the schema parameters (model.*, planning.*, safety.*, control.*). Read at start.", read_only=True),
    ParameterSpec("command_interface", "trajectory", "trajectory: trajectory_msgs/JointTrajectory on "
                  "'joint_trajectory'; position: std_msgs/Float64MultiArray on 'commands'; franky: drive the "
                  "arm directly (robot_ip) and publish its joint states and flange pose. Applied on configure."),
    ParameterSpec("camera_transport", "raw", "raw: sensor_msgs/Image on 'camera/image'; compressed: "
                  "sensor_msgs/CompressedImage on 'camera/image/compressed'. Applied on configure."),
    ParameterSpec("gripper", GRIPPER_DEFAULT, "action: control_msgs/GripperCommand goals on 'gripper_action' "
                  "(without control_msgs installed: falls back to topic, and says so); topic: std_msgs/Float64 "
                  "closedness (0 open .. 1 closed) on 'gripper_command'; none. Ignored with command_interface "
                  "franky (franky drives the gripper). Applied on configure."),
    ParameterSpec("gripper_open_position_m", 0.04, "GripperCommand position for an open gripper (franka_gripper: "
                  "finger position, half the width); closed is 0."),
    ParameterSpec("gripper_max_effort_n", 20.0, "GripperCommand max_effort when closing (N)."),
    ParameterSpec("robot_ip", "", "FCI address of the arm for command_interface franky. Applied on configure."),
    ParameterSpec("base_frame", "", "frame_id of the published flange pose (default: <robot>_link0)."),
    ParameterSpec("goal_image_path", "", "an image file that becomes the goal when set (checked on set)."),
    ParameterSpec("goal_sequence", None, "a list of image files: sub-goals in order (checked on set); the "
                  "planner advances by control.goal_advance_after_steps / goal_advance_below_energy."),
    # ~/calibrate (control.calibrate.CalibrationConfig; checked on set, read at each call)
    ParameterSpec("calibration.moves", 12, "~/calibrate: random end-effector moves (at least 3; 10-20 is plenty)."),
    ParameterSpec("calibration.step_m", 0.04, "~/calibrate: length of each move (m, 0.005 to 0.075)."),
    ParameterSpec("calibration.samples", 128, "~/calibrate: CEM samples per inferred move."),
    ParameterSpec("calibration.iterations", 6, "~/calibrate: CEM iterations per inferred move."),
    ParameterSpec("calibration.fit", "scan", "~/calibrate: the estimate that becomes the action frame: scan (the "
                  "pooled yaw scan), yaw or full (Kabsch on the per-move inferences)."),
    ParameterSpec("calibration.seed", 0, "~/calibrate: seeds the moves and the inference."),
    ParameterSpec("calibration.out_dir", CALIBRATION_OUT_DIR, "~/calibrate: each call writes a calibrate-<UTC time> "
                  "folder here (action_frame.yaml, stack.yaml, calibration.json, calibration.png); ~ is expanded."),
)
NODE_PARAMETER_NAMES = frozenset(p.name for p in NODE_PARAMETERS)


def to_parameter_value(value: Any) -> Any:
    """A schema value as a ROS parameter value: tuples -> lists, ints in float lists -> floats."""
    if isinstance(value, (list, tuple)):
        items = list(value)
        if any(isinstance(v, float) for v in items) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                            for v in items):
            items = [float(v) for v in items]
        return items if items else None              # an empty list has no ROS type: unset
    return value


def from_parameter_value(value: Any) -> Any:
    """A ROS parameter value as a schema value: NOT_SET (None) and "" -> None, arrays -> lists."""
    if isinstance(value, array.array):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    if value == "":
        return None
    return value


def schema_parameters(config_file: str | Path | None) -> list[ParameterSpec]:
    """One ParameterSpec per leaf of the schema, defaulting to `config_file`'s values."""
    from vjepa2_ros.control.config import StackConfig, load_config
    cfg = load_config(config_file) if config_file else StackConfig()
    source = f"from {config_file}" if config_file else "schema default"
    return [ParameterSpec(name, to_parameter_value(value), f"vjepa2-ros schema {name} ({source}); "
                          "applied on configure")
            for name, value in cfg.to_flat_dict().items()]


def stack_config(values: dict[str, Any]):
    """Parameter values {dotted name: value} (schema names only) -> a checked StackConfig.

    A nested override ("model.encoder.preset") replaces the leaf above it ("model.encoder").
    """
    from vjepa2_ros.control.config import StackConfig
    flat = {name: from_parameter_value(v) for name, v in values.items() if name.split(".")[0] in SECTIONS}
    for name in list(flat):
        if any(other.startswith(name + ".") for other in flat):
            del flat[name]
    return StackConfig.from_flat_dict(flat)


def calibration_config(values: dict[str, Any]):
    """The calibration.* parameter values {dotted name: value} -> a checked CalibrationConfig
    (ConfigError names a bad value); calibration.out_dir is not part of it."""
    from vjepa2_ros.control.calibrate import CalibrationConfig
    fields = {name.split(".", 1)[1]: value for name, value in values.items()
              if name.startswith(CALIBRATION + ".") and name != f"{CALIBRATION}.out_dir"}
    try:
        return CalibrationConfig(**fields)
    except TypeError as e:                              # a name CalibrationConfig does not have
        raise ConfigError(f"calibration parameters: {e}") from None


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"parameter {name} must be one of {allowed}, got {value!r}")
    return value
