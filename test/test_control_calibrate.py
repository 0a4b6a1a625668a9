"""`vjepa2-ros calibrate` end to end on the simulated arm with the shipped sim model (few moves,
small CEM), and its refusals."""

import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from vjepa2_ros import cli
from vjepa2_ros.control.calibrate import (CalibrationConfig, LiveCalibration, camera_yaw_overrides, infer_calibration,
                                          infer_on_planner, make_moves)
from vjepa2_ros.control.config import StackConfig, load_config
from vjepa2_ros.control.planner_process import PlannerProcess
from vjepa2_ros.control.stack import build_backend, build_inline_planner, build_loop
from vjepa2_ros.control.state import LoopState
from vjepa2_ros.errors import ConfigError, SafetyError
from vjepa2_ros.planning.calibration import yaw_matrix

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "config" / "sim_demo.yaml"
SHORT = CalibrationConfig(moves=3, samples=16, iterations=2)


def sim_stack(**control) -> StackConfig:
    """config/sim_demo.yaml with absolute model paths, a small CEM, and `control` overrides."""
    stack = load_config(DEMO)
    model = dataclasses.replace(stack.model, checkpoint=str(REPO / "models/sim_reach/predictor.safetensors"),
                                encoder_checkpoint=str(REPO / "models/sim_reach/encoder.safetensors"))
    planning = dataclasses.replace(stack.planning, samples=16, topk=4, iterations=2)
    return dataclasses.replace(stack, model=model, planning=planning,
                               control=dataclasses.replace(stack.control, **control))


def sim_moves(stack: StackConfig, cfg: CalibrationConfig = SHORT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames, poses, commanded) of the scripted moves on the simulated arm, in simulated time."""
    backend = build_backend(stack, camera_width=64, camera_height=64)
    backend.connect()
    try:
        moves = make_moves(stack, cfg, backend, backend.camera())
    finally:
        backend.disconnect()
    return np.stack(moves.frames), np.array(moves.poses), np.array(moves.commanded)


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


def test_the_recording_is_checked_before_any_inference():
    frames, poses = np.zeros((4, 64, 64, 3), np.uint8), np.zeros((4, 7))
    for args, message in (((frames.astype(np.float32), poses, np.zeros((3, 3))), "uint8"),
                          ((frames, poses[:3], np.zeros((3, 3))), "N\\+1 frames"),
                          ((frames[:3], poses[:3], np.zeros((2, 3))), "at least 3 moves"),
                          ((frames, np.full((4, 7), np.nan), np.zeros((3, 3))), "NaN")):
        with pytest.raises(ConfigError, match=message):
            infer_calibration(None, *args, SHORT)
    with pytest.raises(ConfigError, match="samples"):
        CalibrationConfig(samples=1)


def test_live_moves_record_an_observation_only_once_the_arm_has_settled_on_the_target():
    """A delayed joint state (or a lagging controller) must not be measured as the move's end."""
    from vjepa2_ros.control.calibrate import ScriptedMoves
    from vjepa2_ros.errors import PlanningError
    moves = ScriptedMoves(SHORT, arrive_tol_m=0.005, settle=2, max_waits=3)
    frame, p0 = np.zeros((64, 64, 3), np.uint8), np.array([0.45, 0.0, 0.3, np.pi, 0.0, 0.0, 0.0])
    d = moves.plan(frame, p0).action[:3]                                   # move 1, recorded at p0
    assert len(moves.poses) == 1 and np.linalg.norm(d) == pytest.approx(SHORT.step_m)
    again = moves.plan(frame, p0)                                          # the state has not moved yet:
    np.testing.assert_allclose(again.action[:3], d)                        # the same target, nothing recorded
    arrived = p0.copy()
    arrived[:3] += d + 0.002
    assert np.abs(moves.plan(frame, arrived).action[:3]).max() < 0.003 and len(moves.poses) == 1   # settling
    moves.plan(frame, arrived)                                             # settled twice: recorded, move 2
    assert len(moves.poses) == 2 and len(moves.commanded) == 2
    for _ in range(3):
        moves.plan(frame, arrived)                                         # move 2 never arrives
    with pytest.raises(PlanningError, match="did not settle on move 2"):
        moves.plan(frame, arrived)


def test_the_planner_process_calibrates_as_inline_and_its_frame_survives_a_restart():
    """infer_calibration in the child (PlannerProcess.calibrate) = here; set_action_frame on the
    running process = the frame given by the config, also after a restart."""
    stack = sim_stack(planner_threads=1)
    frames, poses, commanded = sim_moves(stack)
    inline = build_inline_planner(stack)
    here = infer_calibration(inline.world_model, frames, poses, commanded, SHORT)
    lines: list[str] = []
    with PlannerProcess(stack) as remote:
        there = infer_on_planner(remote, frames, poses, commanded, SHORT, progress=lines.append)
        assert [line.split(":")[0] for line in lines] == ["move 1/3", "move 2/3", "move 3/3"]
        np.testing.assert_allclose(there.inferred_m, here.inferred_m, atol=1e-6)
        assert there.action_frame == here.action_frame and there.scan.yaw_deg == here.scan.yaw_deg
        np.testing.assert_allclose(there.center_m, poses[0, :3])

        R, center = yaw_matrix(40.0).reshape(-1), tuple(poses[0, :3])
        configured = build_inline_planner(dataclasses.replace(stack, planning=dataclasses.replace(
            stack.planning, action_frame=tuple(R), action_frame_center_m=center)))
        goal, frame, state = frames[-1], frames[0], poses[0]
        for p in (inline, remote, configured):
            p.set_goal_image(goal)
        plain = inline.plan(frame, state).action
        inline.set_action_frame(R, center)
        remote.set_action_frame(R, center)
        inline.reset()
        expected = configured.plan(frame, state)
        for p in (inline, remote):
            got = p.plan(frame, state)
            np.testing.assert_array_equal(got.action, expected.action)
            np.testing.assert_allclose(got.diagnostics["cem"]["action_frame"], R)
        assert not np.allclose(plain, expected.action)                  # the frame changed the plan
        with pytest.raises(ConfigError, match="9 numbers"):
            remote.set_action_frame((1.0, 0.0, 0.0), center)
        assert remote.cfg.planning.action_frame == tuple(R) and remote.problem() is None
        remote.kill()
        remote.recover()                                                 # a fresh child, from remote.cfg
        configured.reset()
        np.testing.assert_array_equal(remote.plan(frame, state).action, configured.plan(frame, state).action)
        with pytest.raises(ConfigError, match="uint8"):                  # the child's check, the child lives on
            remote.calibrate(frames.astype(np.float32), poses, commanded, SHORT)
        assert remote.problem() is None


def _live_rig():
    """A sim arm in real time and an inline planner, the loop running and holding a goal."""
    stack = sim_stack(planner_process=False, command_priority=None)
    stack = dataclasses.replace(stack, safety=dataclasses.replace(stack.safety, max_state_age_s=0.5,
                                                                  max_frame_age_s=1.0))   # a busy machine
    backend = build_backend(stack, camera_width=64, camera_height=64, real_time=True)
    backend.connect()
    planner = build_inline_planner(stack)
    loop = build_loop(stack, planner, backend, backend.camera())
    loop.set_goal_from_camera()
    loop.hold("test: holding a goal")
    loop.start()
    return stack, backend, planner, loop


@pytest.mark.slow
def test_live_calibration_moves_in_real_time_applies_the_frame_and_gives_the_loop_back_holding(tmp_path):
    stack, backend, planner, loop = _live_rig()
    try:
        q0 = backend.read_state().q
        lines: list[str] = []
        result = LiveCalibration(loop, SHORT, progress=lines.append).run(tmp_path / "cal")
        assert [t for t in lines if t.startswith("move")] == ["move 1/3", "move 2/3", "move 3/3"]
        assert any(t.startswith("inference: move 3/3") for t in lines) and lines[-1].startswith("done: action frame")
        assert {p.name for p in (tmp_path / "cal").iterdir()} == {"action_frame.yaml", "stack.yaml",
                                                                  "calibration.json", "calibration.png"}
        assert np.all(np.linalg.norm(result.measured_m, axis=1) > 0.01)                 # the arm moved
        np.testing.assert_allclose(planner.frame.rotation, np.reshape(result.action_frame, (3, 3)))
        assert loop.running and loop.state is LoopState.HOLDING and "calibrated" in loop.reason
        assert planner.has_goal                                                           # the goal is kept
        time.sleep(0.5)
        q1 = backend.read_state().q
        time.sleep(0.3)
        np.testing.assert_allclose(backend.read_state().q, q1, atol=1e-4)                 # holding still
        assert np.abs(q1 - q0).max() > 1e-3                                               # where the moves left it

        # a hold (~/enable false) stops the moves at once; the loop is back, holding
        live = LiveCalibration(loop, CalibrationConfig(moves=6), progress=lines.append)
        timer = threading.Timer(1.0, live.hold, args=("disabled by ~/enable",))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(SafetyError, match="disabled by ~/enable"):
            live.run(tmp_path / "never")
        assert time.monotonic() - t0 < 5.0 and not (tmp_path / "never").exists()
        assert loop.running and loop.state is LoopState.HOLDING and "calibration stopped" in loop.reason

        dry = dataclasses.replace(stack, control=dataclasses.replace(stack.control, dry_run=True))
        with pytest.raises(ConfigError, match="dry_run"):
            LiveCalibration(build_loop(dry, planner, backend, backend.camera()), SHORT)
        loop.stop()
        with pytest.raises(ConfigError, match="control loop running"):
            LiveCalibration(loop, SHORT)
    finally:
        loop.close()
        backend.disconnect()
