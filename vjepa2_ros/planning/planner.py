"""The receding-horizon planner: (camera frame, end-effector state) -> next action + diagnostics.

Holds the goal (one image/latent, or a sequence of sub-goals as in the paper's pick-and-place),
encodes the observation, runs CEM through the WorldModel and returns the plan's first action in
the DROID convention. No I/O, no threads: the control layer calls `plan()` from its own thread.

Beyond the official notebook, each optional and reported in `diagnostics`:
* warm start (CEMConfig.warm_start): the previous plan's sampling mean, shifted one step (the
  last step repeated, so at horizon 1 it is the previous action), seeds the next search;
* hold rule (hold_rule=True): return the zero action unless the plan's energy beats the zero
  action's (spec/SIM_WORLD_MODEL_NOTES.md: without it even a perfect model drifts off the goal);
* sub-goals: advance after N plan steps and/or when the observation's energy to the current
  sub-goal falls below a threshold.
* stop rule (stop_below_energy): on the final goal, once the observation's own energy to it is
  below this, return the zero action without searching (the arm stays at the goal instead of
  drifting on a flat, noisy energy); a disturbance that raises the energy resumes planning.
* action frame (CEMConfig.action_frame, from `vjepa2-ros calibrate`): plan with the state in the
  model's frame and return the action in the robot's (planning.calibration.ActionFrame).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from vjepa2_ros.errors import ConfigError, PlanningError
from vjepa2_ros.planning.cem import CEMConfig, energy, run_cem, warm_start_mean
from vjepa2_ros.planning.timing import StageTimer
from vjepa2_ros.planning.world_model import WorldModel


@dataclass
class PlanResult:
    """One planning step. `action` = [dx, dy, dz, droll, dpitch, dyaw, dgripper] (m, rad, gripper
    delta; rotation deltas Euler_xyz(R_{t+1} R_tᵀ)), one model step of motion."""

    action: np.ndarray                      # float64 [7], never NaN
    plan: np.ndarray                        # float64 [H, 7], the whole planned sequence
    energy: float                           # energy of the returned plan's rollout
    diagnostics: dict[str, Any] = field(default_factory=dict)   # JSON-serialisable


def make_example_frame(height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """A deterministic uint8 RGB test frame [H, W, 3]: a gradient with a coloured square."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                      np.full_like(x, 128)], axis=-1).astype(np.uint8)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    frame[top:top + height // 4, left:left + width // 4] = rng.integers(0, 256, 3, dtype=np.uint8)
    return frame


def make_example_state() -> np.ndarray:
    """A typical Franka end-effector state [x, y, z, roll, pitch, yaw, gripper] (gripper down, open)."""
    return np.array([0.45, 0.0, 0.35, np.pi, 0.0, 0.0, 0.0])


class Planner:
    """CEM model-predictive planner over a WorldModel. Not thread-safe: call it (goals included)
    from one thread, or guard it with a lock.

    Args:
        world_model: the facade over a runtime.
        cem_cfg: CEM settings (CEMConfig.paper() by default).
        seed: seeds the sampling generator; `reset()` re-seeds, so a replay is reproducible.
        hold_rule: return the zero action unless the plan's energy beats it.
        stop_below_energy: the stop rule's threshold on the final goal (None: off).
    """

    def __init__(self, world_model: WorldModel, cem_cfg: CEMConfig | None = None, seed: int = 0,
                 hold_rule: bool = False, stop_below_energy: float | None = None) -> None:
        if stop_below_energy is not None and not stop_below_energy > 0:
            raise ConfigError(f"stop_below_energy must be > 0 or None, got {stop_below_energy!r}")
        self.world_model = world_model
        self.cfg = cem_cfg or CEMConfig()
        self.seed = int(seed)
        self.hold_rule = bool(hold_rule)
        self.stop_below_energy = stop_below_energy
        self.frame = self.cfg.frame()                       # the model's action frame, or None
        self._goals: list[torch.Tensor] = []            # each [N, D] float32 on the model device
        self._goal_index = 0
        self._steps_on_goal = 0
        self._advance_after: list[int] | None = None
        self._advance_below: float | None = None
        self.reset()

    # -- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the warm-start plan, restart the current goal's step count, re-seed sampling."""
        self._prev_mean: torch.Tensor | None = None
        self._steps_on_goal = 0
        self.generator = torch.Generator(device=self.world_model.device).manual_seed(self.seed)

    def close(self) -> None:
        """Free the model's device memory; the planner is unusable afterwards."""
        self.world_model.runtime.release()

    @property
    def has_goal(self) -> bool:
        return bool(self._goals)

    @property
    def goal_index(self) -> int:
        """Index of the current sub-goal (0 for a single goal)."""
        return self._goal_index

    # -- goals -------------------------------------------------------------------------------
    def _goal_latent(self, goal: np.ndarray | torch.Tensor) -> torch.Tensor:
        """A uint8 image [H, W, 3] (encoded) or a float latent [N, D] -> latent [N, D] float32."""
        is_image = (isinstance(goal, np.ndarray) and goal.dtype == np.uint8) or \
            (isinstance(goal, torch.Tensor) and goal.dtype == torch.uint8)
        if is_image:
            if goal.ndim != 3:
                raise PlanningError(f"goal image must be one uint8 frame [H, W, 3], got shape {tuple(goal.shape)}")
            z = self.world_model.encode(goal)[0]
        else:
            z = torch.as_tensor(goal)
            if not z.is_floating_point():
                raise PlanningError(f"goal must be a uint8 image or a float latent, got dtype {z.dtype}")
        shape = self.world_model.latent_shape
        if tuple(z.shape) != shape:
            raise PlanningError(f"goal latent must be [N, D] = {list(shape)} for this model, got {tuple(z.shape)}")
        z = z.to(device=self.world_model.device, dtype=torch.float32)
        if not bool(torch.isfinite(z).all()):
            raise PlanningError("goal latent contains NaN/inf")
        return z

    def set_goal_image(self, frame: np.ndarray) -> None:
        """One goal image, uint8 RGB [H, W, 3]."""
        self.set_goals([frame])

    def set_goal_latent(self, z: torch.Tensor | np.ndarray) -> None:
        """One goal latent [N, D], normalised like `WorldModel.encode` output."""
        self.set_goals([z])

    def set_goals(self, goals: Sequence[np.ndarray | torch.Tensor],
                  advance_after_steps: int | Sequence[int] | None = None,
                  advance_below_energy: float | None = None) -> None:
        """A sequence of sub-goals (uint8 images [H, W, 3] or latents [N, D]), reached in order.

        advance_after_steps: plan steps spent on each sub-goal before moving on (one int for all,
            or one per sub-goal; the paper's pick-and-place: [4, 10, 4]).
        advance_below_energy: also move on once the observation's energy to the sub-goal is below this.
        The last goal is never left. Resets the warm start.
        """
        if len(goals) == 0:
            raise PlanningError("set_goals needs at least one goal image or latent")
        if advance_after_steps is not None:
            steps = [advance_after_steps] * len(goals) if isinstance(advance_after_steps, int) \
                else list(advance_after_steps)
            if len(steps) not in (len(goals), len(goals) - 1) or any(int(s) < 1 for s in steps):
                raise ConfigError(f"advance_after_steps must be a positive int or one positive int per sub-goal "
                                  f"({len(goals)}), got {advance_after_steps!r}")
            advance_after_steps = [int(s) for s in steps]
        if advance_below_energy is not None and not advance_below_energy > 0:
            raise ConfigError(f"advance_below_energy must be > 0, got {advance_below_energy!r}")
        self._goals = [self._goal_latent(g) for g in goals]
        self._advance_after, self._advance_below = advance_after_steps, advance_below_energy
        self._goal_index = 0
        self.reset()

    def clear_goal(self) -> None:
        self._goals, self._goal_index = [], 0
        self.reset()

    def set_action_frame(self, frame: Sequence[float] | None, center_m: Sequence[float] = (0.0, 0.0, 0.0)) -> None:
        """Plan in this action frame from the next plan on: 9 numbers (a 3x3 rotation, row-major)
        about center_m (m), e.g. `~/calibrate`'s result; None: the robot's frame. ConfigError for a
        bad frame, before anything changes. The warm start (a plan in the old frame) is dropped."""
        from dataclasses import replace
        cfg = replace(self.cfg, action_frame=None if frame is None else tuple(float(v) for v in frame),
                      action_frame_center_m=tuple(float(v) for v in center_m))      # checked here
        self.cfg, self.frame = cfg, cfg.frame()
        self._prev_mean = None

    def _maybe_advance(self, obs_energy: float) -> bool:
        """Move to the next sub-goal when its step count or energy threshold says so."""
        if self._goal_index + 1 >= len(self._goals):
            return False
        by_steps = self._advance_after is not None and self._steps_on_goal >= self._advance_after[self._goal_index]
        by_energy = self._advance_below is not None and obs_energy < self._advance_below
        if by_steps or by_energy:
            self._goal_index += 1
            self._steps_on_goal = 0
            self._prev_mean = None
            return True
        return False

    # -- inputs ------------------------------------------------------------------------------
    def _state(self, state: np.ndarray | torch.Tensor) -> torch.Tensor:
        s = torch.as_tensor(np.asarray(state, dtype=np.float64) if not isinstance(state, torch.Tensor) else state)
        if tuple(s.shape) != (7,) or not s.is_floating_point():
            raise PlanningError(f"state must be 7 floats [x, y, z, roll, pitch, yaw, gripper], "
                                f"got shape {tuple(s.shape)} dtype {s.dtype}")
        if not bool(torch.isfinite(s).all()):
            raise PlanningError(f"state contains NaN/inf: {s.tolist()}")
        return s.to(device=self.world_model.device, dtype=torch.float64)

    def _observe(self, frame: np.ndarray, state: np.ndarray | torch.Tensor, timer: StageTimer
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.has_goal:
            raise PlanningError("no goal set: call set_goal_image(), set_goal_latent() or set_goals() first")
        s = self._state(state)
        with timer.stage("encode"):
            z = self.world_model.encode(frame)[0]
        if not bool(torch.isfinite(z).all()):
            raise PlanningError("the observation's latent contains NaN/inf (check the frame and the model weights)")
        return z, s

    # -- planning ----------------------------------------------------------------------------
    def plan(self, frame: np.ndarray, state: np.ndarray | torch.Tensor) -> PlanResult:
        """frame uint8 RGB [H, W, 3], state [7] -> PlanResult (first action of the best plan)."""
        t0 = time.perf_counter()
        wm, cfg = self.world_model, self.cfg
        timer = StageTimer(wm.device)
        z, s = self._observe(frame, state, timer)
        obs_energy = float(energy(z[None].float(), self._goals[self._goal_index])[0])
        if self._maybe_advance(obs_energy):
            obs_energy = float(energy(z[None].float(), self._goals[self._goal_index])[0])
        goal = self._goals[self._goal_index]
        if (self.stop_below_energy is not None and self._goal_index + 1 == len(self._goals)
                and obs_energy < self.stop_below_energy):
            return self._at_goal(obs_energy, timer, t0)
        init = None
        if cfg.warm_start and self._prev_mean is not None:
            init = warm_start_mean(self._prev_mean)
        if self.frame is not None:                          # plan in the model's (calibrated) frame
            s = self.frame.state_to_model(s)
        res = run_cem(wm, z, s, goal, cfg, generator=self.generator, init_mean=init, timer=timer)

        # The plan and the zero action, rolled out together: the plan's energy, and the hold rule.
        with timer.stage("evaluate"):
            candidates = torch.stack([res.plan, torch.zeros_like(res.plan)])          # 2, H, 7
            z_final, _ = wm.rollout(z, s, candidates, timer=None)
            e_plan, e_zero = energy(z_final.float(), goal).tolist()
        held = self.hold_rule and not e_plan < e_zero
        plan = torch.zeros_like(res.plan) if held else res.plan
        plan_np = plan.double().cpu().numpy()
        if self.frame is not None:                          # execute in the robot's frame: Rᵀ · action
            plan_np = self.frame.actions_to_robot(plan_np)
        if not np.isfinite(plan_np).all() or not np.isfinite(e_plan):
            raise PlanningError(f"planner produced a non-finite plan {plan_np.tolist()} (energy {e_plan})")
        if cfg.warm_start:
            self._prev_mean = res.mean
        self._steps_on_goal += 1

        timings = timer.as_dict()
        timings["total_s"] = time.perf_counter() - t0
        diagnostics = {
            "energy": e_zero if held else e_plan,
            "plan_energy": e_plan,
            "zero_action_energy": e_zero,
            "observation_energy": obs_energy,
            "held": held,
            "at_goal": False,
            "hold_rule": self.hold_rule,
            "goal_index": self._goal_index,
            "goal_count": len(self._goals),
            "warm_started": init is not None,
            "action_frame": self.frame is not None,
            "iterations": res.iterations,
            "stop_reason": res.stop_reason,
            "best_energy": res.best_energy,
            "mean_energy": res.mean_energy,
            "elite_spread": res.elite_spread,
            "best_sample_energy": res.best_sample_energy,
            "timings": timings,
            "cem": asdict(cfg),
        }
        return PlanResult(action=plan_np[0].copy(), plan=plan_np, energy=float(diagnostics["energy"]),
                          diagnostics=diagnostics)

    def _at_goal(self, obs_energy: float, timer: StageTimer, t0: float) -> PlanResult:
        """The stop rule's answer: the zero action, the observation's energy, no search."""
        self._steps_on_goal += 1
        self._prev_mean = None                              # a later search starts afresh
        timings = timer.as_dict()
        timings["total_s"] = time.perf_counter() - t0
        plan = np.zeros((self.cfg.horizon, 7))
        diagnostics = {"energy": obs_energy, "observation_energy": obs_energy, "held": True, "at_goal": True,
                       "stop_below_energy": self.stop_below_energy, "hold_rule": self.hold_rule,
                       "goal_index": self._goal_index, "goal_count": len(self._goals), "warm_started": False,
                       "action_frame": self.frame is not None, "timings": timings, "cem": asdict(self.cfg)}
        return PlanResult(action=plan[0].copy(), plan=plan, energy=obs_energy, diagnostics=diagnostics)

    def energy_landscape(self, frame: np.ndarray, state: np.ndarray | torch.Tensor,
                         grid: Sequence[float] | np.ndarray, axes: tuple[str, str] = ("x", "y")) -> dict[str, Any]:
        """The paper's Fig. 9 sweep: energy of one-step actions Δ(axes[0]), Δ(axes[1]) over `grid` (m),
        the other dims 0, against the current goal.

        Returns {"axes", "offsets_m" [G], "energy" np [G, G] (row: first axis), "best_offset_m" (a, b),
        "best_energy", "zero_energy"}.
        """
        index = {"x": 0, "y": 1, "z": 2}
        if len(axes) != 2 or any(a not in index for a in axes) or axes[0] == axes[1]:
            raise ConfigError(f"axes must be two different names of x, y, z, got {axes!r}")
        offsets = np.asarray(grid, dtype=np.float64).reshape(-1)
        if offsets.size == 0 or not np.isfinite(offsets).all():
            raise ConfigError(f"grid must be finite offsets in metres, got {grid!r}")
        timer = StageTimer(self.world_model.device)
        z, s = self._observe(frame, state, timer)
        G = offsets.size
        a, b = np.meshgrid(offsets, offsets, indexing="ij")
        actions = torch.zeros(G * G, 1, 7)
        actions[:, 0, index[axes[0]]] = torch.from_numpy(a.reshape(-1)).float()
        actions[:, 0, index[axes[1]]] = torch.from_numpy(b.reshape(-1)).float()
        z_final, _ = self.world_model.rollout(z, s, actions.to(self.world_model.device))
        e = energy(z_final.float(), self._goals[self._goal_index]).cpu().double().numpy().reshape(G, G)
        i, j = np.unravel_index(int(np.argmin(e)), e.shape)
        zero = torch.zeros(1, 1, 7, device=self.world_model.device)
        zero_e = float(energy(self.world_model.rollout(z, s, zero)[0].float(), self._goals[self._goal_index])[0])
        return {"axes": list(axes), "offsets_m": offsets.tolist(), "energy": e,
                "best_offset_m": (float(offsets[i]), float(offsets[j])), "best_energy": float(e[i, j]),
                "zero_energy": zero_e}
