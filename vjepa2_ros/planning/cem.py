"""Cross-entropy method over end-effector action sequences (spec d; paper settings spec i).

Configured like Meta (`CEMConfig.notebook()`, or any config with the extras off) this is the
official `notebooks/utils/mpc_utils.cem` float for float: per iteration and horizon step draw
u = N(0,1)·std[h] + mean[h] over (Δx, Δy, Δz, Δgripper), bound Δxyz, clip Δgripper to ±0.75,
roll the world model out, keep the `topk` lowest energies, refit mean and *unbiased* std with
momentum (separate gripper momenta), and return the mean with rotation 0 and the gripper
dead-banded at |Δg| < 0.25.

Extras, each off by default and each reported in `CEMResult`: the paper's L1-ball bound
(`bound="l1"`, the default, as the paper; Meta's code uses the per-coordinate box), rotation
sampling, a warm-start mean, early stop on the elite spread, a wall-clock budget, and a
position box that keeps every sampled end-effector position inside the station's workspace.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from vjepa2_ros.errors import ConfigError, PlanningError
from vjepa2_ros.planning.calibration import ActionFrame
from vjepa2_ros.planning.pose import integrate_actions
from vjepa2_ros.planning.timing import StageTimer

BOUNDS = ("l1", "box")
XYZ, ROT, GRIP = (0, 1, 2), (3, 4, 5), 6
ENERGY_CHUNK = 128   # samples per energy reduction


class PredictsNext(Protocol):
    """What `cem` needs from a world model (WorldModel adds caching, engines and chunking)."""

    def predict_next(self, z: torch.Tensor, actions: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """z [S, T, N, D], actions [S, T, 7], states [S, T, 7] -> normalised latent of step T+1 [S, N, D]."""


@dataclass(frozen=True)
class CEMConfig:
    """CEM settings. Defaults are the paper's robot setting (App. B.2): horizon 1, 800 samples,
    top 10, 10 iterations, Δxyz in an L1 ball of 7.5 cm; momenta are the released WorldModel's."""

    horizon: int = 1                       # model steps planned ahead
    samples: int = 800                     # action sequences per iteration
    topk: int = 10                         # elites (>= 2: their std is unbiased)
    iterations: int = 10
    momentum_mean: float = 0.15            # weight of the old mean (xyz, rotation)
    momentum_std: float = 0.15             # weight of the old std (xyz, rotation)
    momentum_mean_gripper: float = 0.15
    momentum_std_gripper: float = 0.15
    maxnorm: float = 0.075                 # m per step: L1 radius of Δxyz ("l1") or per-axis half-width ("box")
    bound: str = "l1"                      # "l1" (paper) or "box" (Meta's code)
    close_gripper: int | None = None       # Meta's option: Δgripper = 1.0 from this horizon step on
    gripper_clip: float = 0.75             # |Δgripper| sample clip (Meta: 0.75)
    gripper_deadband: float = 0.25         # returned |Δgripper| below this becomes 0 (Meta: 0.25)
    plan_rotation: bool = False            # beyond Meta: also sample Δroll, Δpitch, Δyaw
    maxnorm_rot: float = 0.1               # rad per step, per-axis bound on rotation deltas (plan_rotation)
    warm_start: bool = False               # beyond Meta: start from the previous plan shifted one step (Planner)
    early_stop_spread: float | None = None  # beyond Meta: stop once max elite std < this (m / rad / gripper)
    time_budget_s: float | None = None     # beyond Meta: stop iterating before this many seconds of CEM pass
    # Beyond Meta: keep the planned end-effector position (the state's xyz plus the summed Δxyz, in
    # the model's state frame, m) inside [position_min_m, position_max_m]; a state already outside
    # is never pushed further out. Both or neither.
    position_min_m: tuple[float, float, float] | None = None
    position_max_m: tuple[float, float, float] | None = None
    # Beyond Meta: the model's action frame from `vjepa2-ros calibrate` (planning.calibration): 9
    # numbers, a 3x3 rotation row-major, model frame = R · robot frame, states rotated about
    # action_frame_center_m (m); plans are rotated back by Rᵀ before execution. None: the robot's frame.
    action_frame: tuple[float, ...] | None = None
    action_frame_center_m: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        for name in ("horizon", "samples", "topk", "iterations"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"CEMConfig.{name} must be a positive int, got {v!r}")
        if not 2 <= self.topk <= self.samples:
            raise ConfigError(f"CEMConfig.topk must be in [2, samples={self.samples}] (unbiased elite std), "
                              f"got {self.topk}")
        for name in ("momentum_mean", "momentum_std", "momentum_mean_gripper", "momentum_std_gripper"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"CEMConfig.{name} must be in [0, 1], got {v!r}")
        for name in ("maxnorm", "gripper_clip", "maxnorm_rot"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"CEMConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.bound not in BOUNDS:
            raise ConfigError(f"CEMConfig.bound must be one of {BOUNDS}, got {self.bound!r}")
        if self.close_gripper is not None and (not isinstance(self.close_gripper, int) or self.close_gripper < 0):
            raise ConfigError(f"CEMConfig.close_gripper must be None or a horizon step >= 0, "
                              f"got {self.close_gripper!r}")
        if not self.gripper_deadband >= 0:
            raise ConfigError(f"CEMConfig.gripper_deadband must be >= 0, got {self.gripper_deadband!r}")
        if self.early_stop_spread is not None and not self.early_stop_spread > 0:
            raise ConfigError(f"CEMConfig.early_stop_spread must be None or > 0, got {self.early_stop_spread!r}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ConfigError(f"CEMConfig.time_budget_s must be None or > 0 seconds, got {self.time_budget_s!r}")
        lo, hi = self.position_min_m, self.position_max_m
        if (lo is None) != (hi is None):
            raise ConfigError("CEMConfig.position_min_m and position_max_m must be given together (or neither)")
        if lo is not None and not (len(lo) == len(hi) == 3 and all(a < b for a, b in zip(lo, hi))):
            raise ConfigError(f"CEMConfig.position_min_m {lo} must be 3 numbers each below position_max_m {hi} (m)")
        if self.action_frame is not None:
            self.frame()                                   # a 3x3 rotation about a finite centre, or ConfigError

    def frame(self) -> ActionFrame | None:
        """The model's action frame (action_frame), or None when planning in the robot's frame."""
        if self.action_frame is None:
            return None
        if len(self.action_frame) != 9:
            raise ConfigError(f"CEMConfig.action_frame must be 9 numbers (a 3x3 rotation, row-major), "
                              f"got {len(self.action_frame)}")
        return ActionFrame(np.reshape(np.asarray(self.action_frame, dtype=np.float64), (3, 3)),
                           np.asarray(self.action_frame_center_m, dtype=np.float64))

    @property
    def planned_dims(self) -> tuple[int, ...]:
        """Indices of the 7-D action that CEM samples, gripper last."""
        return XYZ + ROT + (GRIP,) if self.plan_rotation else XYZ + (GRIP,)

    @classmethod
    def paper(cls, **overrides: Any) -> "CEMConfig":
        """The paper's robot setting (the defaults)."""
        return cls(**overrides)

    @classmethod
    def notebook(cls, **overrides: Any) -> "CEMConfig":
        """The released `WorldModel`'s default `mpc_args` (Meta's code: box bound)."""
        return cls(**{**dict(horizon=2, samples=400, topk=10, iterations=10, momentum_mean=0.15,
                             momentum_std=0.15, maxnorm=0.05, bound="box"), **overrides})


@dataclass
class CEMResult:
    """A plan and how CEM got there. Tensors live on the planning device."""

    plan: torch.Tensor                     # [H, 7] returned actions (rotation 0 unless planned, gripper dead-banded)
    mean: torch.Tensor                     # [H, P] final sampling mean over the planned dims (warm start)
    std: torch.Tensor                      # [H, P]
    best_energy: list[float] = field(default_factory=list)    # per iteration, lowest sample energy
    mean_energy: list[float] = field(default_factory=list)    # per iteration, mean sample energy
    elite_spread: list[float] = field(default_factory=list)   # per iteration, max elite std
    stop_reason: str = "iterations"        # "iterations" | "converged" | "time_budget"
    best_sample: torch.Tensor | None = None   # [H, 7] the lowest-energy sample seen
    best_sample_energy: float = float("inf")

    @property
    def iterations(self) -> int:
        return len(self.best_energy)


def energy(pred: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """The official `l1` objective: mean |pred − goal| over all tokens and channels.

    pred [S, N, D], goal [N, D] -> [S]. Lower is better.
    """
    if pred.dim() != 3 or tuple(goal.shape) != tuple(pred.shape[1:]):
        raise PlanningError(f"energy needs pred [S, N, D] and goal [N, D] of the same N, D; "
                            f"got pred {tuple(pred.shape)}, goal {tuple(goal.shape)}")
    return (pred - goal).abs().flatten(1).mean(dim=-1)


def rollout_final(world_model: Any, z_context: torch.Tensor, s_context: torch.Tensor, actions: torch.Tensor,
                  timer: StageTimer | None = None) -> torch.Tensor:
    """Final latent of each action sequence: actions [S, H, 7] -> [S, N, D].

    Uses `world_model.rollout` (WorldModel: KV cache, chunks) when there is one, else steps
    `predict_next` over the growing history with poses integrated from the actions.
    """
    if hasattr(world_model, "rollout"):
        return world_model.rollout(z_context, s_context, actions, timer=timer)[0]
    timer = timer or StageTimer()
    S, H = actions.shape[:2]
    with timer.stage("pose"):
        # float64 like the official scipy path, then the latents' dtype.
        states = integrate_actions(s_context.float().double(), actions.double()).to(actions.dtype)   # S, H+1, 7
    z_hist = z_context.expand(S, 1, *z_context.shape)                                         # S, 1, N, D (view)
    with timer.stage("predict"):
        for h in range(H):
            z_next = world_model.predict_next(z_hist, actions[:, :h + 1], states[:, :h + 1])   # S, N, D
            z_hist = torch.cat([z_hist, z_next.unsqueeze(1)], dim=1)
    return z_next


def _bound(u: torch.Tensor, cfg: CEMConfig) -> torch.Tensor:
    """Bound raw samples [..., P] in place of the planned dims (xyz first, gripper last)."""
    if cfg.bound == "box":
        u[..., :3] = torch.clip(u[..., :3], min=-cfg.maxnorm, max=cfg.maxnorm)
    else:   # radial shrink into the L1 ball: direction kept, |Δx|+|Δy|+|Δz| <= maxnorm
        l1 = u[..., :3].abs().sum(dim=-1, keepdim=True)
        u[..., :3] = u[..., :3] * torch.clamp(cfg.maxnorm / l1.clamp_min(1e-12), max=1.0)
    if cfg.plan_rotation:
        u[..., 3:6] = torch.clip(u[..., 3:6], min=-cfg.maxnorm_rot, max=cfg.maxnorm_rot)
    u[..., -1:] = torch.clip(u[..., -1:], min=-cfg.gripper_clip, max=cfg.gripper_clip)
    return u


def _keep_in_box(u: torch.Tensor, position_m: torch.Tensor, cfg: CEMConfig) -> torch.Tensor:
    """Clip the positions that samples u [H, S, P] reach from position_m [3] into the config's box
    (widened to hold position_m), in place. Clipping is 1-Lipschitz per axis, so no step grows
    and the maxnorm bound still holds."""
    if cfg.position_min_m is None:
        return u
    p0 = position_m.to(u.dtype)
    lo = torch.minimum(torch.tensor(cfg.position_min_m, dtype=u.dtype, device=u.device), p0)
    hi = torch.maximum(torch.tensor(cfg.position_max_m, dtype=u.dtype, device=u.device), p0)
    reached = torch.clamp(p0 + u[..., :3].cumsum(dim=0), min=lo, max=hi)        # H, S, 3
    u[..., :3] = torch.diff(reached, dim=0, prepend=p0.expand_as(reached[:1]))
    return u


def _to_actions(u: torch.Tensor, cfg: CEMConfig, close_gripper: bool = True) -> torch.Tensor:
    """Planned dims [..., H, P] -> full 7-D actions [..., H, 7] (unplanned rotation = 0)."""
    out = u.new_zeros(*u.shape[:-1], 7)
    out[..., list(cfg.planned_dims)] = u
    if close_gripper and cfg.close_gripper is not None:
        out[..., cfg.close_gripper:, GRIP] = 1.0
    return out


def initial_distribution(cfg: CEMConfig, device: torch.device | str = "cpu"
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Meta's start: mean 0, std maxnorm for xyz (maxnorm_rot for rotation), 1 for the gripper. Each [H, P]."""
    H, P = cfg.horizon, len(cfg.planned_dims)
    mean = torch.zeros(H, P, device=device)
    std = torch.ones(H, P, device=device) * cfg.maxnorm
    if cfg.plan_rotation:
        std[:, 3:6] = cfg.maxnorm_rot
    std[:, -1] = 1.0
    return mean, std


def warm_start_mean(prev_mean: torch.Tensor) -> torch.Tensor:
    """The previous plan's sampling mean [H, P] shifted one step: step h+1 becomes step h and the
    last step is repeated (at horizon 1 the previous action itself)."""
    return torch.cat([prev_mean[1:], prev_mean[-1:]])


def _momenta(cfg: CEMConfig, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(new-mean, old-mean, new-std, old-std) weights per planned dim, each [P] float32.

    Rounded from Python doubles, exactly as Meta's `x * (1.0 - m) + y * m` rounds its scalars.
    """
    n = len(cfg.planned_dims) - 1
    w = lambda body, grip: torch.tensor([body] * n + [grip], device=device)   # noqa: E731
    return (w(1.0 - cfg.momentum_mean, 1.0 - cfg.momentum_mean_gripper),
            w(cfg.momentum_mean, cfg.momentum_mean_gripper),
            w(1.0 - cfg.momentum_std, 1.0 - cfg.momentum_std_gripper),
            w(cfg.momentum_std, cfg.momentum_std_gripper))


def run_cem(world_model: PredictsNext, z_context: torch.Tensor, s_context: torch.Tensor, z_goal: torch.Tensor,
            cfg: CEMConfig, noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
            init_mean: torch.Tensor | None = None, timer: StageTimer | None = None) -> CEMResult:
    """CEM with diagnostics. z_context [N, D], s_context [7], z_goal [N, D].

    noise: pre-drawn standard normals [iterations, horizon, samples, P] (P = 4: x, y, z, gripper;
    7 with rotation), for exact replay; else drawn from `generator`.
    init_mean: [H, P] starting mean (warm start); std always starts at Meta's values.
    """
    H, S, P, K = cfg.horizon, cfg.samples, len(cfg.planned_dims), cfg.topk
    device = z_context.device
    timer = timer or StageTimer(device)
    if noise is not None and tuple(noise.shape) != (cfg.iterations, H, S, P):
        raise ConfigError(f"noise must be [iterations={cfg.iterations}, horizon={H}, samples={S}, {P}], "
                          f"got {tuple(noise.shape)}")
    mean, std = initial_distribution(cfg, device)
    if init_mean is not None:
        if tuple(init_mean.shape) != (H, P):
            raise ConfigError(f"init_mean must be [{H}, {P}], got {tuple(init_mean.shape)}")
        mean = init_mean.to(device=device, dtype=mean.dtype).clone()
    new_m, old_m, new_s, old_s = _momenta(cfg, device)
    result = CEMResult(plan=mean, mean=mean, std=std)
    start = time.perf_counter()
    for it in range(cfg.iterations):
        with timer.stage("sample"):
            eps = noise[it].to(device) if noise is not None else torch.randn(
                (H, S, P), generator=generator, device=device)
            u = _bound(eps * std[:, None, :] + mean[:, None, :], cfg)                # H, S, P
            u = _keep_in_box(u, s_context[:3].to(device), cfg)
            actions = _to_actions(u.transpose(0, 1), cfg)                            # S, H, 7
        z_final = rollout_final(world_model, z_context, s_context, actions, timer)  # S, N, D
        with timer.stage("select"):
            # In the goal's dtype (float32), a chunk at a time: bf16 latents are not copied whole.
            e = torch.cat([energy(c.to(z_goal.dtype), z_goal) for c in z_final.split(ENERGY_CHUNK)])   # S
            if not bool(torch.isfinite(e).all()):
                raise PlanningError(f"world model produced non-finite energies in CEM iteration {it} "
                                    f"({int((~torch.isfinite(e)).sum())} of {S} samples)")
            idx = e.topk(K, largest=False).indices
            elites = actions[idx]                                                    # K, H, 7
            elite_mean = elites.mean(dim=0)[:, list(cfg.planned_dims)]               # H, P
            elite_std = elites.std(dim=0)[:, list(cfg.planned_dims)]
            mean = elite_mean * new_m + mean * old_m
            std = elite_std * new_s + std * old_s
            best = float(e[idx[0]])
            result.best_energy.append(best)
            result.mean_energy.append(float(e.mean()))
            result.elite_spread.append(float(elite_std.max()))
            if best < result.best_sample_energy:
                result.best_sample_energy, result.best_sample = best, actions[idx[0]].clone()
        if cfg.early_stop_spread is not None and result.elite_spread[-1] < cfg.early_stop_spread:
            result.stop_reason = "converged"
            break
        elapsed = time.perf_counter() - start
        if (cfg.time_budget_s is not None and it + 1 < cfg.iterations
                and elapsed * (it + 2) / (it + 1) > cfg.time_budget_s):   # the next iteration would overrun
            result.stop_reason = "time_budget"
            break
    plan = _to_actions(mean, cfg, close_gripper=False)          # Meta returns the mean, dead-banded
    g = plan[:, GRIP]
    plan[:, GRIP] = torch.where(g.abs() < cfg.gripper_deadband, torch.zeros_like(g), g)
    result.plan, result.mean, result.std = plan, mean, std
    return result


def cem(world_model: PredictsNext, z_context: torch.Tensor, s_context: torch.Tensor, z_goal: torch.Tensor,
        cfg: CEMConfig, noise: torch.Tensor | None = None, generator: torch.Generator | None = None
        ) -> torch.Tensor:
    """The planned action sequence [H, 7] (see `run_cem` for diagnostics and warm starts)."""
    return run_cem(world_model, z_context, s_context, z_goal, cfg, noise, generator).plan
