"""The V-JEPA 2-AC action-conditioned predictor (spec b).

Per time step the token sequence is [action, state, h*w patch tokens]; attention is
block-causal over steps (full inside a step). The output tokens at frame t's slots predict
frame t+1. Outputs are *before* the AC pipeline's extra `normalize_latents`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vjepa2_ros.errors import ConfigError
from vjepa2_ros.model.config import PredictorConfig
from vjepa2_ros.model.layers import Block, KVCache, init_weights_
from vjepa2_ros.model.rope import grid_positions, rope_angles, rope_tables

COND_TOKENS = 2   # action and state tokens per step


def block_causal_mask(steps: int, tokens_per_step: int, device: torch.device | None = None) -> torch.Tensor:
    """[L, L] bool, L = steps * tokens_per_step; True where query step >= key step (may attend)."""
    step = torch.arange(steps * tokens_per_step, device=device) // tokens_per_step
    return step[:, None] >= step[None, :]


@dataclass
class PredictorCache:
    """Keys and values of the steps already run, per block, for incremental rollouts.

    Tensors may have batch 1 while later steps run S samples: they broadcast without copies
    until attention concatenates them.
    """

    kv: list[KVCache]
    steps: int


class ACPredictor(nn.Module):
    """(z [B, T*n, D], actions [B, T, 7], states [B, T, 7]) -> [B, T*n, D], n = tokens per frame."""

    def __init__(self, cfg: PredictorConfig, init: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        pd = cfg.predictor_embed_dim
        self.predictor_embed = nn.Linear(cfg.embed_dim, pd)
        self.action_encoder = nn.Linear(cfg.action_embed_dim, pd)
        self.state_encoder = nn.Linear(cfg.action_embed_dim, pd)
        # Unused by the released model, present in its state dict: kept so strict loading works.
        self.extrinsics_encoder = nn.Linear(cfg.action_embed_dim - 1, pd)
        self.predictor_blocks = nn.ModuleList(
            Block(pd, cfg.num_heads, cfg.mlp_hidden, cfg.qkv_bias, cfg.norm_eps, cfg.attn)
            for _ in range(cfg.depth))
        self.predictor_norm = nn.LayerNorm(pd, eps=cfg.norm_eps)
        self.predictor_proj = nn.Linear(pd, cfg.embed_dim)
        if init:
            init_weights_(self)

    # -- inputs ------------------------------------------------------------------------------
    def check_inputs(self, z: torch.Tensor, actions: torch.Tensor, states: torch.Tensor) -> int:
        """Validate shapes; return the number of time steps T."""
        cfg, n = self.cfg, self.cfg.tokens_per_frame
        for name, t in (("z", z), ("actions", actions), ("states", states)):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise ConfigError(f"predictor input {name} must be a floating-point tensor, "
                                  f"got {getattr(t, 'dtype', type(t).__name__)}")
        if z.dim() != 3 or z.shape[-1] != cfg.embed_dim or z.shape[1] == 0 or z.shape[1] % n:
            raise ConfigError(f"predictor input z must be [B, T*{n}, {cfg.embed_dim}] ({n} tokens per frame), "
                              f"got {tuple(z.shape)}")
        B, T = z.shape[0], z.shape[1] // n
        if T > cfg.max_steps:
            raise ConfigError(f"predictor got {T} time steps, the model supports at most {cfg.max_steps} "
                              f"(num_frames {cfg.num_frames} // tubelet_size {cfg.tubelet_size})")
        for name, t in (("actions", actions), ("states", states)):
            if tuple(t.shape) != (B, T, cfg.action_embed_dim):
                raise ConfigError(f"predictor input {name} must be [B={B}, T={T}, {cfg.action_embed_dim}] "
                                  f"to match z, got {tuple(t.shape)}")
        return T

    def _rope(self, first_step: int, steps: int, dtype: torch.dtype, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin tables [steps*(2+n), hd] for steps first_step .. first_step+steps-1."""
        gh, gw = self.cfg.grid
        n = gh * gw
        t, h, w = grid_positions(steps, gh, gw, device)
        t = t + first_step
        patches = rope_angles(self.cfg.head_dim, dtype, t, h * (gh / gh), w * (gh / gw))   # [steps*n, hd]
        cond_t = torch.arange(first_step, first_step + steps, device=device).repeat_interleave(COND_TOKENS)
        cond = rope_angles(self.cfg.head_dim, dtype, cond_t)                                # [steps*2, hd]
        angles = torch.cat([cond.view(steps, COND_TOKENS, -1), patches.view(steps, n, -1)], dim=1)
        return rope_tables(angles.flatten(0, 1))

    def _embed(self, z: torch.Tensor, actions: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """Interleave [a_t, s_t, patches_t] per step: -> [B, T*(2+n), pd]."""
        B, T = actions.shape[:2]
        x = self.predictor_embed(z).view(B, T, self.cfg.tokens_per_frame, -1)     # B, T, n, pd
        a = self.action_encoder(actions).unsqueeze(2)                             # B, T, 1, pd
        s = self.state_encoder(states).unsqueeze(2)
        return torch.cat([a, s, x], dim=2).flatten(1, 2)

    def _head(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        """Drop conditioning tokens, norm, project: [B, steps*(2+n), pd] -> [B, steps*n, D]."""
        B = x.shape[0]
        x = x.view(B, steps, COND_TOKENS + self.cfg.tokens_per_frame, -1)[:, :, COND_TOKENS:].flatten(1, 2)
        return self.predictor_proj(self.predictor_norm(x))

    # -- forward -----------------------------------------------------------------------------
    def forward(self, z: torch.Tensor, actions: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        T = self.check_inputs(z, actions, states)
        x = self._embed(z, actions, states)                                        # B, T*(2+n), pd
        rope = self._rope(0, T, x.dtype, x.device)
        # One step attends fully; no mask lets SDPA pick its fused kernels (the planner's horizon 1).
        mask = None if T == 1 else block_causal_mask(T, COND_TOKENS + self.cfg.tokens_per_frame, x.device)
        for block in self.predictor_blocks:
            x, _ = block(x, rope, mask)
        return self._head(x, T)

    def forward_step(self, z: torch.Tensor, action: torch.Tensor, state: torch.Tensor,
                     cache: PredictorCache | None = None, keep_cache: bool = True
                     ) -> tuple[torch.Tensor, PredictorCache | None]:
        """Run one more time step on top of `cache` (None = the first step).

        z [B, n, D] latent of the newest frame, action [B, 7], state [B, 7] -> ([B, n, D], cache).
        Equal to the last frame of `forward` on the whole history (the block-causal mask makes
        earlier steps independent of later ones), without recomputing the history.
        keep_cache=False (a rollout's last step) returns no cache and frees the keys/values early.
        """
        step = 0 if cache is None else cache.steps
        if step + 1 > self.cfg.max_steps:
            raise ConfigError(f"predictor rollout reached {step + 1} steps, the model supports at most "
                              f"{self.cfg.max_steps}")
        self.check_inputs(z, action.unsqueeze(1), state.unsqueeze(1))
        x = self._embed(z, action.unsqueeze(1), state.unsqueeze(1))              # B, 2+n, pd
        rope = self._rope(step, 1, x.dtype, x.device)
        new_kv: list[KVCache] = []
        for i, block in enumerate(self.predictor_blocks):
            x, kv = block(x, rope, None, None if cache is None else cache.kv[i])
            if keep_cache:
                new_kv.append(kv)
        return self._head(x, 1), PredictorCache(new_kv, step + 1) if keep_cache else None
