"""Robot side: kinematics (Panda / FR3), the safety envelope, and robot backends (franky, MuJoCo sim).

Backends are created by name with `make_backend("sim" | "franky", ...)`; the simulator and franky
are imported only when their backend is built.
"""

from vjepa2_ros.robot.kinematics import FR3, PANDA, ArmSpec, IKResult, Kinematics, arm_spec

__all__ = ["ArmSpec", "FR3", "IKResult", "Kinematics", "PANDA", "arm_spec"]
