"""MuJoCo simulation of a Panda + Franka Hand at a table with a cube, seen by a fixed camera.

The arm and hand are the MJCF models shipped by the `dm-robotics-panda` package (from
franka_ros); this module adds the table, the cube, a DROID-like exterior camera (left of the
robot, looking at the workspace), position actuators and the implicitfast integrator.

`PandaSim` is the scene; `SimBackend` / `SimCamera` put it behind the RobotBackend / Camera
interfaces. In fast mode (real_time=False) simulated time moves only when the caller calls
`advance(dt)`, so a control loop runs as fast as it can and deterministically; in real-time mode
a background thread advances physics to track the wall clock.
"""

from __future__ import annotations

import os

# Headless rendering: MuJoCo picks its GL backend when it is first imported, so choose it here,
# before importing mujoco: EGL (GPU or Mesa llvmpipe) unless the user set MUJOCO_GL (osmesa also
# works). If another module imported mujoco first, the offscreen renderer below still opens this
# backend's context explicitly, so import order does not matter.
GL_BACKEND = os.environ.setdefault("MUJOCO_GL", "egl").lower()

import threading  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from vjepa2_ros.errors import ConfigError, SafetyError  # noqa: E402
from vjepa2_ros.robot.backend import Camera, CameraFrame, RobotBackend, RobotState  # noqa: E402
from vjepa2_ros.robot.kinematics import HAND_YAW_RAD, PANDA, ArmSpec  # noqa: E402
from vjepa2_ros.robot.safety import SafetyConfig  # noqa: E402

# DROID's reset configuration (robot at rest above the table, hand pointing down).
Q_RESET = (0.0, -np.pi / 5, 0.0, -4 * np.pi / 5, 0.0, 3 * np.pi / 5, 0.0)
KP = (600.0, 600.0, 600.0, 600.0, 250.0, 150.0, 50.0)     # position actuator gains [Nm/rad]
KV = (50.0, 50.0, 50.0, 50.0, 20.0, 15.0, 5.0)           # position actuator damping [Nm s/rad]
FINGER_MAX_M = 0.04                                      # each finger's travel; hand fully open = 0.08 m
CUBE_HALF_M = 0.025


def _panda_assets() -> Path:
    try:
        import dm_robotics.panda as panda_pkg
    except ImportError as e:
        raise ConfigError("the sim needs the Panda model from `pip install --no-deps dm-robotics-panda`") from e
    return Path(panda_pkg.__file__).parent / "assets" / "panda"


def _look_at_quat(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera quaternion [w, x, y, z]: MuJoCo cameras look along -z with +y up."""
    back = pos - target
    back /= np.linalg.norm(back)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, np.stack([right, up, back], axis=1).ravel())
    return quat


@dataclass(frozen=True)
class SimConfig:
    """The simulated scene. Positions in the robot base frame (base on the table top, z up)."""

    camera_width: int = 256
    camera_height: int = 256
    camera_pos_m: tuple[float, float, float] = (1.15, 0.6, 0.7)        # front left of the robot, like DROID's
    camera_target_m: tuple[float, float, float] = (0.4, 0.0, 0.15)     # left exterior view
    camera_fovy_deg: float = 60.0
    render: bool = True                   # False: no GL context (physics and kinematics only)
    real_time: bool = False               # True: a thread advances physics with the wall clock
    physics_dt_s: float = 0.002
    seed: int = 0
    q_home: tuple[float, ...] = Q_RESET   # [7] rad, reset() default
    object_pos_min_m: tuple[float, float] = (0.40, -0.15)               # cube x, y range on reset(rng=...)
    object_pos_max_m: tuple[float, float] = (0.60, 0.15)
    object_rgb_min: tuple[float, float, float] = (0.5, 0.0, 0.0)        # cube colour range on reset(rng=...)
    object_rgb_max: tuple[float, float, float] = (1.0, 0.3, 0.3)
    light_jitter_m: float = 0.3           # light position jitter on reset(rng=...)
    light_intensity_range: tuple[float, float] = (0.5, 0.9)

    def __post_init__(self) -> None:
        for name in ("camera_width", "camera_height"):
            if not 16 <= getattr(self, name) <= 4096:
                raise ConfigError(f"SimConfig.{name}={getattr(self, name)} must be in [16, 4096] pixels")
        if not 1e-4 <= self.physics_dt_s <= 0.01:
            raise ConfigError(f"SimConfig.physics_dt_s={self.physics_dt_s} must be in [1e-4, 0.01] s")
        if not 10.0 <= self.camera_fovy_deg <= 150.0:
            raise ConfigError(f"SimConfig.camera_fovy_deg={self.camera_fovy_deg} must be in [10, 150]")
        q = np.asarray(self.q_home, dtype=np.float64)
        if q.shape != (7,) or not (np.all(q >= PANDA.q_min) and np.all(q <= PANDA.q_max)):
            raise ConfigError(f"SimConfig.q_home={self.q_home} must be 7 angles inside the Panda limits")


def build_model(cfg: SimConfig) -> mujoco.MjModel:
    """Compile the scene: Panda + hand (rotated -45 deg at the flange), table, cube, camera, light."""
    assets = _panda_assets()
    spec = mujoco.MjSpec.from_file(str(assets / "panda.xml"))
    hand = mujoco.MjSpec.from_file(str(assets / "panda_hand.xml"))
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.timestep = cfg.physics_dt_s
    spec.visual.quality.offsamples = 0        # no MSAA, no shadows: ~15 ms instead of ~150 ms a frame
    spec.visual.quality.shadowsize = 0
    spec.visual.global_.offwidth = max(cfg.camera_width, 640)
    spec.visual.global_.offheight = max(cfg.camera_height, 480)

    flange = spec.body("panda_link8")
    flange.add_site(name="flange")
    mount = flange.add_frame(quat=[np.cos(HAND_YAW_RAD / 2), 0.0, 0.0, np.sin(HAND_YAW_RAD / 2)])
    mount.attach_body(hand.body("panda_hand"), "hand/", "")
    spec.site("hand/TCP").name = "tcp"

    for i, (kp, kv) in enumerate(zip(KP, KV), start=1):
        joint = spec.joint(f"panda_joint{i}")
        joint.armature = 0.1
        joint.frictionloss = 0.0     # Franka's controllers compensate friction; PD alone stalls ~0.02 rad short
        act = spec.add_actuator(name=f"arm{i}", target=f"panda_joint{i}", trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=kp, kv=kv)
        act.ctrlrange = [PANDA.q_min[i - 1], PANDA.q_max[i - 1]]
        act.ctrllimited = True

    world = spec.worldbody
    world.add_light(name="sun", pos=[0.3, 0.3, 2.0], dir=[0.0, 0.0, -1.0], type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL,
                    diffuse=[0.7, 0.7, 0.7], ambient=[0.3, 0.3, 0.3], castshadow=False)
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3.0, 3.0, 0.1], pos=[0.0, 0.0, -0.75],
                   rgba=[0.35, 0.35, 0.38, 1.0])
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.6, 0.7, 0.375],
                   pos=[0.35, 0.0, -0.375], rgba=[0.62, 0.5, 0.36, 1.0])
    cube = world.add_body(name="cube", pos=[0.5, 0.0, CUBE_HALF_M])
    cube.add_freejoint(name="cube")
    cube.add_geom(name="cube", type=mujoco.mjtGeom.mjGEOM_BOX, size=[CUBE_HALF_M] * 3, mass=0.1,
                  rgba=[0.85, 0.1, 0.1, 1.0], friction=[1.5, 0.01, 0.001])
    pos = np.asarray(cfg.camera_pos_m, dtype=np.float64)
    world.add_camera(name="exterior", pos=pos, quat=_look_at_quat(pos, np.asarray(cfg.camera_target_m, float)),
                     fovy=cfg.camera_fovy_deg)
    return spec.compile()


class OffscreenRenderer:
    """RGB images of one camera through an offscreen GL context of GL_BACKEND ("egl" | "osmesa";
    anything else goes through mujoco.Renderer's own choice). Use from one thread only."""

    def __init__(self, model: mujoco.MjModel, camera: str, height: int, width: int):
        self.model = model
        if GL_BACKEND in ("egl", "osmesa"):
            from importlib import import_module
            self._context = import_module(f"mujoco.{GL_BACKEND}").GLContext(width, height)
            self._context.make_current()
            self._mjr = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
            mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._mjr)
            self._renderer = None
        else:
            self._context = self._mjr = None
            self._renderer = mujoco.Renderer(model, height, width)
        self._scene = mujoco.MjvScene(model, maxgeom=1000)
        self._option, self._perturb = mujoco.MjvOption(), mujoco.MjvPerturb()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._camera.fixedcamid = model.camera(camera).id
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._shape = (height, width, 3)

    def render(self, data: mujoco.MjData) -> np.ndarray:
        """uint8 [H, W, 3] RGB, top row first."""
        self.update_scene(data)
        return self.draw()

    def update_scene(self, data: mujoco.MjData) -> None:
        """Copy the geometry of `data` into the scene (fast; the only step that reads `data`)."""
        if self._renderer is not None:
            self._renderer.update_scene(data, camera=self._camera.fixedcamid)
            return
        mujoco.mjv_updateScene(self.model, data, self._option, self._perturb, self._camera,
                               mujoco.mjtCatBit.mjCAT_ALL, self._scene)

    def draw(self) -> np.ndarray:
        """Rasterise the last `update_scene` (slow on a software GL; needs no physics data)."""
        if self._renderer is not None:
            return self._renderer.render()
        self._context.make_current()
        mujoco.mjr_render(self._rect, self._scene, self._mjr)
        image = np.empty(self._shape, dtype=np.uint8)
        mujoco.mjr_readPixels(image, None, self._rect, self._mjr)
        return np.flipud(image).copy()                  # GL rows run bottom-up

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
        elif self._mjr is not None:
            self._context.make_current()
            self._mjr.free()
            self._context.free()
        self._renderer = self._mjr = self._context = None


class PandaSim:
    """The MuJoCo scene and its step/render functions. Not thread-safe: SimBackend locks around it."""

    def __init__(self, cfg: SimConfig = SimConfig()):
        self.cfg = cfg
        self.model = build_model(cfg)
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._arm_qpos = np.array([m.jnt_qposadr[m.joint(f"panda_joint{i}").id] for i in range(1, 8)])
        self._arm_qvel = np.array([m.jnt_dofadr[m.joint(f"panda_joint{i}").id] for i in range(1, 8)])
        self._finger_qpos = np.array([m.jnt_qposadr[m.joint(f"hand/panda_finger_joint{i}").id] for i in (1, 2)])
        self._cube_qpos = m.jnt_qposadr[m.joint("cube").id]
        self._arm_ctrl = np.array([m.actuator(f"arm{i}").id for i in range(1, 8)])
        self._hand_ctrl = m.actuator("hand/panda_hand_actuator").id
        # A GL context is current in one thread only: one thread owns the renderer and does all
        # rendering, so any caller thread (ROS executor threads, the real-time loop) may render.
        self._gl_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="panda-sim-gl") if cfg.render else None
        self._renderer = None
        if self._gl_thread is not None:
            self._renderer = self._gl_thread.submit(OffscreenRenderer, m, "exterior", cfg.camera_height,
                                                    cfg.camera_width).result()
        self._light0 = (m.light_pos[0].copy(), m.light_diffuse[0].copy())
        self.reset()

    @property
    def time_s(self) -> float:
        return float(self.data.time)

    def reset(self, q: np.ndarray | None = None, gripper: float = 0.0, rng: np.random.Generator | None = None) -> None:
        """Arm at q [7] (default cfg.q_home) at rest, hand at closedness `gripper`, cube on the table.
        With rng, the cube's position and colour and the light are drawn from the config's ranges.
        Simulated time keeps running (it is the clock of the state and frame stamps)."""
        m, d, cfg = self.model, self.data, self.cfg
        t = d.time
        mujoco.mj_resetData(m, d)
        d.time = t
        q = np.asarray(cfg.q_home if q is None else q, dtype=np.float64)
        d.qpos[self._arm_qpos] = q
        d.qpos[self._finger_qpos] = (1.0 - gripper) * FINGER_MAX_M
        cube_xy = np.array([0.5, 0.0])
        if rng is not None:
            cube_xy = rng.uniform(cfg.object_pos_min_m, cfg.object_pos_max_m)
            m.geom_rgba[m.geom("cube").id, :3] = rng.uniform(cfg.object_rgb_min, cfg.object_rgb_max)
            m.light_pos[0] = self._light0[0] + rng.uniform(-cfg.light_jitter_m, cfg.light_jitter_m, 3)
            m.light_diffuse[0] = rng.uniform(*cfg.light_intensity_range)
        d.qpos[self._cube_qpos:self._cube_qpos + 7] = [*cube_xy, CUBE_HALF_M, 1.0, 0.0, 0.0, 0.0]
        self.set_joint_target(q)
        self.set_gripper(gripper)
        mujoco.mj_forward(m, d)

    def advance(self, duration_s: float) -> None:
        """Step physics by duration_s (rounded to whole physics steps)."""
        n = int(round(duration_s / self.model.opt.timestep))
        if n > 0:
            mujoco.mj_step(self.model, self.data, nstep=n)

    def render(self) -> np.ndarray:
        """The exterior camera's view, uint8 [H, W, 3] RGB."""
        if self._renderer is None:
            raise ConfigError("this PandaSim was built with render=False (or is closed)")
        return self._gl_thread.submit(self._render).result()

    def _render(self) -> np.ndarray:
        return self._renderer.render(self.data)

    def render_stamped(self, lock: threading.RLock) -> tuple[float, np.ndarray]:
        """(time_s, image) of the camera view, holding `lock` (the physics lock) only while the scene
        is copied, not while it is drawn: physics and state reads go on during the slow part.
        The caller must not hold `lock` (the GL thread takes it)."""
        if self._renderer is None:
            raise ConfigError("this PandaSim was built with render=False (or is closed)")

        def snapshot_and_draw() -> tuple[float, np.ndarray]:
            with lock:
                stamp = self.time_s
                self._renderer.update_scene(self.data)
            return stamp, self._renderer.draw()
        return self._gl_thread.submit(snapshot_and_draw).result()

    def set_joint_target(self, q: np.ndarray) -> None:
        self.data.ctrl[self._arm_ctrl] = q

    def set_gripper(self, closedness: float) -> None:
        self.data.ctrl[self._hand_ctrl] = 1.0 - closedness     # actuator: 1 = open (0.08 m), 0 = closed

    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self._arm_qpos].copy()

    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[self._arm_qvel].copy()

    def gripper_closedness(self) -> float:
        width = float(np.sum(self.data.qpos[self._finger_qpos]))
        return float(np.clip(1.0 - width / (2 * FINGER_MAX_M), 0.0, 1.0))

    def site_pose(self, name: str) -> np.ndarray:
        """Pose [4, 4] of a site ("flange", "tcp") in the base (world) frame."""
        site = self.model.site(name).id
        T = np.eye(4)
        T[:3, :3] = self.data.site_xmat[site].reshape(3, 3)
        T[:3, 3] = self.data.site_xpos[site]
        return T

    def object_position(self) -> np.ndarray:
        """Cube centre [3] (m)."""
        return self.data.qpos[self._cube_qpos:self._cube_qpos + 3].copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._gl_thread.submit(self._renderer.close).result()
            self._gl_thread.shutdown()
            self._renderer = self._gl_thread = None


class SimBackend(RobotBackend):
    """RobotBackend over one PandaSim. State stamps and `now_s()` are simulation time.

    Args:
        cfg: the scene and timing mode.
        safety: limits of the envelope every target passes.
        spec: the limits the envelope applies. The simulated arm is a Panda; the FR3 has the
            same kinematics, so spec=FR3 runs an FR3 configuration on it (the sim's actuators
            still stop at the Panda's joint range).
        **overrides: SimConfig fields to replace in cfg (e.g. real_time=True).
    """

    name = "sim"

    def __init__(self, cfg: SimConfig = SimConfig(), safety: SafetyConfig = SafetyConfig(), *,
                 spec: ArmSpec = PANDA, **overrides: Any):
        super().__init__(spec, safety)
        try:
            self.cfg = replace(cfg, **overrides)
        except TypeError as e:
            raise ConfigError(f"SimBackend: {e}; SimConfig fields are {list(SimConfig.__annotations__)}") from None
        self.sim: PandaSim | None = None
        self._lock = threading.RLock()
        self._running = threading.Event()
        self._thread: threading.Thread | None = None

    # --- connection ---------------------------------------------------------------------------
    def connect(self) -> None:
        if self.sim is not None:
            return
        self.sim = PandaSim(self.cfg)
        if self.cfg.real_time:
            self._running.set()
            self._thread = threading.Thread(target=self._track_wall_clock, name="panda-sim", daemon=True)
            self._thread.start()

    def disconnect(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.sim is not None:
            self.sim.close()
            self.sim = None

    @property
    def is_connected(self) -> bool:
        return self.sim is not None

    def _track_wall_clock(self) -> None:
        """Real-time mode: keep simulated time equal to wall time since connect."""
        t0_wall, t0_sim = time.monotonic(), self.sim.time_s
        while self._running.is_set():
            with self._lock:
                lag = (time.monotonic() - t0_wall) - (self.sim.time_s - t0_sim)
                self.sim.advance(min(lag, 0.05))
            time.sleep(0.001)

    # --- time -----------------------------------------------------------------------------------
    def now_s(self) -> float:
        self._require_connected()
        return self.sim.time_s

    def advance(self, duration_s: float) -> None:
        """Fast mode: step simulated time by duration_s (the caller owns the clock)."""
        self._require_connected()
        if self.cfg.real_time:
            raise ConfigError("advance() is for fast mode; in real-time mode the sim follows the wall clock")
        with self._lock:
            self.sim.advance(duration_s)

    def reset(self, q: np.ndarray | None = None, gripper: float = 0.0, rng: np.random.Generator | None = None) -> None:
        """Reset the scene (see PandaSim.reset); q, when given, must pass the envelope's joint limits."""
        self._require_connected()
        if q is not None:
            q = self.envelope.check_joint_position(q, "reset configuration")
        with self._lock:
            self.sim.reset(q, self.envelope.check_gripper(gripper), rng)

    # --- state and commands ---------------------------------------------------------------------
    def read_state(self) -> RobotState:
        self._require_connected()
        with self._lock:
            q = self.sim.joint_positions()
            return RobotState(stamp_s=self.sim.time_s, q=q, dq=self.sim.joint_velocities(),
                              gripper=self.sim.gripper_closedness(), flange_pose=self.kinematics.fk(q))

    def _send_joint_target(self, q: np.ndarray) -> None:
        with self._lock:
            self.sim.set_joint_target(q)

    def _set_gripper(self, closedness: float) -> None:
        with self._lock:
            self.sim.set_gripper(closedness)

    def stop(self) -> None:
        """Hold the current position (the position actuators brake the arm)."""
        self._require_connected()
        with self._lock:
            self.sim.set_joint_target(self.sim.joint_positions())

    def recover(self) -> bool:
        """The simulation has no error state to clear."""
        return self.is_connected

    def camera(self) -> SimCamera:
        self._require_connected()
        return SimCamera(self)


class SimCamera(Camera):
    """The exterior camera of a connected SimBackend, rendered on demand at the current sim time."""

    def __init__(self, backend: SimBackend):
        self._backend = backend
        self._last: CameraFrame | None = None

    def read_latest(self) -> CameraFrame | None:
        backend = self._backend
        if backend.sim is None:
            raise SafetyError("sim camera read after the backend was disconnected")
        with backend._lock:
            if self._last is not None and self._last.stamp_s == backend.sim.time_s:
                return self._last
        stamp, image = backend.sim.render_stamped(backend._lock)      # renders without blocking physics
        self._last = CameraFrame(stamp_s=stamp, image=image)
        return self._last

    def latest_stamp(self) -> float | None:
        """Now: a frame of the current sim time is rendered whenever one is read."""
        sim = self._backend.sim
        if sim is None:
            raise SafetyError("sim camera read after the backend was disconnected")
        return sim.time_s


def make_example_sim_backend(**cfg_overrides) -> SimBackend:
    """A connected fast-mode SimBackend (callers disconnect it)."""
    backend = SimBackend(SimConfig(**cfg_overrides))
    backend.connect()
    return backend
