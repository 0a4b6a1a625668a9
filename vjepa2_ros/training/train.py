"""`vjepa2-ros train CONFIG`: AC post-training of the predictor on a frozen encoder (spec c).

Reads top to bottom: processes and device, models, data, optimiser, resume, loop. Run it as
one process, or under `torchrun --nproc_per_node N` for DDP (nccl on GPU, gloo on CPU); torchrun
announces itself through WORLD_SIZE / RANK / LOCAL_RANK. Each process takes `batch_size` clips
of every global batch, so N processes with batch b train exactly like one process with batch N*b.

Writes to out_dir: config.yaml, data_report.json, log.csv (+ tb/ for TensorBoard),
checkpoint.safetensors (predictor, optimiser state, step: resumable exactly) and
predictor.safetensors (weights only, official names: what `export` loads), and, when the frozen
encoder is a seeded random initialisation rather than a file, encoder.safetensors, so a stack
config can plan with exactly the encoder the predictor was trained on (model.encoder_checkpoint).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.utils.checkpoint
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from vjepa2_ros.errors import CheckpointError, ConfigError, Vjepa2RosError
from vjepa2_ros.model.checkpoint import load_official_checkpoint
from vjepa2_ros.model.latents import normalize_latents
from vjepa2_ros.model.layers import Block
from vjepa2_ros.model.predictor import ACPredictor
from vjepa2_ros.model.encoder import VJEPA2Encoder
from vjepa2_ros.model.preprocess import PreprocessConfig
from vjepa2_ros.training.config import TrainConfig
from vjepa2_ros.training.dataset import (EpisodeClips, EpisodeLoader, GlobalBatchSampler, LatentClips,
                                         build_latent_cache, cache_key, episode_loaders)
from vjepa2_ros.training.losses import ac_losses
from vjepa2_ros.training.schedule import wsd_lr

CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "predictor.safetensors"
ENCODER_WEIGHTS = "encoder.safetensors"
LOG_FIELDS = ("step", "lr", "loss", "loss_tf", "loss_rollout", "grad_norm", "clips_per_s", "time_s")


@dataclass
class TrainResult:
    """What a run did: per-step losses (every log_every steps), timing and where it wrote."""

    rows: list[dict[str, float]] = field(default_factory=list)
    out_dir: Path = Path(".")
    start_step: int = 0
    steps_per_s: float = 0.0          # optimiser steps per second over the loop (first step excluded)
    cache_build_s: float = 0.0        # time to build the latent cache (0 when reused or online)
    peak_cuda_bytes: int = 0         # torch.cuda.max_memory_allocated over the run


class ACObjective(nn.Module):
    """The predictor and its loss in one module, so DDP sees the teacher-forcing and rollout
    calls as one forward."""

    def __init__(self, predictor: ACPredictor, auto_steps: int) -> None:
        super().__init__()
        self.predictor, self.auto_steps = predictor, auto_steps

    def forward(self, h: torch.Tensor, actions: torch.Tensor, states: torch.Tensor) -> dict[str, torch.Tensor]:
        return ac_losses(self.predictor, h, actions, states, self.auto_steps)


class _CheckpointedBlock(Block):
    """A Block that recomputes its activations in backward instead of storing them."""

    def forward(self, x, rope, mask=None, past=None):  # type: ignore[override]
        return torch.utils.checkpoint.checkpoint(super().forward, x, rope, mask, past, use_reentrant=False)


def enable_activation_checkpointing(predictor: ACPredictor) -> None:
    """Checkpoint every predictor block (parameter names unchanged)."""
    for block in predictor.predictor_blocks:
        block.__class__ = _CheckpointedBlock


def param_groups(predictor: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Official grouping: weight decay on >= 2-D non-bias weights, none on biases and 1-D params."""
    decay, no_decay = [], []
    for name, p in predictor.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith(".bias") or p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# -- checkpoints -----------------------------------------------------------------------------------
def save_checkpoint(path: Path, predictor: ACPredictor, optimizer: torch.optim.Optimizer, step: int,
                    cfg: TrainConfig) -> None:
    """Predictor weights, AdamW state flattened into tensors, and a JSON header (step, config,
    parameter groups). Written atomically."""
    from safetensors.torch import save_file
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in predictor.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        for k, v in state.items():
            tensors[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"format": "vjepa2_ros.train", "step": str(step), "config": json.dumps(cfg.to_dict()),
            "predictor": json.dumps(predictor.cfg.to_dict()), "param_groups": json.dumps(opt["param_groups"])}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_checkpoint(path: Path, predictor: ACPredictor, optimizer: torch.optim.Optimizer) -> tuple[int, dict]:
    """Restore what save_checkpoint wrote; returns the step to continue from and the run's config."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} does not exist (train without init_from: resume first)")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "vjepa2_ros.train":
        raise CheckpointError(f"{path} is not a vjepa2_ros training checkpoint (no optimiser state)")
    found = json.loads(meta["predictor"])
    if found != json.loads(json.dumps(predictor.cfg.to_dict())):
        raise CheckpointError(f"{path} holds a predictor {found}, the config asks for {predictor.cfg.to_dict()}")
    tensors = load_file(str(path))
    predictor.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["step"]), json.loads(meta["config"])


def save_weights(path: Path, module: ACPredictor | VJEPA2Encoder) -> None:
    """Weights only, under the official names, with the network's config in the metadata."""
    from safetensors.torch import save_file
    kind = "encoder" if isinstance(module, VJEPA2Encoder) else "predictor"
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(tmp),
              metadata={"format": f"vjepa2_ros.{kind}", kind: json.dumps(module.cfg.to_dict())})
    os.replace(tmp, path)


# -- logging ---------------------------------------------------------------------------------------
class RunLog:
    """log.csv (rows after the start step of a resumed run are replaced) and optional TensorBoard."""

    def __init__(self, out_dir: Path, start_step: int, tensorboard: bool) -> None:
        self.path = out_dir / "log.csv"
        kept = []
        if self.path.is_file():
            with open(self.path, newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        self.file = open(self.path, "w", newline="")
        self.csv = csv.DictWriter(self.file, fieldnames=LOG_FIELDS)
        self.csv.writeheader()
        self.csv.writerows(kept)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out_dir / "tb"), purge_step=start_step)
            except ImportError:
                print("train: TensorBoard logging off (pip install tensorboard); log.csv only")

    def write(self, row: dict[str, float]) -> None:
        self.csv.writerow(row)
        self.file.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(f"train/{k}", v, int(row["step"]))

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


# -- the run ---------------------------------------------------------------------------------------
def train(cfg: TrainConfig, loaders: Sequence[EpisodeLoader] | None = None, progress: bool = True) -> TrainResult:
    """Train the predictor as `cfg` says. loaders: episodes to use instead of cfg's data sources."""
    cfg.check_encoder_weights()                                     # no random ViT-g encoder behind your back
    # processes and device ---------------------------------------------------------------------
    world, rank, local_rank = (int(os.environ.get(k, d)) for k, d in (("WORLD_SIZE", "1"), ("RANK", "0"),
                                                                        ("LOCAL_RANK", "0")))
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train config: device is 'cuda' but torch sees no CUDA device")
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    main_process = rank == 0
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    use_bf16 = cfg.bf16 and cuda

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()

    try:
        # models: frozen encoder, trainable predictor ----------------------------------------
        torch.manual_seed(cfg.seed)
        encoder = VJEPA2Encoder(cfg.encoder_config())
        if cfg.encoder_checkpoint is not None:
            load_official_checkpoint(cfg.encoder_checkpoint, encoder)
        elif main_process:                                        # a random encoder exists nowhere else
            save_weights(out_dir / ENCODER_WEIGHTS, encoder)
        encoder.requires_grad_(False).eval().to(device)
        predictor = ACPredictor(cfg.predictor_config())           # official init (seeded)
        if cfg.init_from not in ("scratch", "resume"):
            load_official_checkpoint(cfg.init_from, predictor)     # fine-tuning
        predictor.extrinsics_encoder.requires_grad_(False)        # unused by the forward pass
        if cfg.activation_checkpointing:
            enable_activation_checkpointing(predictor)
        predictor.to(device).train()
        objective = ACObjective(predictor, cfg.auto_steps)
        model: nn.Module = DistributedDataParallel(objective, device_ids=[device.index] if cuda else None) \
            if world > 1 else objective

        # data ------------------------------------------------------------------------------
        loaders = episode_loaders(cfg) if loaders is None else list(loaders)
        preprocess = PreprocessConfig(crop_size=cfg.crop_size, mode=cfg.crop, roi=cfg.roi)
        cache_build_s = 0.0
        if cfg.cache_latents:
            cache_dir = cfg.cache_path()
            key = cache_key(cfg, encoder.cfg.to_dict(), loaders)
            t0 = time.perf_counter()
            build_latent_cache(loaders, encoder, preprocess, cache_dir, key, cfg.clip_frames, device, autocast,
                               rank, world, progress=progress)     # each process encodes its share
            if world > 1:
                dist.barrier()                                      # rank 0 has written the index
            cache_build_s = time.perf_counter() - t0
            dataset: torch.utils.data.Dataset = LatentClips(cache_dir, cfg.clip_frames)
        else:
            dataset = EpisodeClips(loaders, cfg.clip_frames, preprocess)
        report = dataset.report
        if main_process:
            print(report.summary())
            (out_dir / "data_report.json").write_text(json.dumps(report.to_dict(), indent=1))
            (out_dir / "config.yaml").write_text(_yaml(cfg))
        report.require_clips(cfg.clip_frames)

        # optimiser and resume -----------------------------------------------------------------
        optimizer = torch.optim.AdamW(param_groups(predictor, cfg.weight_decay), lr=cfg.lr_start,
                                      betas=tuple(cfg.betas), eps=cfg.eps)
        start_step, run_cfg = 0, cfg
        if cfg.init_from == "resume":
            start_step, saved = load_checkpoint(out_dir / CHECKPOINT, predictor, optimizer)
            run_cfg = dataclasses.replace(cfg, init_from=saved["init_from"])   # how the run began
        if start_step >= cfg.steps and main_process:
            print(f"train: checkpoint is at step {start_step} of {cfg.steps}; nothing to do")
        sampler = GlobalBatchSampler(len(dataset), cfg.batch_size, world, rank, cfg.seed, start_step, cfg.steps)
        data = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers, pin_memory=cuda)
        log = RunLog(out_dir, start_step, cfg.tensorboard) if main_process else None
        result = TrainResult(out_dir=out_dir, start_step=start_step, cache_build_s=cache_build_s)

        # the loop -----------------------------------------------------------------------------
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=start_step, desc="train", unit="step",
                   disable=not (main_process and progress))
        step, t_first, t_last, last_logged = start_step, None, time.perf_counter(), start_step
        for batch in data:
            lr = wsd_lr(step, cfg.steps, cfg.lr, cfg.lr_start, cfg.lr_final, cfg.warmup_steps, cfg.anneal_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            actions = batch["actions"].to(device, non_blocking=True)                    # B, F-1, 7
            states = batch["states"].to(device, non_blocking=True)                      # B, F, 7
            with autocast():
                if cfg.cache_latents:
                    h = batch["latents"].to(device, non_blocking=True)                  # B, F*n, D
                else:
                    with torch.no_grad():
                        h = normalize_latents(encoder.encode_frames(batch["frames"].to(device, non_blocking=True)))
                losses = model(h, actions, states)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(predictor.parameters(),
                                                       cfg.grad_clip if cfg.grad_clip is not None else math.inf)
            optimizer.step()
            step += 1
            bar.update(1)
            if t_first is None:
                if cuda:
                    torch.cuda.synchronize(device)
                t_first = time.perf_counter()                     # timing excludes the first (warm-up) step
            if step % cfg.log_every == 0 or step == cfg.steps:
                stats = torch.stack([losses["total"], losses["tf"], losses["rollout"]]).detach().float()
                if world > 1:
                    dist.all_reduce(stats)                        # the global mean, as one process would see
                    stats /= world
                total, tf, ar = stats.tolist()                    # a CPU-GPU sync point
                if not math.isfinite(total):
                    raise Vjepa2RosError(f"training diverged: loss {total} at step {step} (lr {lr:.3g}); "
                                         f"lower lr or set grad_clip")
                now = time.perf_counter()
                row = {"step": step, "lr": lr, "loss": total, "loss_tf": tf, "loss_rollout": ar,
                       "grad_norm": float(grad_norm), "time_s": now - t_last,
                       "clips_per_s": (step - last_logged) * cfg.batch_size * world / max(now - t_last, 1e-9)}
                t_last, last_logged = now, step
                result.rows.append(row)
                bar.set_postfix(loss=f"{total:.4f}", lr=f"{lr:.2e}")
                if log is not None:
                    log.write(row)
            if main_process and (step % cfg.ckpt_every == 0 or step == cfg.steps):
                save_checkpoint(out_dir / CHECKPOINT, predictor, optimizer, step, run_cfg)
                save_weights(out_dir / WEIGHTS, predictor)
        bar.close()
        if cuda:
            torch.cuda.synchronize(device)
        if t_first is not None and step - start_step > 1:
            result.steps_per_s = (step - start_step - 1) / (time.perf_counter() - t_first)
        if cuda:
            result.peak_cuda_bytes = torch.cuda.max_memory_allocated(device)
        if log is not None:
            log.close()
        return result
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _yaml(cfg: TrainConfig) -> str:
    import yaml
    d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.to_dict().items()}
    return yaml.safe_dump(d, sort_keys=False)


# -- CLI -------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config (YAML), e.g. config/train_tiny.yaml")
    parser.add_argument("--out-dir", help="override out_dir")
    parser.add_argument("--steps", type=int, help="override steps")
    parser.add_argument("--resume", action="store_true", help="continue from out_dir/checkpoint.safetensors")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig.from_yaml(args.config)
    changes: dict[str, Any] = {}
    if args.out_dir:
        changes["out_dir"] = args.out_dir
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.resume:
        changes["init_from"] = "resume"
    return dataclasses.replace(cfg, **changes) if changes else cfg


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    result = train(cfg, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        last = result.rows[-1] if result.rows else None
        print(f"train: {cfg.out_dir}: step {last['step'] if last else result.start_step} of {cfg.steps}"
              + (f", loss {last['loss']:.4f}" if last else "") + f"; weights in {Path(cfg.out_dir) / WEIGHTS}")
    return 0
