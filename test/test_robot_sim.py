"""The MuJoCo sim backend: reaches targets, renders a 256x256 view that follows the arm, drives the hand."""

import time

import numpy as np
import pytest

from vjepa2_ros.errors import ConfigError, SafetyError

sim_mod = pytest.importorskip("vjepa2_ros.robot.sim")
from vjepa2_ros.robot.backend import make_backend  # noqa: E402
from vjepa2_ros.robot.kinematics import FR3  # noqa: E402
from vjepa2_ros.robot.safety import SafetyConfig  # noqa: E402
from vjepa2_ros.robot.sim import PandaSim, SimBackend, SimConfig  # noqa: E402


@pytest.fixture(scope="module")
def backend():
    b = make_backend("sim", cfg=SimConfig())
    with b:
        yield b


def test_registry_builds_the_sim_backend(backend):
    assert isinstance(backend, SimBackend) and backend.name == "sim" and backend.is_connected
    with pytest.raises(ConfigError, match="unknown robot backend 'ur5'"):
        make_backend("ur5")
    # The way control.stack builds it: spec and safety by keyword, SimConfig fields as overrides.
    b = make_backend("sim", spec=FR3, safety=SafetyConfig(joint_margin_rad=0.1), render=False)
    assert b.spec is FR3 and b.cfg.render is False and b.envelope.cfg.joint_margin_rad == 0.1
    with pytest.raises(ConfigError, match="SimConfig fields"):
        make_backend("sim", camera_size=64)


def test_reaches_joint_target_and_renders_the_motion(backend):
    backend.reset()
    camera = backend.camera()
    before = camera.read_latest()
    assert before.image.shape == (256, 256, 3) and before.image.dtype == np.uint8
    assert camera.read_latest() is before                  # same sim time -> same frame
    q0, t0 = backend.read_state().q, backend.now_s()
    target = q0 + np.array([0.3, 0.2, -0.2, 0.3, 0.2, -0.2, 0.4])
    sent = backend.send_joint_target(target)
    np.testing.assert_array_equal(sent, target)
    backend.advance(2.0)
    state = backend.read_state()
    assert np.abs(state.q - target).max() < 1e-3
    assert np.abs(state.dq).max() < 1e-2
    assert state.stamp_s == pytest.approx(t0 + 2.0, abs=1e-9)
    np.testing.assert_allclose(state.flange_pose, backend.kinematics.fk(state.q), atol=1e-12)
    after = camera.read_latest()
    assert after.stamp_s == pytest.approx(t0 + 2.0)
    assert np.abs(after.image.astype(int) - before.image.astype(int)).mean() > 2.0


def test_gripper_closes_and_opens(backend):
    backend.reset(gripper=0.0)
    assert backend.read_state().gripper < 0.01
    assert backend.set_gripper(1.0) == 1.0
    backend.advance(1.0)
    assert backend.read_state().gripper > 0.95
    backend.set_gripper(0.5)
    backend.advance(1.0)
    assert backend.read_state().gripper == pytest.approx(0.5, abs=0.05)
    with pytest.raises(SafetyError, match="gripper"):
        backend.set_gripper(float("nan"))


def test_unsafe_targets_never_reach_the_sim(backend):
    backend.reset()
    ctrl = backend.sim.data.ctrl.copy()
    q = backend.read_state().q
    for bad in (np.full(7, np.nan), q + np.array([0, 0, 0, 5.0, 0, 0, 0]), np.zeros(6)):
        with pytest.raises(SafetyError):
            backend.send_joint_target(bad)
    below = backend.kinematics.ik_position(np.array([0.5, 0.0, -0.05]), q, "tcp")
    with pytest.raises(SafetyError, match="workspace"):
        backend.send_joint_target(below.q)
    np.testing.assert_array_equal(backend.sim.data.ctrl, ctrl)


def test_cartesian_target_and_stop(backend):
    backend.reset()
    T = backend.read_state().flange_pose.copy()
    T[:3, 3] += [0.05, -0.03, 0.04]
    backend.send_cartesian_target(T)
    backend.advance(1.5)
    np.testing.assert_allclose(backend.read_state().flange_pose[:3, 3], T[:3, 3], atol=1e-3)
    backend.send_joint_target(backend.read_state().q + 0.3)
    backend.advance(0.05)
    backend.stop()
    held = backend.read_state().q
    backend.advance(1.0)
    assert np.abs(backend.read_state().q - held).max() < 0.05       # braked where stop() was called
    assert backend.recover()


def test_reset_randomises_the_scene_deterministically():
    sim = PandaSim(SimConfig(render=False))
    cfg = sim.cfg
    sim.advance(0.1)
    sim.reset()
    assert sim.time_s == pytest.approx(0.1)               # the clock keeps running across resets
    sim.reset(rng=np.random.default_rng(5))
    p1, rgb1 = sim.object_position(), sim.model.geom_rgba[sim.model.geom("cube").id].copy()
    sim.reset(rng=np.random.default_rng(5))
    np.testing.assert_array_equal(sim.object_position(), p1)
    sim.reset(rng=np.random.default_rng(6))
    assert not np.allclose(sim.object_position(), p1)
    assert np.all(p1[:2] >= cfg.object_pos_min_m) and np.all(p1[:2] <= cfg.object_pos_max_m)
    assert np.all(rgb1[:3] >= cfg.object_rgb_min) and np.all(rgb1[:3] <= cfg.object_rgb_max)
    sim.advance(0.5)
    assert sim.object_position()[2] == pytest.approx(sim_mod.CUBE_HALF_M, abs=2e-3)   # resting on the table


def test_real_time_mode_tracks_the_wall_clock():
    with SimBackend(SimConfig(real_time=True, render=False)) as b:
        t0_wall, t0_sim = time.monotonic(), b.now_s()
        time.sleep(0.3)
        elapsed_sim, elapsed_wall = b.now_s() - t0_sim, time.monotonic() - t0_wall
        assert elapsed_sim == pytest.approx(elapsed_wall, abs=0.08)
        with pytest.raises(ConfigError, match="fast mode"):
            b.advance(0.1)
    assert not b.is_connected


def test_config_validation():
    with pytest.raises(ConfigError, match="camera_width=8"):
        SimConfig(camera_width=8)
    with pytest.raises(ConfigError, match="q_home"):
        SimConfig(q_home=(0.0,) * 7)                       # joint 4 must be negative on a Panda


def test_camera_renders_from_any_thread():
    """A GL context is current in one thread; the sim renders in its own, so callers may be any thread."""
    import threading
    with SimBackend(SimConfig(real_time=True)) as b:
        camera = b.camera()
        frames = []
        worker = threading.Thread(target=lambda: frames.append(camera.read_latest()))
        worker.start()
        worker.join()
        time.sleep(0.05)
        frames.append(camera.read_latest())
        assert all(f.image.shape == (256, 256, 3) for f in frames)
        assert frames[1].stamp_s > frames[0].stamp_s


def test_hand_grasps_and_lifts_the_cube():
    with SimBackend(SimConfig(render=False)) as b:
        cube = b.sim.object_position()
        R_down = b.kinematics.fk(b.read_state().q, "tcp")[:3, :3]

        def move_tcp(p: np.ndarray) -> None:
            ik = b.kinematics.ik_position(p, b.read_state().q, "tcp", rotation=R_down)
            assert ik.success
            b.send_joint_target(ik.q)
            b.advance(1.0)

        move_tcp(cube + [0.0, 0.0, 0.12])
        move_tcp(cube)
        b.set_gripper(1.0)
        b.advance(1.0)
        assert 0.2 < b.read_state().gripper < 0.5               # stopped by the 5 cm cube, not closed
        move_tcp(cube + [0.0, 0.0, 0.15])
        assert b.sim.object_position()[2] > cube[2] + 0.12      # the cube came up with the hand


def test_renders_headless_even_when_mujoco_was_imported_first():
    """MuJoCo fixes its GL backend at import (glfw when MUJOCO_GL is unset, which needs a display);
    the sim opens its EGL/OSMesa context itself, so a module importing mujoco earlier is harmless."""
    import os
    import subprocess
    import sys
    code = ("import mujoco\n"
            "from vjepa2_ros.robot.sim import PandaSim, SimConfig\n"
            "sim = PandaSim(SimConfig(camera_width=32, camera_height=32))\n"
            "image = sim.render()\n"
            "sim.close()\n"
            "print(image.shape, image.dtype, int(image.std() > 5))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY", "PYOPENGL_PLATFORM")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(32, 32, 3) uint8 1"
