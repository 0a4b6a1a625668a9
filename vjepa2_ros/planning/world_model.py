"""The world model as the planner sees it: frames -> latents, (latents, actions) -> next latents.

A facade over any `Runtime` (torch now; ONNX Runtime and TensorRT later). It adds what the
official `WorldModel` wrapper does around the networks (preprocessing, the non-affine latent
norm, pose integration) and what makes planning fast:

* incremental rollouts: step h reuses the keys and values of steps < h (`Runtime.predict_step`),
  exact because attention is block-causal; the notebook recomputes the whole history;
* the context latent is broadcast (`expand`, a view) to the S samples, not copied;
* samples run in chunks: what fits `chunk_budget_bytes`, at least `min_chunk` (measured on the
  CPU, see DEFAULT_MIN_CHUNK), in multiples of 8 (bit-identical to one unsplit batch).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vjepa2_ros.engines.runtime import Runtime
from vjepa2_ros.errors import ConfigError, PlanningError
from vjepa2_ros.model import PredictorConfig, PreprocessConfig, normalize_latents, preprocess_frames
from vjepa2_ros.planning.pose import integrate_actions
from vjepa2_ros.planning.timing import StageTimer

# Samples per predictor call: as many as one chunk's activations fit `chunk_budget_bytes` (CUDA:
# the paper setting on a 24 GB card, ~290 samples of the ViT-g AC predictor per chunk in bf16,
# next to 2.6 GB of weights; CPU: 16 MiB, about the last-level cache), but at least `min_chunk`,
# and in multiples of CHUNK_MULTIPLE. The CPU floor is measured (README "Planning in its own
# process", 2-core EPYC VM, 2 torch threads, ms per sample of a horizon-1 rollout by samples per
# call): the sim model (64 tokens, 128 wide, 4 deep) idle 2.7 / 1.9 / 1.9 / 2.7 ms at 1 / 4-16 / 32 /
# 64, and at load 10 from other processes 49 / 16 / 17 / 10 ms at 1 / 8 / 16 / 64; a 256-token
# model at load 10: 69 / 22 / 20 / 21 ms at 1 / 8 / 16 / 64. Single-sample calls (what a 16 MiB
# budget gave any model over 16 MiB a sample, e.g. 384 calls per planning step of a 256-token,
# 1024-wide predictor) pay every op's thread hand-over per sample and collapse when the cores are
# shared; from 16 samples a call the time per sample is flat. Multiples of 8 keep the CPU
# kernels' rounding: with them the latents are bit-identical to one unsplit batch (chunks of 1,
# 2, 3, 5-7, 9 or 21 samples differ in the last bits).
DEFAULT_CHUNK_BUDGET_BYTES = {"cuda": 4 * 2**30, "cpu": 16 * 2**20}
DEFAULT_MIN_CHUNK = {"cuda": 1, "cpu": 16}
CHUNK_MULTIPLE = 8


def rollout_bytes_per_sample(cfg: PredictorConfig, horizon: int, bytes_per_element: int) -> int:
    """Estimated peak device memory of one sample's rollout (an upper bound, not a measurement).

    Per step 2+n tokens; at the last step the cache of earlier steps plus the one being built
    (depth x K,V x pd per token), one block's activations (x, norm, qkv, rotated q/k, attention
    output, MLP hidden and GELU), the attention scores of an unfused kernel, the latents in and out.
    """
    tokens, pd, D, n = 2 + cfg.tokens_per_frame, cfg.predictor_embed_dim, cfg.embed_dim, cfg.tokens_per_frame
    cache = 0 if horizon == 1 else cfg.depth * 2 * pd * tokens * (2 * horizon - 1)
    block = tokens * (11 * pd + 2 * cfg.mlp_hidden) + cfg.num_heads * tokens * tokens * horizon
    latents = n * (3 * D + pd)
    return bytes_per_element * (cache + block + latents)


class WorldModel:
    """Encoder + AC predictor for planning. Latents are `normalize_latents`-ed, as the official
    pipeline compares and feeds them back (spec b.5)."""

    def __init__(self, runtime: Runtime, preprocess: PreprocessConfig | None = None,
                 chunk_budget_bytes: int | None = None, min_chunk: int | None = None) -> None:
        """chunk_budget_bytes: device memory for one chunk of samples; min_chunk: samples per
        predictor call at least (None: each by device type, see DEFAULT_MIN_CHUNK)."""
        kind = runtime.device.type if runtime.device.type in DEFAULT_MIN_CHUNK else "cuda"
        if chunk_budget_bytes is None:
            chunk_budget_bytes = DEFAULT_CHUNK_BUDGET_BYTES[kind]
        if min_chunk is None:
            min_chunk = DEFAULT_MIN_CHUNK[kind]
        if not chunk_budget_bytes > 0:
            raise ConfigError(f"chunk_budget_bytes must be > 0, got {chunk_budget_bytes!r}")
        if not (isinstance(min_chunk, int) and min_chunk >= 1):
            raise ConfigError(f"min_chunk must be a positive int (samples), got {min_chunk!r}")
        self.runtime = runtime
        self.cfg = runtime.predictor_cfg
        img = runtime.encoder_cfg.img_size
        self.preprocess = preprocess or PreprocessConfig(crop_size=img if isinstance(img, int) else img[0])
        self.chunk_budget_bytes = int(chunk_budget_bytes)
        self.min_chunk = min_chunk

    @classmethod
    def tiny(cls, seed: int = 0, **kwargs: Any) -> "WorldModel":
        """A random tiny model on the CPU (64 px, 16 tokens per frame, width 64): tests and demos."""
        from vjepa2_ros.engines.torch_runtime import TorchRuntime
        from vjepa2_ros.model import EncoderConfig, build_model
        encoder, predictor = build_model(EncoderConfig.tiny(), PredictorConfig.tiny(), seed=seed)
        return cls(TorchRuntime(encoder, predictor), **kwargs)

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def latent_shape(self) -> tuple[int, int]:
        """(N, D) of one frame's latent."""
        return (self.cfg.tokens_per_frame, self.cfg.embed_dim)

    def chunk_size(self, horizon: int) -> int:
        """Samples per predictor call for a rollout of `horizon` steps: what fits the budget, at
        least min_chunk, rounded down to a multiple of CHUNK_MULTIPLE when it is one or more."""
        elt = torch.empty((), dtype=self.runtime.dtype).element_size()
        n = max(self.min_chunk, self.chunk_budget_bytes // rollout_bytes_per_sample(self.cfg, horizon, elt))
        return n - n % CHUNK_MULTIPLE if n >= CHUNK_MULTIPLE else n

    # -- encoding ----------------------------------------------------------------------------
    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 RGB [H, W, 3] or [B, H, W, 3] -> normalised latents [B, N, D]."""
        x = preprocess_frames(frames, self.preprocess, device=self.device)      # 3, B, crop, crop
        return self.encode_tensor(x.transpose(0, 1))

    def encode_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images [B, 3, H, W] -> normalised latents [B, N, D] (each image a tubelet)."""
        return normalize_latents(self.runtime.encode(images))

    # -- prediction --------------------------------------------------------------------------
    def predict_next(self, z: torch.Tensor, actions: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """Full-history step (the official `step_predictor`): z [S, T, N, D], actions and states
        [S, T, 7] -> normalised latent of step T+1 [S, N, D]. Chunked over S."""
        if z.dim() != 4 or tuple(z.shape[2:]) != self.latent_shape:
            raise PlanningError(f"predict_next needs z [S, T, {self.latent_shape[0]}, {self.latent_shape[1]}], "
                                f"got {tuple(z.shape)}")
        S, T = z.shape[:2]
        n = self.cfg.tokens_per_frame
        chunk = max(1, self.chunk_size(1) // (T * T))          # T steps of activations, T^2 attention
        out = [normalize_latents(self.runtime.predict(z[i:i + chunk].flatten(1, 2), actions[i:i + chunk],
                                                      states[i:i + chunk])[:, -n:])
               for i in range(0, S, chunk)]
        return torch.cat(out)

    def check_context(self, z_context: torch.Tensor, s_context: torch.Tensor) -> None:
        """Shapes and finiteness of a context latent [N, D] and pose [7] (PlanningError)."""
        if not isinstance(z_context, torch.Tensor) or tuple(z_context.shape) != self.latent_shape:
            raise PlanningError(f"context latent must be [N, D] = {list(self.latent_shape)}, "
                                f"got {tuple(getattr(z_context, 'shape', ()))}")
        if not isinstance(s_context, torch.Tensor) or tuple(s_context.shape) != (7,):
            raise PlanningError(f"context state must be [7] (x, y, z, roll, pitch, yaw, gripper), "
                                f"got {tuple(getattr(s_context, 'shape', ()))}")
        if not bool(torch.isfinite(z_context).all()) or not bool(torch.isfinite(s_context).all()):
            raise PlanningError("context latent or state contains NaN/inf")

    def rollout(self, z_context: torch.Tensor, s_context: torch.Tensor, actions: torch.Tensor,
                timer: StageTimer | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Roll S action sequences out from one context.

        z_context [N, D] normalised latent, s_context [7] pose, actions [S, H, 7]
        -> (final normalised latents [S, N, D] in the runtime dtype, poses [S, H+1, 7]).
        Poses are integrated in float64 from the float32 context (as the official scipy path)
        before the predictor sees them; with a caching runtime each step attends to the cached
        keys of earlier steps, else the history is recomputed.
        """
        self.check_context(z_context, s_context)
        if actions.dim() != 3 or actions.shape[-1] != 7 or actions.shape[0] < 1 or actions.shape[1] < 1:
            raise PlanningError(f"actions must be [S, H, 7] with S, H >= 1, got {tuple(actions.shape)}")
        timer = timer or StageTimer(self.device)
        S, H = actions.shape[:2]
        N, D = self.latent_shape
        with timer.stage("pose"):
            # float32 context like the official pipeline (it matters at the ±π roll seam), float64 math.
            poses = integrate_actions(s_context.float().double(), actions.double())   # S, H+1, 7
        rt = self.runtime
        d = dict(device=rt.device, dtype=rt.dtype)
        # States enter the predictor as float32 values, as the official pipeline's poses are.
        acts, states, zc = actions.to(**d), poses[:, :H].float().to(**d), z_context.to(**d)
        chunk = self.chunk_size(H)
        out = []
        with timer.stage("predict"):
            for lo in range(0, S, chunk):
                a, s = acts[lo:lo + chunk], states[lo:lo + chunk]
                c = a.shape[0]
                z = zc.expand(c, N, D)                                                # view: no per-sample copy
                if H == 1 or not rt.supports_cache:
                    z_hist = z.unsqueeze(1)                                           # c, 1, N, D
                    for h in range(H):
                        raw = rt.predict(z_hist.flatten(1, 2), a[:, :h + 1], s[:, :h + 1])[:, -N:]
                        z = normalize_latents(raw)
                        z_hist = torch.cat([z_hist, z.unsqueeze(1)], dim=1) if h + 1 < H else z_hist
                else:
                    cache = None
                    for h in range(H):
                        raw, cache = rt.predict_step(z, a[:, h], s[:, h], cache, keep_cache=h + 1 < H)  # c, N, D
                        z = normalize_latents(raw)
                    del cache
                out.append(z)
        return torch.cat(out), poses.to(actions.dtype)
