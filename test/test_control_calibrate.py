"""`vjepa2-ros calibrate` end to end on the simulated arm with the shipped sim model (few moves,
small CEM), and its refusals."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from vjepa2_ros import cli
from vjepa2_ros.control.calibrate import CalibrationConfig, camera_yaw_overrides, make_moves
from vjepa2_ros.control.config import load_config
from vjepa2_ros.errors import ConfigError
from vjepa2_ros.planning.calibration import yaw_matrix

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "config" / "sim_demo.yaml"


def test_a_short_calibration_at_a_turned_camera_writes_a_frame_the_planner_applies(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)                                 # the stack YAML's model paths are repository-relative
    out = tmp_path / "cal"
    rc = cli.main(["calibrate", "--moves", "3", "--samples", "32", "--iterations", "2", "--camera-yaw-deg", "30",
                   "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert {p.name for p in out.iterdir()} == {"action_frame.yaml", "stack.yaml", "calibration.json",
                                               "calibration.png"}
    assert "camera turned +30 deg" in text and "move    " in text
    summary = json.loads((out / "calibration.json").read_text())
    measured = np.array(summary["measured_m"])
    assert measured.shape == (3, 3) and np.all(np.linalg.norm(measured, axis=1) > 0.01)     # the arm moved
    keys = yaml.safe_load((out / "action_frame.yaml").read_text())["planning"]
    R = np.reshape(keys["action_frame"], (3, 3))
    np.testing.assert_allclose(R, yaw_matrix(summary["scan"]["yaw_deg"]), atol=1e-6)     # the pooled scan, as chosen
    frame = load_config(out / "stack.yaml").planning.frame()          # what the Planner plans with
    np.testing.assert_allclose(frame.rotation, R, atol=1e-9)
    np.testing.assert_allclose(frame.center_m, keys["action_frame_center_m"])


def test_calibration_refuses_dry_run_and_bad_settings(tmp_path):
    stack = load_config(DEMO)
    dry = dataclasses.replace(stack, control=dataclasses.replace(stack.control, dry_run=True))
    with pytest.raises(ConfigError, match="calibration needs motion"):
        make_moves(dry, CalibrationConfig(moves=3), backend=None, camera=None)
    with pytest.raises(ConfigError, match="at least 3 moves"):
        CalibrationConfig(moves=2)
    with pytest.raises(ConfigError, match="step_m"):
        CalibrationConfig(step_m=0.2)
    dry_file = tmp_path / "dry.yaml"
    dry_file.write_text(yaml.safe_dump(dry.to_dict()))
    assert cli.main(["calibrate", "--config", str(dry_file), "--out", str(tmp_path / "never")]) == 1
    assert not (tmp_path / "never").exists()


def test_camera_yaw_turns_about_the_target():
    o = camera_yaw_overrides(90.0, pos_m=(1.0, 0.0, 0.7), target_m=(0.4, 0.0, 0.15))
    np.testing.assert_allclose(o["camera_pos_m"], (0.4, 0.6, 0.7), atol=1e-12)
    assert o["camera_target_m"] == (0.4, 0.0, 0.15)
