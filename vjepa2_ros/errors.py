"""The exception family of vjepa2_ros.

Every error the package raises on purpose derives from `Vjepa2RosError`, so a caller (a node,
the CLI, a test) can catch the family and report its message. Messages say what was wrong and
what was expected.
"""


class Vjepa2RosError(Exception):
    """Root of all errors raised by vjepa2_ros on purpose."""


class ConfigError(Vjepa2RosError, ValueError):
    """A configuration value, a parameter or a call argument is invalid."""


class CheckpointError(Vjepa2RosError):
    """A checkpoint file is missing, corrupt, unsafe or does not fit the model."""


class EngineError(Vjepa2RosError):
    """An inference engine (ONNX, TensorRT) is missing, corrupt, mismatched or unavailable."""


class DataError(Vjepa2RosError):
    """A recording, episode, bag or message is malformed or incomplete."""


class PlanningError(Vjepa2RosError):
    """The planner cannot produce a plan (no goal, bad latent, non-finite values)."""


class SafetyError(Vjepa2RosError):
    """A command would violate the safety envelope; the robot must hold."""
