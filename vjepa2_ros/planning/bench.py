"""`vjepa2-ros bench plan`: one planning step (encode + CEM) of this planner against a reference
planner with the official notebook's structure, same process, same model, same injected noise.

The reference (`NotebookPlanner`) follows `notebooks/utils/{mpc_utils,world_model_wrapper}.py`:
the context and goal latents are copied per sample (`repeat`), every rollout step runs the
predictor over the whole history (no KV cache), and `compute_new_pose` runs per sample on the
CPU in float64 (scipy's Rotation per sample, as the notebook, when scipy is installed; else a
numpy stand-in that is ~5x faster per sample, which makes the ratio conservative). Both return
the CEM mean. In float64 (the CPU default) their actions must be bit-identical (exit status 1
otherwise); in float32/bf16 the cached and recomputed attention round differently, so on a flat
energy landscape an elite can flip and the actions differ slightly (printed, not an error).

Memory at the paper setting (ViT-g encoder + AC predictor, bf16, 800 samples, horizon 1) on a
24 GB card: weights 2.6 GB resident + one chunk of predictor activations (the WorldModel's
`chunk_budget_bytes`, 4 GiB by default on CUDA: ~290 samples at ~15 MB each) + 0.6 GB of
final latents for 800 samples ≈ 7.5 GB; the output prints the estimate and, on CUDA, the
measured peak.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vjepa2_ros.engines.torch_runtime import TorchRuntime
from vjepa2_ros.errors import ConfigError
from vjepa2_ros.model import ACPredictor, EncoderConfig, PredictorConfig, VJEPA2Encoder, normalize_latents
from vjepa2_ros.model.flops import planning_flops
from vjepa2_ros.model.layers import init_weights_
from vjepa2_ros.planning.cem import CEMConfig, _bound, run_cem
from vjepa2_ros.planning.planner import make_example_frame, make_example_state
from vjepa2_ros.planning.world_model import WorldModel, rollout_bytes_per_sample

PRESETS = {"tiny": (EncoderConfig.tiny, PredictorConfig.tiny),
           "giant": (EncoderConfig.vit_giant, PredictorConfig.ac_vit_giant)}
DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Dense bf16/fp16 tensor-core peaks (TFLOP/s) for the FLOP floor; --peak-tflops overrides.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "4090": 165.0, "L40S": 362.0, "A6000": 155.0}


# -- the reference: the notebook's structure --------------------------------------------------
def _euler_to_matrix_np(a: np.ndarray) -> np.ndarray:
    """One extrinsic xyz Euler triple -> 3x3 (what scipy's from_euler('xyz').as_matrix() returns)."""
    cr, cp, cy = np.cos(a)
    sr, sp, sy = np.sin(a)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def _matrix_to_euler_np(m: np.ndarray) -> np.ndarray:
    roll = np.arctan2(m[2, 1], m[2, 2])
    cr, sr = np.cos(roll), np.sin(roll)
    yaw = np.arctan2(-(m[0, 1] * cr - m[0, 2] * sr), m[1, 1] * cr - m[1, 2] * sr)
    return np.array([roll, np.arctan2(-m[2, 0], np.hypot(m[0, 0], m[1, 0])), yaw])


def _scipy_rotation() -> Any:
    """scipy's Rotation when scipy is installed (the notebook's own per-sample calls), else None."""
    try:
        from scipy.spatial.transform import Rotation
    except ImportError:
        return None
    return Rotation


def notebook_compute_new_pose(pose: torch.Tensor, action: torch.Tensor, rotation: Any = None) -> torch.Tensor:
    """The official `compute_new_pose` structure: [S, 1, 7] each, a per-sample loop on the CPU in
    float64. `rotation`: scipy's Rotation (exactly the notebook's calls) or None for a numpy
    stand-in (about 5x faster per sample than scipy, so the benchmark ratio is then conservative)."""
    device, dtype = pose.device, pose.dtype
    p, a = pose[:, 0].cpu().double().numpy(), action[:, 0].cpu().double().numpy()
    new_xyz = p[:, :3] + a[:, :3]
    if rotation is not None:
        matrices = [rotation.from_euler("xyz", t, degrees=False).as_matrix() for t in p[:, 3:6]]
        deltas = [rotation.from_euler("xyz", t, degrees=False).as_matrix() for t in a[:, 3:6]]
        angles = np.stack([rotation.from_matrix(deltas[i] @ matrices[i]).as_euler("xyz", degrees=False)
                           for i in range(len(matrices))])
    else:
        matrices = [_euler_to_matrix_np(t) for t in p[:, 3:6]]
        deltas = [_euler_to_matrix_np(t) for t in a[:, 3:6]]
        angles = np.stack([_matrix_to_euler_np(deltas[i] @ matrices[i]) for i in range(len(matrices))])
    grip = np.clip(p[:, -1:] + a[:, -1:], 0, 1)
    return torch.from_numpy(np.concatenate([new_xyz, angles, grip], axis=-1)).to(device).to(dtype)[:, None]


class NotebookPlanner:
    """The official `WorldModel.infer_next_action` + `cem` structure over the same runtime."""

    def __init__(self, world_model: WorldModel) -> None:
        self.wm = world_model
        self.rotation = _scipy_rotation()
        self.pose_backend = "scipy" if self.rotation is not None else "numpy stand-in"

    def step_predictor(self, reps: torch.Tensor, actions: torch.Tensor, poses: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        S, T, n, D = reps.shape
        next_rep = self.wm.runtime.predict(reps.flatten(1, 2), actions, poses)[:, -n:]   # whole history
        next_rep = normalize_latents(next_rep).view(S, 1, n, D)
        return next_rep, notebook_compute_new_pose(poses[:, -1:], actions[:, -1:], self.rotation)

    def plan(self, frame: np.ndarray, state: np.ndarray, goal: torch.Tensor, cfg: CEMConfig,
             noise: torch.Tensor) -> torch.Tensor:
        S, H = cfg.samples, cfg.horizon
        dev = self.wm.device
        rep = self.wm.encode(frame)[None]                                              # 1, 1, N, D
        context_frame = rep.repeat(S, 1, 1, 1)                                         # copied per sample
        goal_frame = goal[None, None].repeat(S, 1, 1, 1)
        context_pose = torch.as_tensor(state, dtype=torch.float32, device=dev)[None, None].repeat(S, 1, 1)
        mean = torch.zeros(H, 4, device=dev)
        std = torch.cat([torch.ones(H, 3, device=dev) * cfg.maxnorm, torch.ones(H, 1, device=dev)], dim=-1)
        for it in range(cfg.iterations):
            action_traj, frame_traj, pose_traj = None, context_frame, context_pose
            for h in range(H):
                u = _bound(noise[it, h].to(dev) * std[h] + mean[h], cfg)
                samples = torch.cat([u[:, :3], torch.zeros(S, 3, device=dev), u[:, -1:]], dim=-1)[:, None]
                action_traj = samples if action_traj is None else torch.cat([action_traj, samples], dim=1)
                next_frame, next_pose = self.step_predictor(frame_traj, action_traj.to(frame_traj.dtype),
                                                            pose_traj.to(frame_traj.dtype))
                frame_traj = torch.cat([frame_traj, next_frame], dim=1)
                pose_traj = torch.cat([pose_traj, next_pose.to(pose_traj.dtype)], dim=1)
            sims = torch.mean(torch.abs(frame_traj[:, -1].flatten(1).float() - goal_frame.flatten(1)), dim=-1)
            selected = action_traj[sims.topk(cfg.topk, largest=False).indices]
            sel_mean, sel_std = selected.mean(dim=0), selected.std(dim=0)
            mean = torch.cat([sel_mean[..., :3] * (1.0 - cfg.momentum_mean) + mean[..., :3] * cfg.momentum_mean,
                              sel_mean[..., -1:] * (1.0 - cfg.momentum_mean_gripper)
                              + mean[..., -1:] * cfg.momentum_mean_gripper], dim=-1)
            std = torch.cat([sel_std[..., :3] * (1.0 - cfg.momentum_std) + std[..., :3] * cfg.momentum_std,
                             sel_std[..., -1:] * (1.0 - cfg.momentum_std_gripper)
                             + std[..., -1:] * cfg.momentum_std_gripper], dim=-1)
        g = mean[..., -1:]
        return torch.cat([mean[..., :3], torch.zeros(H, 3, device=dev),
                          torch.where(g.abs() < cfg.gripper_deadband, torch.zeros_like(g), g)], dim=-1)


# -- setup ------------------------------------------------------------------------------------
def random_world_model(preset: str, device: str, dtype: torch.dtype, seed: int = 0,
                       chunk_budget_bytes: int | None = None, compile: bool = False) -> WorldModel:
    """Randomly initialised encoder + predictor built directly on `device` (no CPU copy of ViT-g).
    compile: TorchRuntime's torch.compile option."""
    enc_cfg, pred_cfg = (f() for f in PRESETS[preset])
    with torch.device("meta"):
        enc, pred = VJEPA2Encoder(enc_cfg, init=False), ACPredictor(pred_cfg, init=False)
    torch.manual_seed(seed)
    enc, pred = enc.to_empty(device=device), pred.to_empty(device=device)
    init_weights_(enc)
    init_weights_(pred)
    kwargs = {} if chunk_budget_bytes is None else {"chunk_budget_bytes": chunk_budget_bytes}
    return WorldModel(TorchRuntime(enc, pred, device=device, dtype=dtype, compile=compile), **kwargs)


def onnx_world_model(wm: WorldModel, horizon: int, chunk_budget_bytes: int | None) -> WorldModel:
    """The same weights as `wm`, exported to a temporary folder (float32, step graphs for 1..horizon)
    and run by ONNX Runtime on the CPU."""
    import tempfile

    from vjepa2_ros.engines.factory import RuntimeConfig, open_runtime
    from vjepa2_ros.engines.onnx_export import ExportConfig, export_onnx

    rt = wm.runtime
    if rt.device.type != "cpu" or rt.dtype != torch.float32:
        raise ConfigError("--runtime onnxruntime benchmarks float32 on the CPU (--dtype float32 --device cpu)")
    out = tempfile.mkdtemp(prefix="vjepa2-bench-plan-")
    export_onnx(rt.encoder, rt.predictor, out, ExportConfig(steps=tuple(range(1, horizon + 1)), step_graphs=True),
                weights="random:bench")
    ort = open_runtime(RuntimeConfig(kind="onnxruntime", engine_dir=out, encoder_cfg=rt.encoder_cfg,
                                     predictor_cfg=rt.predictor_cfg))
    kwargs = {} if chunk_budget_bytes is None else {"chunk_budget_bytes": chunk_budget_bytes}
    return WorldModel(ort, **kwargs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="model size, random weights")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="model dtype (default: float64 on CPU, where the two planners' actions must be "
                             "bit-identical; bfloat16 on CUDA)")
    parser.add_argument("--samples", type=int, default=None, help="CEM samples (default: 800, the paper's)")
    parser.add_argument("--iterations", type=int, default=None, help="CEM iterations (default: 10, the paper's)")
    parser.add_argument("--horizon", type=int, default=None, help="planning horizon (default: tiny 2, giant 1)")
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--bound", choices=("l1", "box"), default="l1")
    parser.add_argument("--repeats", type=int, default=5, help="timed planning steps per planner (median reported)")
    parser.add_argument("--chunk-budget-mb", type=float, default=None,
                        help="WorldModel chunk budget in MiB (default: the WorldModel's for the device)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="device peak for the FLOP floor (default: looked up for known GPUs)")
    parser.add_argument("--no-reference", action="store_true",
                        help="time only this planner (e.g. giant on a 24 GB card: the notebook runs all "
                             "samples in one batch and does not fit)")
    parser.add_argument("--compile", action="store_true",
                        help="this planner on TorchRuntime(compile=True); the reference stays eager")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (0: torch's default). 1 by default: on a shared machine "
                             "multi-threaded small ops stall on each other and the timings become noise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch",
                        help="what runs this planner's networks; onnxruntime: the same weights exported to ONNX "
                             "with KV-cached step graphs (float32), the reference stays torch eager")


def _peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override is not None or device.type != "cuda":
        return override
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def _timed(fn: Any, sync: bool) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available on this host")
    if args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {args.repeats}")
    horizon = args.horizon or (2 if args.preset == "tiny" else 1)
    dtype_name = args.dtype or ("float64" if device.type == "cpu" else "bfloat16")
    cfg = CEMConfig(horizon=horizon, samples=args.samples or 800, iterations=args.iterations or 10,
                    topk=args.topk, bound=args.bound)
    budget = None if args.chunk_budget_mb is None else int(args.chunk_budget_mb * 2**20)
    print(f"building {args.preset} model (random weights) on {device} in {dtype_name}, "
          f"{torch.get_num_threads()} CPU thread(s) ...", flush=True)
    wm = random_world_model(args.preset, str(device), DTYPES[dtype_name], args.seed, budget, args.compile)
    # The reference runs the same modules eagerly, as the notebook does.
    eager = WorldModel(TorchRuntime(wm.runtime.encoder, wm.runtime.predictor, device=device,
                                    dtype=DTYPES[dtype_name])) if args.compile else wm
    if args.runtime == "onnxruntime":
        wm = onnx_world_model(wm, horizon, budget)
    img = wm.preprocess.crop_size
    frame, goal_frame = make_example_frame(img, img, seed=0), make_example_frame(img, img, seed=1)
    state = make_example_state()
    s = torch.as_tensor(state, device=device)
    goal = wm.encode(goal_frame)[0].float()
    noise = torch.randn(cfg.iterations, cfg.horizon, cfg.samples, 4, generator=torch.Generator().manual_seed(args.seed))
    noise = noise.to(device)
    reference = NotebookPlanner(eager)
    sync = device.type == "cuda"

    def ours() -> torch.Tensor:
        return run_cem(wm, wm.encode(frame)[0], s, goal, cfg, noise=noise).plan

    def ref() -> torch.Tensor:
        return reference.plan(frame, state, goal, cfg, noise)

    runs: dict[str, tuple[Any, list[float]]] = {"this planner": (ours, [])} if args.no_reference else \
        {"reference (notebook)": (ref, []), "this planner": (ours, [])}
    for fn, _ in runs.values():                                # warm-up: allocations, kernel selection
        fn()
    if sync:
        torch.cuda.reset_peak_memory_stats(device)
    plans: dict[str, torch.Tensor] = {}
    for _ in tqdm(range(args.repeats), desc="planning steps", leave=False):
        for name, (fn, times) in runs.items():                 # interleaved, so load changes hit both
            dt, plans[name] = _timed(fn, sync)
            times.append(dt)

    peak = _peak_tflops(device, args.peak_tflops)
    elt = torch.empty((), dtype=DTYPES[dtype_name]).element_size()
    enc_cfg, pred_cfg = wm.runtime.encoder_cfg, wm.runtime.predictor_cfg
    ref_time = statistics.median(runs["reference (notebook)"][1]) if "reference (notebook)" in runs else None
    identical = None if ref_time is None else bool(torch.equal(plans["this planner"].float().cpu(),
                                                               plans["reference (notebook)"].float().cpu()))
    base = f"{args.preset} {dtype_name} {device.type} {cfg.bound}"
    ours_rt = "onnxruntime" if args.runtime == "onnxruntime" else ("torch compiled" if args.compile else "torch")
    configs = {"reference (notebook)": f"{base} torch", "this planner": f"{base} {ours_rt}"}
    shape = f"{cfg.samples}x{cfg.iterations}x{cfg.horizon}"
    print(f"\n{'planner':<22}{'config':<34}{'S x I x H':>12}{'GFLOP/step':>12}{'median s/step':>15}"
          f"{'floor s':>10}{'x ref':>8}")
    for name, (_, times) in runs.items():
        flops = planning_flops(enc_cfg, pred_cfg, cfg.samples, cfg.iterations, cfg.horizon,
                               cached=name == "this planner")
        med = statistics.median(times)
        floor = f"{flops / (peak * 1e12):.3f}" if peak else "-"
        ratio = f"{ref_time / med:.1f}" if ref_time else "-"
        print(f"{name:<22}{configs[name]:<34}{shape:>12}{flops / 1e9:>12.2f}{med:>15.4f}{floor:>10}{ratio:>8}")
    if ref_time is not None:
        print(f"\nreference pose update: per-sample {reference.pose_backend}")
    if identical is not None:
        diff = float((plans["this planner"].float().cpu() - plans["reference (notebook)"].float().cpu()).abs().max())
        print(f"actions identical to the reference: {'yes' if identical else f'NO (max |diff| {diff:.3g})'}")
    print(f"first action: {plans['this planner'][0].float().cpu().numpy().round(5).tolist()}")
    per_sample = rollout_bytes_per_sample(pred_cfg, cfg.horizon, elt)
    chunk = wm.chunk_size(cfg.horizon)
    weights = sum(p.numel() for m in (eager.runtime.encoder, eager.runtime.predictor) for p in m.parameters()) * elt
    latents = cfg.samples * pred_cfg.tokens_per_frame * pred_cfg.embed_dim * elt
    estimate = weights + min(chunk, cfg.samples) * per_sample + latents
    print(f"memory estimate: {estimate / 1e9:.2f} GB = weights {weights / 1e9:.2f} + chunk of "
          f"{min(chunk, cfg.samples)} samples x {per_sample / 1e6:.2f} MB + final latents {latents / 1e9:.2f}")
    if sync:
        print(f"measured peak allocated: {torch.cuda.max_memory_allocated(device) / 1e9:.2f} GB")
    return 1 if identical is False and dtype_name == "float64" else 0
