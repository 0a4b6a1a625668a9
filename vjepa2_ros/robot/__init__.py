"""Robot side: kinematics (Panda / FR3), the safety envelope, and robot backends (franky, MuJoCo sim).

Backends are created by name with `make_backend("sim" | "franky", ...)`; MuJoCo and franky are
imported only when their backend is built.
"""

from vjepa2_ros.robot.backend import BACKENDS, Camera, CameraFrame, RobotBackend, RobotState, make_backend
from vjepa2_ros.robot.kinematics import FR3, PANDA, ArmSpec, IKResult, Kinematics, arm_spec
from vjepa2_ros.robot.safety import SafetyConfig, SafetyEnvelope, check_fresh

__all__ = [
    "ArmSpec", "BACKENDS", "Camera", "CameraFrame", "FR3", "IKResult", "Kinematics", "PANDA", "RobotBackend",
    "RobotState", "SafetyConfig", "SafetyEnvelope", "arm_spec", "check_fresh", "make_backend",
]
