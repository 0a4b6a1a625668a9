"""Kinematics vs the MuJoCo Panda model (dm-robotics-panda), Jacobian vs finite differences, IK round trips."""

from pathlib import Path

import numpy as np
import pytest

from vjepa2_ros.errors import ConfigError
from vjepa2_ros.robot.kinematics import FR3, PANDA, Kinematics, arm_spec, pose_error, rotation_vector

mujoco = pytest.importorskip("mujoco")
panda_pkg = pytest.importorskip("dm_robotics.panda")
PANDA_XML = Path(panda_pkg.__file__).parent / "assets" / "panda" / "panda.xml"


def random_q(rng: np.random.Generator, spec=PANDA, n: int | None = None, inset: float = 0.0) -> np.ndarray:
    return rng.uniform(spec.q_min + inset, spec.q_max - inset, size=None if n is None else (n, 7))


def test_fk_matches_mujoco_panda_bodies():
    model = mujoco.MjModel.from_xml_path(str(PANDA_XML))
    data = mujoco.MjData(model)
    kin = Kinematics(PANDA)
    rng = np.random.default_rng(0)
    qs = random_q(rng, n=25)
    frames = kin._frames(qs)                                    # [25, 9, 4, 4]
    for q, fr in zip(qs, frames):
        data.qpos[:7] = q
        mujoco.mj_kinematics(model, data)
        for i in range(8):                                      # link1..7 and the flange (link8)
            body = model.body(f"panda_link{i + 1}").id
            assert np.abs(data.xpos[body] - fr[i, :3, 3]).max() <= 1e-6
            assert np.abs(data.xmat[body].reshape(3, 3) - fr[i, :3, :3]).max() <= 1e-6
        np.testing.assert_allclose(kin.fk(q, "flange"), fr[7], atol=1e-12)


def test_fk_matches_franky_sim_fr3_bodies():
    franky_sim = pytest.importorskip("franky_sim")
    spec = mujoco.MjSpec.from_file(str(Path(franky_sim.__file__).parent / "assets" / "fr3.xml"))
    spec.meshdir = str(Path(franky_sim.__file__).parent / "assets" / "meshes")
    model = spec.compile()
    data = mujoco.MjData(model)
    kin = Kinematics(FR3)
    qadr = [model.jnt_qposadr[model.joint(f"fr3_joint{i}").id] for i in range(1, 8)]
    for q in random_q(np.random.default_rng(7), FR3, n=10):
        data.qpos[qadr] = q
        mujoco.mj_kinematics(model, data)
        frames = kin._frames(q)
        for i in range(7):
            assert np.abs(data.xpos[model.body(f"fr3_link{i + 1}").id] - frames[i, :3, 3]).max() <= 1e-6
        hand = model.body("hand").id                            # at the flange, rotated like the TCP
        assert np.abs(data.xpos[hand] - kin.fk(q, "flange")[:3, 3]).max() <= 1e-6
        assert np.abs(data.xmat[hand].reshape(3, 3) - kin.fk(q, "tcp")[:3, :3]).max() <= 1e-6


def test_fk_tcp_matches_sim_scene_site():
    sim_mod = pytest.importorskip("vjepa2_ros.robot.sim")
    sim = sim_mod.PandaSim(sim_mod.SimConfig(render=False))
    kin = Kinematics(PANDA)
    rng = np.random.default_rng(1)
    for q in random_q(rng, n=10):
        sim.reset(q)
        tcp, flange = sim.site_pose("tcp"), sim.site_pose("flange")
        assert np.abs(tcp[:3, 3] - kin.fk(q, "tcp")[:3, 3]).max() <= 1e-6
        assert np.abs(flange[:3, 3] - kin.fk(q, "flange")[:3, 3]).max() <= 1e-6
        assert np.abs(tcp[:3, :3] - kin.fk(q, "tcp")[:3, :3]).max() <= 1e-6


def test_fk_batch_equals_single_and_droid_reset_tcp():
    kin = Kinematics(FR3)
    qs = random_q(np.random.default_rng(2), FR3, n=6)
    batch = kin.fk_batch(qs, "tcp")
    for q, T in zip(qs, batch):
        np.testing.assert_allclose(kin.fk(q, "tcp"), T, atol=1e-15)
    # TCP at the DROID reset pose, measured in the spec's MuJoCo scene.
    q_reset = np.array([0.0, -1 / 5 * np.pi, 0.0, -4 / 5 * np.pi, 0.0, 3 / 5 * np.pi, 0.0])
    np.testing.assert_allclose(kin.fk(q_reset, "tcp")[:3, 3], [0.3597, 0.0, 0.3865], atol=1e-4)
    assert kin.fk(q_reset).dtype == np.float64


@pytest.mark.parametrize("frame", ["flange", "tcp"])
def test_jacobian_matches_finite_differences(frame):
    kin = Kinematics(PANDA)
    rng = np.random.default_rng(3)
    eps = 1e-7
    for q in random_q(rng, n=5):
        J = kin.jacobian(q, frame)
        T0 = kin.fk(q, frame)
        J_fd = np.stack([pose_error(kin.fk(q + eps * np.eye(7)[j], frame), T0) / eps for j in range(7)], axis=1)
        np.testing.assert_allclose(J, J_fd, atol=1e-6)


def test_rotation_vector_near_pi_and_zero():
    for angle in (0.0, 1e-9, 0.3, np.pi - 1e-9, np.pi):
        for axis in np.eye(3):
            c, s = np.cos(angle), np.sin(angle)
            K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
            R = np.eye(3) + s * K + (1 - c) * K @ K
            w = rotation_vector(R)
            assert abs(np.linalg.norm(w) - angle) < 1e-7
            if angle > 1e-6:
                assert abs(abs(w @ axis) - angle) < 1e-7


@pytest.mark.parametrize("spec", [PANDA, FR3], ids=lambda s: s.name)
@pytest.mark.parametrize("frame", ["flange", "tcp"])
def test_ik_round_trip(spec, frame):
    kin = Kinematics(spec)
    rng = np.random.default_rng(4)
    solved = 0
    for _ in range(40):
        q_true = random_q(rng, spec, inset=0.2)
        q_seed = np.clip(q_true + rng.normal(0.0, 0.15, 7), spec.q_min, spec.q_max)
        T = kin.fk(q_true, frame)
        r = kin.ik(T, q_seed, frame, position_tol_m=1e-7, rotation_tol_rad=1e-6)
        if r.success:
            solved += 1
            T_back = kin.fk(r.q, frame)
            assert np.linalg.norm(T_back[:3, 3] - T[:3, 3]) <= 1e-7
            assert np.linalg.norm(rotation_vector(T_back[:3, :3] @ T[:3, :3].T)) <= 1e-6
            assert kin.within_limits(r.q)
            assert r.position_error_m <= 1e-7 and r.iterations > 0
        else:   # a failure must say so with a residual above tolerance
            assert r.position_error_m > 1e-7 or r.rotation_error_rad > 1e-6
    assert solved >= 36


def test_ik_keeps_posture_near_seed():
    """The redundant joint stays near the current configuration (small moves -> small joint changes)."""
    kin = Kinematics(PANDA)
    q0 = np.array([0.0, -0.6, 0.0, -2.4, 0.0, 1.8, 0.8])
    T = kin.fk(q0).copy()
    T[:3, 3] += [0.02, -0.01, 0.015]
    r = kin.ik_position(T[:3, 3], q0)
    assert r.success
    assert np.abs(r.q - q0).max() < 0.15
    np.testing.assert_allclose(kin.fk(r.q)[:3, :3], kin.fk(q0)[:3, :3], atol=1e-5)   # orientation held


def test_ik_reports_unreachable_targets():
    kin = Kinematics(PANDA)
    q0 = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
    T = np.eye(4)
    T[:3, 3] = [1.5, 0.0, 0.5]                                   # 1.5 m away: beyond the reach (~0.95 m)
    r = kin.ik(T, q0, max_iterations=100)
    assert not r.success and r.position_error_m > 0.4
    assert kin.within_limits(r.q)
    T_below = kin.fk(q0).copy()
    T_below[:3, 3] = [0.0, 0.0, -0.4]                            # inside the base
    assert not kin.ik(T_below, q0, max_iterations=100).success


def test_bad_inputs_raise_config_errors():
    kin = Kinematics(PANDA)
    with pytest.raises(ConfigError, match="frame"):
        kin.fk(np.zeros(7), "wrist")
    with pytest.raises(ConfigError, match="7 entries"):
        kin.fk(np.zeros(6))
    with pytest.raises(ConfigError, match="finite"):
        kin.ik(np.full((4, 4), np.nan), np.zeros(7))
    with pytest.raises(ConfigError, match="panda"):
        arm_spec("ur5")
    assert arm_spec("fr3") is FR3
