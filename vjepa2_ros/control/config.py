"""The one configuration schema of the stack, shared by the CLI and the ROS nodes.

    model:    which networks, weights, engines and runtime; camera crop / ROI   (ModelConfig)
    planning: the CEM planner                                                  (CEMConfig)
    safety:   the safety envelope                                              (SafetyConfig)
    control:  rate, mode, model step, dry run, sub-goals, arm, backend         (ControlConfig)
    franky:   the franky backend's connection, dynamics factor and gripper     (FrankyConfig)

`load_config(path | dict)` builds a frozen `StackConfig`; unknown keys and bad values are
rejected with the YAML path of the field (`control.rate_hz: ...`). Missing keys take the
defaults below. ROS parameters are flat: `to_flat_dict()` / `from_flat_dict()` use dotted names
("control.rate_hz", "model.preprocess.roi").
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from vjepa2_ros.errors import ConfigError
from vjepa2_ros.model import EncoderConfig, PredictorConfig, PreprocessConfig
from vjepa2_ros.model.config import config_from_dict
from vjepa2_ros.planning.cem import CEMConfig
from vjepa2_ros.robot.franky_backend import FrankyConfig
from vjepa2_ros.robot.safety import SafetyConfig

RUNTIMES = ("torch", "onnxruntime", "tensorrt")
DTYPES = ("float32", "float16", "bfloat16")
MODES = ("async", "blocking")
ROBOTS = ("panda", "fr3")
BACKENDS = ("sim", "franky")
EE_FRAMES = ("flange", "tcp")


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The world model: a preset name or a dict of fields ({"preset": name, **overrides}) per network."""

    encoder: str | dict = "vit_giant"              # model.ENCODER_PRESETS name, or a dict
    predictor: str | dict = "ac_vit_giant"         # model.PREDICTOR_PRESETS name, or a dict
    checkpoint: str | None = None                  # AC checkpoint (.pt / .safetensors); None: random weights
    encoder_checkpoint: str | None = None          # separate encoder file (default: the AC file's encoder)
    engine_dir: str | None = None                  # exported ONNX / TensorRT engines (runtime != "torch")
    runtime: str = "torch"                         # "torch" | "onnxruntime" | "tensorrt"
    device: str = "cpu"                            # torch device string, e.g. "cuda:0"
    dtype: str = "float32"                         # "float32" | "float16" | "bfloat16"
    seed: int = 0                                  # random initialisation when there is no checkpoint
    roi: tuple[int, int, int, int] | None = None   # camera crop (x, y, width, height) px before the centre crop

    def __post_init__(self) -> None:
        _one_of("runtime", self.runtime, RUNTIMES)
        _one_of("dtype", self.dtype, DTYPES)
        if self.runtime != "torch" and self.engine_dir is None:
            raise ConfigError(f"engine_dir is required for runtime {self.runtime!r} (the folder of exported engines)")
        for what, build in (("encoder", self.encoder_config), ("predictor", self.predictor_config)):
            try:                                   # fail at load time, not at first use
                build()
            except ConfigError as e:
                raise ConfigError(f"{what}: {e}") from None
        self.preprocess_config()

    def encoder_config(self) -> EncoderConfig:
        return config_from_dict("encoder", self.encoder)

    def predictor_config(self) -> PredictorConfig:
        return config_from_dict("predictor", self.predictor)

    def preprocess_config(self) -> PreprocessConfig:
        """ROI, then the planner's centre square crop resized to the predictor's img_size."""
        img = self.predictor_config().img_size
        return PreprocessConfig(crop_size=img if isinstance(img, int) else img[0], mode="inference", roi=self.roi)


@dataclass(frozen=True)
class ControlConfig:
    """The control loop: rates and modes, the arm and its backend, sub-goals, threads."""

    rate_hz: float = 100.0                 # joint command stream rate
    mode: str = "async"                    # "async": plan in a thread while moving; "blocking": stop, plan, move
    model_step_s: float = 0.25             # duration one model action is spread over (paper: 0.25 s, see ARCHITECTURE)
    plan_period_s: float | None = None     # async: start a plan at most this often; None = model_step_s, 0 = flat out
    dry_run: bool = False                  # plan and publish, never command the robot
    robot: str = "panda"                   # "panda" | "fr3"
    backend: str = "sim"                   # "sim" | "franky"
    ee_frame: str = "flange"               # the frame the model's states are in: "flange" (DROID) | "tcp"
    goal_advance_after_steps: int | None = None     # sub-goals: next goal after this many plans, or
    goal_advance_below_energy: float | None = None  # when the energy drops below this
    hold_rule: bool = False                # planner: keep still unless the plan's energy beats the zero action's
    goal_stop_below_energy: float | None = None  # planner: at the final goal once the observation's energy to it is
                                                 # below this: keep still, no search (None: off)
    gripper_deadband: float = 0.05         # closedness change (0..1) below which the gripper is not commanded
    settle_velocity_rad_s: float = 0.05    # blocking mode: plan only once every joint is slower than this
    record_dir: str | None = None          # write what the loop saw and decided here (None: no recording)
    command_priority: int | None = None    # SCHED_FIFO priority 1..99 of the command thread (needs rtprio); None: normal
    planner_nice: int = 10                 # nice of the planner (thread or process, 0..19) in real time: commands go first
    gil_switch_interval_s: float | None = 0.001  # CPython GIL hand-over interval while the loop runs (default 0.005):
                                                 # the longest the command thread waits for the planner's Python code
    planner_process: bool = True           # plan in a child process that owns torch and the GPU (PlannerProcess);
                                           # false: in a thread of this process (tests, debugging)
    plan_timeout_s: float = 30.0           # planner process: a plan or goal not back within this is a hung planner: fault
    planner_start_timeout_s: float = 300.0  # planner process: starting it (loading the model) may take this long
    planner_threads: int | None = None     # torch threads of the planner process; None: torch's default (one per
                                           # core), at most the CPUs but one: on 2 busy cores 2 threads collapse
                                           # (sim model: 133 s a plan vs 10 s with 1 thread at load ~16)

    def __post_init__(self) -> None:
        _positive("rate_hz", self.rate_hz)
        _one_of("mode", self.mode, MODES)
        _positive("model_step_s", self.model_step_s)
        if self.model_step_s < 1.0 / self.rate_hz:
            raise ConfigError(f"model_step_s {self.model_step_s} must be at least one control period "
                              f"(1 / rate_hz = {1.0 / self.rate_hz})")
        if self.plan_period_s is not None and self.plan_period_s < 0:
            raise ConfigError(f"plan_period_s must be >= 0 or null, got {self.plan_period_s}")
        _one_of("robot", self.robot, ROBOTS)
        _one_of("backend", self.backend, BACKENDS)
        _one_of("ee_frame", self.ee_frame, EE_FRAMES)
        if self.goal_advance_after_steps is not None and self.goal_advance_after_steps < 1:
            raise ConfigError(f"goal_advance_after_steps must be >= 1 or null, got {self.goal_advance_after_steps}")
        if self.goal_advance_below_energy is not None and not self.goal_advance_below_energy > 0:
            raise ConfigError(f"goal_advance_below_energy must be > 0 or null, got {self.goal_advance_below_energy}")
        if self.goal_stop_below_energy is not None and not self.goal_stop_below_energy > 0:
            raise ConfigError(f"goal_stop_below_energy must be > 0 or null, got {self.goal_stop_below_energy}")
        if not 0 <= self.gripper_deadband < 1:
            raise ConfigError(f"gripper_deadband must be in [0, 1), got {self.gripper_deadband}")
        _positive("settle_velocity_rad_s", self.settle_velocity_rad_s)
        if self.command_priority is not None and not 1 <= self.command_priority <= 99:
            raise ConfigError(f"command_priority must be 1..99 (SCHED_FIFO) or null, got {self.command_priority}")
        if self.gil_switch_interval_s is not None and not 1e-5 <= self.gil_switch_interval_s <= 0.1:
            raise ConfigError(f"gil_switch_interval_s must be in [1e-05, 0.1] s or null, got {self.gil_switch_interval_s}")
        if not 0 <= self.planner_nice <= 19:
            raise ConfigError(f"planner_nice must be in 0..19, got {self.planner_nice}")
        _positive("plan_timeout_s", self.plan_timeout_s)
        _positive("planner_start_timeout_s", self.planner_start_timeout_s)
        if self.planner_threads is not None and self.planner_threads < 1:
            raise ConfigError(f"planner_threads must be >= 1 or null, got {self.planner_threads}")

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz


@dataclass(frozen=True)
class StackConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    planning: CEMConfig = field(default_factory=CEMConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    franky: FrankyConfig = field(default_factory=FrankyConfig)    # used when control.backend is "franky";
                                                                  # its arm follows control.robot

    def __post_init__(self) -> None:
        # A plan the envelope must refuse is a fault waiting to happen: the largest end-effector
        # step CEM may propose (the box's diagonal, or the L1 radius) must fit safety.max_ee_step_m.
        p = self.planning
        largest = p.maxnorm * (3 ** 0.5 if p.bound == "box" else 1.0)
        if largest > self.safety.max_ee_step_m:
            raise ConfigError(f"planning: maxnorm {p.maxnorm} m with bound {p.bound!r} allows end-effector steps of "
                              f"{largest:.4f} m, more than safety.max_ee_step_m {self.safety.max_ee_step_m} m; "
                              f"lower maxnorm, use bound 'l1', or raise the safety limit")

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (tuples as lists), loadable by `load_config`."""
        return _plain(dataclasses.asdict(self))

    def to_flat_dict(self) -> dict[str, Any]:
        """{"control.rate_hz": 100.0, ...}: one entry per leaf, for ROS parameters."""
        out: dict[str, Any] = {}

        def walk(prefix: str, d: dict[str, Any]) -> None:
            for k, v in d.items():
                if isinstance(v, dict) and v:
                    walk(f"{prefix}{k}.", v)
                else:
                    out[prefix + k] = v
        walk("", self.to_dict())
        return out

    @classmethod
    def from_flat_dict(cls, flat: dict[str, Any]) -> "StackConfig":
        """Inverse of `to_flat_dict`; missing names take their defaults."""
        nested: dict[str, Any] = {}
        for name, value in flat.items():
            *parents, leaf = name.split(".")
            d = nested
            for p in parents:
                d = d.setdefault(p, {})
                if not isinstance(d, dict):
                    raise ConfigError(f"{name}: {'.'.join(parents)} is a value, not a section")
            d[leaf] = value
        return load_config(nested)


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def load_config(source: str | Path | dict[str, Any]) -> StackConfig:
    """A StackConfig from a YAML file or a nested dict; errors name the field's YAML path."""
    where = ""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        where = f"{path}: "
        data = {} if data is None else data
    else:
        data = source
    try:
        return _build(StackConfig, data, "")
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from None


def _build(cls: type, data: Any, path: str) -> Any:
    """Instantiate dataclass `cls` from `data`, checking keys and types; `path` is its YAML path."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of {cls.__name__} fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{path + '.' if path else ''}{unknown[0]}: unknown key; "
                          f"{path or 'the top level'} accepts {names}")
    kwargs = {k: _coerce(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        # __post_init__ names the field in its message; point at the first field it names.
        msg = str(e)
        hits = [(m.start(), k) for k in names if (m := re.search(rf"\b{re.escape(k)}\b", msg))]
        if not hits:
            raise ConfigError(f"{path}: {msg}" if path else msg) from None
        key = min(hits)[1]
        msg = msg[len(key) + 2:] if msg.startswith(f"{key}: ") else msg
        raise ConfigError(f"{path + '.' if path else ''}{key}: {msg}") from None
    except TypeError as e:
        raise ConfigError(f"{path or 'config'}: {e}") from None


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Check `value` against a type hint (YAML gives lists for tuples, ints for floats)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{path}: must not be null")
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {value!r} matches none of {errors}")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if hint is Any:
        return value
    if origin is tuple or hint is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}: {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(v, args[i] if args and args[-1] is not Ellipsis else item, f"{path}[{i}]")
                     for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value
