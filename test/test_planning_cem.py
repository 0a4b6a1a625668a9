"""CEM: the official trace exactly, convergence on toy world models, the extras, bad input."""

import time

import pytest
import torch

from conftest import load_fixture
from vjepa2_ros.errors import ConfigError, PlanningError
from vjepa2_ros.planning import CEMConfig, cem, energy, integrate_pose, run_cem


class StubWorldModel:
    """The fixture's stub: next = last latent + last action @ W, broadcast over the tokens."""

    def __init__(self, W: torch.Tensor) -> None:
        self.W = W
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def predict_next(self, z, actions, states):
        self.calls.append((actions.clone(), states.clone()))
        return z[:, -1] + (actions[:, -1] @ self.W)[:, None, :]


class PoseWorldModel:
    """Latent = an injective linear image of the pose reached: the optimum is the goal pose.

    predict_next integrates the last state with the last action itself, so it also checks the
    states CEM feeds along the rollout.
    """

    def __init__(self, tokens: int = 3, dim: int = 8, seed: int = 0, sleep_s: float = 0.0) -> None:
        self.W = torch.randn(7, dim, generator=torch.Generator().manual_seed(seed))
        self.tokens, self.sleep_s = tokens, sleep_s

    def latent(self, pose: torch.Tensor) -> torch.Tensor:             # [S, 7] -> [S, N, D]
        return (pose.float() @ self.W)[:, None, :].expand(-1, self.tokens, -1)

    def predict_next(self, z, actions, states):
        time.sleep(self.sleep_s)
        return self.latent(integrate_pose(states[:, -1].double(), actions[:, -1].double()))


START = torch.tensor([0.5, 0.0, 0.3, 3.1, 0.1, -0.4, 0.2])


def toy_problem(delta: torch.Tensor, seed: int = 0, **kw):
    wm = PoseWorldModel(seed=seed, **kw)
    goal_pose = integrate_pose(START.double(), delta.double())
    return wm, wm.latent(START[None])[0], wm.latent(goal_pose[None])[0]


def test_energy_matches_official():
    h = load_fixture("planning_helpers.safetensors")
    assert torch.equal(energy(h["pred_latents"][:, 0], h["goal_latent"][0, 0]), h["energy"])


def test_official_cem_trace_exactly():
    f = load_fixture("cem_trace_stub.safetensors")
    cfg = CEMConfig(horizon=2, iterations=3, samples=16, topk=4, momentum_mean=0.15, momentum_std=0.75,
                    momentum_mean_gripper=0.15, momentum_std_gripper=0.15, maxnorm=0.075, bound="box")
    wm = StubWorldModel(f["W_stub"])
    plan = cem(wm, f["context_frame"][0, 0], f["context_pose"][0, 0], f["goal_frame"][0, 0], cfg, noise=f["noise"])
    assert plan.dtype == torch.float32
    assert torch.equal(plan, f["action_out"][0])
    # Rollout structure: 3 iterations x 2 steps, S samples, history grows, rotation never sampled.
    assert len(wm.calls) == 6 and wm.calls[1][0].shape == (16, 2, 7)
    assert all(float(a[..., 3:6].abs().max()) == 0.0 for a, _ in wm.calls)


@pytest.mark.parametrize("bound", ["box", "l1"])
def test_converges_to_closed_form_optimum(bound):
    delta = torch.tensor([0.02, -0.015, 0.01, 0.0, 0.0, 0.0, 0.6])
    wm, z0, goal = toy_problem(delta)
    cfg = CEMConfig(horizon=1, samples=200, topk=10, iterations=12, maxnorm=0.075, bound=bound)
    res = run_cem(wm, z0, START, goal, cfg, generator=torch.Generator().manual_seed(0))
    assert res.plan.shape == (1, 7)
    torch.testing.assert_close(res.plan[0, :3], delta[:3], atol=3e-3, rtol=0)
    assert abs(res.plan[0, 6].item() - 0.6) < 0.05
    assert res.best_energy[-1] < res.best_energy[0] and len(res.best_energy) == 12
    assert res.plan[0, 3:6].abs().max().item() == 0.0


def test_horizon_two_reaches_goal_with_the_sum_of_actions():
    delta = torch.tensor([0.05, 0.03, -0.02, 0.0, 0.0, 0.0, 0.0])
    wm, z0, goal = toy_problem(delta, seed=1)
    cfg = CEMConfig(horizon=2, samples=300, topk=10, iterations=15, bound="box", maxnorm=0.05)
    plan = cem(wm, z0, START, goal, cfg, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(plan[:, :3].sum(0), delta[:3], atol=5e-3, rtol=0)


def test_rotation_sampling_finds_a_rotation():
    delta = torch.tensor([0.01, 0.0, 0.0, 0.05, -0.03, 0.04, 0.0])
    wm, z0, goal = toy_problem(delta, seed=2)
    cfg = CEMConfig(samples=300, iterations=15, plan_rotation=True, maxnorm_rot=0.1, bound="box")
    plan = cem(wm, z0, START, goal, cfg, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(plan[0, :6], delta[:6], atol=6e-3, rtol=0)


def test_seeded_plans_are_reproducible():
    wm, z0, goal = toy_problem(torch.tensor([0.02, 0.0, 0.01, 0, 0, 0, 0.0]))
    cfg = CEMConfig(samples=64, iterations=3)
    a = cem(wm, z0, START, goal, cfg, generator=torch.Generator().manual_seed(7))
    b = cem(wm, z0, START, goal, cfg, generator=torch.Generator().manual_seed(7))
    c = cem(wm, z0, START, goal, cfg, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("bound", ["box", "l1"])
def test_samples_respect_the_bounds(bound):
    wm = StubWorldModel(torch.randn(7, 8, generator=torch.Generator().manual_seed(0)))
    cfg = CEMConfig(horizon=2, samples=500, iterations=2, maxnorm=0.05, bound=bound, close_gripper=1)
    cem(wm, torch.zeros(2, 8), START, torch.ones(2, 8), cfg, generator=torch.Generator().manual_seed(0))
    actions = torch.cat([a for a, _ in wm.calls if a.shape[1] == 2])
    xyz = actions[..., :3]
    if bound == "box":
        assert xyz.abs().max().item() <= 0.05 + 1e-7
    else:
        assert xyz.abs().sum(-1).max().item() <= 0.05 + 1e-6
        assert xyz.abs().max().item() < 0.05            # a ball, not a box: corners are out
    assert actions[:, 0, 6].abs().max().item() <= 0.75
    assert bool((actions[:, 1, 6] == 1.0).all())      # close_gripper=1: Meta forces 1.0 from step 1
    assert actions[..., 3:6].abs().max().item() == 0.0


def test_position_box_keeps_every_sample_inside_and_never_pushes_further_out():
    # START is at x 0.5, z 0.3: the box's x ceiling 0.52 and z floor 0.31 (START is below it)
    lo, hi = (0.40, -0.2, 0.31), (0.52, 0.2, 0.5)
    wm = StubWorldModel(torch.randn(7, 8, generator=torch.Generator().manual_seed(0)))
    cfg = CEMConfig(horizon=2, samples=400, iterations=2, maxnorm=0.075, position_min_m=lo, position_max_m=hi)
    plan = cem(wm, torch.zeros(2, 8), START, torch.ones(2, 8), cfg, generator=torch.Generator().manual_seed(0))
    actions = torch.cat([a for a, _ in wm.calls if a.shape[1] == 2])                  # S, 2, 7
    reached = START[:3] + actions[..., :3].cumsum(dim=1)                               # S, 2, 3
    assert reached[..., 0].max() <= 0.52 + 1e-6 and reached[..., 1].abs().max() <= 0.2 + 1e-6
    assert reached[..., 2].min() >= 0.3 - 1e-6                                         # not pushed below START
    assert reached[..., 0].max() > 0.52 - 1e-3                                         # the box binds
    assert actions[..., :3].abs().sum(-1).max() <= 0.075 + 1e-6                        # steps did not grow
    assert START[0] + plan[:, 0].sum() <= 0.52 + 1e-6
    with pytest.raises(ConfigError, match="together"):
        CEMConfig(position_min_m=lo)
    with pytest.raises(ConfigError, match="below position_max_m"):
        CEMConfig(position_min_m=hi, position_max_m=lo)


def test_warm_start_mean_is_used():
    wm, z0, goal = toy_problem(torch.tensor([0.02, 0.0, 0.0, 0, 0, 0, 0.0]))
    init = torch.tensor([[0.01, -0.02, 0.03, 0.5]])
    # momentum 1 keeps the old mean: one iteration must return the warm-start mean itself.
    cfg = CEMConfig(samples=32, iterations=1, momentum_mean=1.0, momentum_mean_gripper=1.0)
    res = run_cem(wm, z0, START, goal, cfg, init_mean=init, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(res.plan, torch.tensor([[0.01, -0.02, 0.03, 0, 0, 0, 0.5]]))
    with pytest.raises(ConfigError, match="init_mean"):
        run_cem(wm, z0, START, goal, cfg, init_mean=torch.zeros(2, 4))


def test_time_budget_stops_early_and_returns_a_plan():
    wm, z0, goal = toy_problem(torch.tensor([0.02, 0.0, 0.0, 0, 0, 0, 0.0]), sleep_s=0.04)
    cfg = CEMConfig(samples=32, iterations=50, time_budget_s=0.2)
    t0 = time.perf_counter()
    res = run_cem(wm, z0, START, goal, cfg, generator=torch.Generator().manual_seed(0))
    elapsed = time.perf_counter() - t0
    assert res.stop_reason == "time_budget"
    assert 1 <= res.iterations < 50
    assert elapsed < 0.2 + 0.1                         # stops before the next iteration would overrun
    assert bool(torch.isfinite(res.plan).all())


def test_early_stop_on_elite_spread():
    wm, z0, goal = toy_problem(torch.tensor([0.02, 0.0, 0.0, 0, 0, 0, 0.0]))
    res = run_cem(wm, z0, START, goal, CEMConfig(samples=32, iterations=10, early_stop_spread=10.0),
                  generator=torch.Generator().manual_seed(0))
    assert res.stop_reason == "converged" and res.iterations == 1
    res = run_cem(wm, z0, START, goal, CEMConfig(samples=32, iterations=10, early_stop_spread=1e-9),
                  generator=torch.Generator().manual_seed(0))
    assert res.stop_reason == "iterations" and res.iterations == 10
    assert all(s >= 0 for s in res.elite_spread)


def test_gripper_deadband():
    wm, z0, goal = toy_problem(torch.tensor([0.0, 0.0, 0.0, 0, 0, 0, 0.0]))
    init = torch.tensor([[0.0, 0.0, 0.0, 0.2]])
    cfg = CEMConfig(samples=16, iterations=1, momentum_mean=1.0, momentum_mean_gripper=1.0)
    assert run_cem(wm, z0, START, goal, cfg, init_mean=init).plan[0, 6].item() == 0.0


def test_bad_configs_are_clear_errors():
    with pytest.raises(ConfigError, match="topk"):
        CEMConfig(samples=8, topk=9)
    with pytest.raises(ConfigError, match="time_budget_s"):
        CEMConfig(time_budget_s=0.0)
    with pytest.raises(ConfigError, match="time_budget_s"):
        CEMConfig(time_budget_s=-1.0)
    with pytest.raises(ConfigError, match="bound"):
        CEMConfig(bound="ball")
    with pytest.raises(ConfigError, match="momentum_std"):
        CEMConfig(momentum_std=1.5)
    with pytest.raises(ConfigError, match="noise"):
        cem(StubWorldModel(torch.zeros(7, 8)), torch.zeros(2, 8), START, torch.zeros(2, 8),
            CEMConfig(samples=4, topk=2, iterations=1), noise=torch.zeros(1, 1, 4, 7))


def test_non_finite_energy_is_a_planning_error():
    class NaNModel:
        def predict_next(self, z, actions, states):
            return torch.full_like(z[:, -1], float("nan"))
    with pytest.raises(PlanningError, match="non-finite"):
        cem(NaNModel(), torch.zeros(2, 8), START, torch.zeros(2, 8), CEMConfig(samples=8, topk=2, iterations=1))
    with pytest.raises(PlanningError, match="energy"):
        energy(torch.zeros(3, 2, 8), torch.zeros(2, 7))
