"""The stack's YAML schema: shipped files load, bad keys/values name their YAML path, flat round trip."""

from pathlib import Path

import pytest

from vjepa2_ros.control.config import StackConfig, load_config
from vjepa2_ros.errors import ConfigError
from vjepa2_ros.model import EncoderConfig, PredictorConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


@pytest.mark.parametrize("name", ["default.yaml", "sim_demo.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIG_DIR / name)
    assert isinstance(cfg, StackConfig)
    assert cfg.control.rate_hz == 100.0


def test_lab_and_demo_differ_where_they_should():
    lab, demo = load_config(CONFIG_DIR / "default.yaml"), load_config(CONFIG_DIR / "sim_demo.yaml")
    assert (lab.control.backend, demo.control.backend) == ("franky", "sim")
    assert lab.model.encoder_config() == EncoderConfig.vit_giant()
    assert lab.model.predictor_config() == PredictorConfig.ac_vit_giant()
    assert demo.model.encoder_config() == EncoderConfig.tiny(patch_size=8)
    assert lab.control.dry_run is True                          # a new lab station starts in dry run


def test_missing_keys_take_defaults_and_yaml_lists_become_tuples():
    cfg = load_config({"model": {"roi": [10, 20, 300, 200]}, "safety": {"workspace_min_m": [0.2, -0.5, 0]}})
    assert cfg.model.roi == (10, 20, 300, 200)
    assert cfg.safety.workspace_min_m == (0.2, -0.5, 0.0)
    assert cfg.control == StackConfig().control


def test_encoder_dict_with_preset_and_overrides():
    cfg = load_config({"model": {"encoder": {"preset": "vit_tiny", "depth": 3}, "predictor": "ac_tiny"}})
    assert cfg.model.encoder_config() == EncoderConfig.tiny(depth=3)


@pytest.mark.parametrize("data, path, words", [
    ({"control": {"rate_hz": -5}}, "control.rate_hz", "> 0"),
    ({"control": {"rate": 100}}, "control.rate", "unknown key"),
    ({"contrl": {}}, "contrl", "unknown key"),
    ({"control": {"mode": "fast"}}, "control.mode", "async"),
    ({"control": {"dry_run": "yes"}}, "control.dry_run", "true or false"),
    ({"control": {"robot": "ur5"}}, "control.robot", "panda"),
    ({"planning": {"samples": 0}}, "planning.samples", "positive"),
    ({"planning": {"topk": 1}}, "planning.topk", "topk"),
    ({"safety": {"velocity_scale": 1.5}}, "safety.velocity_scale", "(0, 1]"),
    ({"model": {"roi": [0, 0, 10]}}, "model.roi", "4 values"),
    ({"model": {"roi": [0, 0, 0, 10]}}, "model.roi", "width, height >= 1"),
    ({"model": {"encoder": "vit_enormous"}}, "model.encoder", "vit_giant"),
    ({"model": {"encoder": {"preset": "vit_tiny", "depht": 2}}}, "model.encoder", "depht"),
    ({"model": {"runtime": "tensorrt"}}, "model.engine_dir", "required"),
    ({"model": {"runtime": "tflite"}}, "model.runtime", "onnxruntime"),
    ({"control": [1, 2]}, "control", "mapping"),
])
def test_bad_values_name_their_yaml_path(data, path, words):
    with pytest.raises(ConfigError) as info:
        load_config(data)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert words in message


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("control:\n  rate_hz: fast\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: control\.rate_hz: expected a number"):
        load_config(bad)
    (tmp_path / "broken.yaml").write_text("control: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_flat_dict_round_trip_for_ros_parameters():
    cfg = load_config(CONFIG_DIR / "sim_demo.yaml")
    flat = cfg.to_flat_dict()
    assert flat["control.rate_hz"] == 100.0
    assert flat["model.roi"] is None
    assert all(not isinstance(v, dict) for v in flat.values())
    assert StackConfig.from_flat_dict(flat) == cfg
    changed = StackConfig.from_flat_dict({**flat, "control.rate_hz": 250.0, "model.roi": [0, 0, 64, 48]})
    assert changed.control.rate_hz == 250.0 and changed.model.roi == (0, 0, 64, 48) and changed.model.preprocess_config().roi == (0, 0, 64, 48)
    with pytest.raises(ConfigError, match=r"^control\.rate_hz: expected a number"):
        StackConfig.from_flat_dict({"control.rate_hz": "x"})


def test_franky_section_configures_the_franky_backend():
    from vjepa2_ros.control.stack import build_backend
    cfg = load_config({"control": {"backend": "franky", "robot": "panda"},
                       "franky": {"realtime": "ignore", "relative_dynamics_factor": 0.05, "host": "127.0.0.9"}})
    backend = build_backend(cfg, host="127.0.0.1")                      # the node's robot_ip wins
    assert (backend.cfg.realtime, backend.cfg.relative_dynamics_factor) == ("ignore", 0.05)
    assert (backend.cfg.host, backend.cfg.arm, backend.spec.name) == ("127.0.0.1", "panda", "panda")
    assert cfg.to_flat_dict()["franky.relative_dynamics_factor"] == 0.05   # a ROS parameter like the others
    with pytest.raises(ConfigError, match=r"^franky\.realtime: .*'sometimes'"):
        load_config({"franky": {"realtime": "sometimes"}})


def test_planner_steps_must_fit_the_safety_envelope():
    # a 7.5 cm box allows 13 cm diagonal steps: every corner plan would fault at the 10 cm limit
    with pytest.raises(ConfigError, match=r"^planning: maxnorm 0\.075 m with bound 'box' allows .* 0\.1299 m"):
        load_config({"planning": {"maxnorm": 0.075, "bound": "box"}, "safety": {"max_ee_step_m": 0.10}})
    assert load_config({"planning": {"maxnorm": 0.075, "bound": "l1"}, "safety": {"max_ee_step_m": 0.10}})


def test_sim_camera_renders_the_models_input_or_holds_its_roi():
    from vjepa2_ros.control.stack import sim_camera_px
    assert sim_camera_px(load_config(CONFIG_DIR / "sim_demo.yaml").model) == 64        # the shipped sim model
    assert sim_camera_px(load_config(CONFIG_DIR / "default.yaml").model) == 256        # ViT-g
    roi = load_config({"model": {"encoder": "vit_tiny", "predictor": "ac_tiny", "roi": [10, 20, 40, 30]}}).model
    assert sim_camera_px(roi) == 50
