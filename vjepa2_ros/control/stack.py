"""Build the stack's parts from one StackConfig: world model, planner, robot backend, loop.

The CLI commands (demo, bench) and the ROS node assemble the same way, so a YAML file means
the same thing everywhere.
"""

from __future__ import annotations

from typing import Any, Callable

from vjepa2_ros.control.config import ModelConfig, StackConfig
from vjepa2_ros.control.loop import ControlLoop, Publisher
from vjepa2_ros.control.recorder import Recorder
from vjepa2_ros.robot.backend import Camera, RobotBackend, make_backend
from vjepa2_ros.robot.kinematics import arm_spec


def build_world_model(model: ModelConfig) -> Any:
    """The WorldModel the config names: runtime (torch / onnxruntime / tensorrt), weights, crop."""
    from vjepa2_ros.engines.factory import RuntimeConfig, open_runtime
    from vjepa2_ros.planning.world_model import WorldModel
    runtime = open_runtime(RuntimeConfig(
        kind=model.runtime, device=model.device, precision=model.dtype, checkpoint=model.checkpoint,
        encoder_checkpoint=model.encoder_checkpoint,
        engine_dir=None if model.runtime == "torch" else model.engine_dir,
        encoder_cfg=model.encoder_config(), predictor_cfg=model.predictor_config(), seed=model.seed))
    return WorldModel(runtime, preprocess=model.preprocess_config())


def build_planner(cfg: StackConfig, world_model: Any | None = None, seed: int = 0) -> Any:
    """The planner the stack plans with: a PlannerProcess (cfg.control.planner_process: the model
    in a child process) or, with planner_process false or a given `world_model`, an inline Planner.
    Either way `close()` releases it."""
    if world_model is None and cfg.control.planner_process:
        from vjepa2_ros.control.planner_process import PlannerProcess
        return PlannerProcess(cfg, seed=seed)
    return build_inline_planner(cfg, world_model, seed=seed)


def build_inline_planner(cfg: StackConfig, world_model: Any | None = None, seed: int = 0) -> Any:
    """A Planner in this process over `world_model` (default: built from cfg.model) with cfg.planning."""
    from vjepa2_ros.planning.planner import Planner
    return Planner(world_model if world_model is not None else build_world_model(cfg.model), cfg.planning,
                   seed=seed, hold_rule=cfg.control.hold_rule,
                   stop_below_energy=cfg.control.goal_stop_below_energy)


def sim_camera_px(model: ModelConfig) -> int:
    """The simulated camera's size for this model: its input size, so the sim renders what
    `sim record` rendered for a sim-trained model and nothing is resized on the way in; with an
    ROI, the smallest square frame that holds the ROI (x + width, y + height)."""
    if model.roi is not None:
        x, y, w, h = model.roi
        return int(max(x + w, y + h))
    return model.preprocess_config().crop_size


def build_backend(cfg: StackConfig, **kwargs: Any) -> RobotBackend:
    """The robot backend cfg.control.backend names, for cfg.control.robot under cfg.safety; kwargs
    override fields of the backend's own config (e.g. host for franky, real_time for the sim)."""
    own = {"franky": cfg.franky}.get(cfg.control.backend)          # the sim's SimConfig is not in the schema
    if own is not None:
        kwargs = {"cfg": own, **kwargs}
    return make_backend(cfg.control.backend, spec=arm_spec(cfg.control.robot), safety=cfg.safety, **kwargs)


def build_loop(cfg: StackConfig, planner: Any, backend: RobotBackend, camera: Camera,
               clock: Callable[[], float] | None = None, publish: Publisher | None = None) -> ControlLoop:
    """The control loop, recording to cfg.control.record_dir when set."""
    recorder = None
    if cfg.control.record_dir is not None:
        recorder = Recorder(cfg.control.record_dir, config=cfg.to_flat_dict())
    return ControlLoop(cfg, planner, backend, camera, clock=clock, recorder=recorder, publish=publish)
