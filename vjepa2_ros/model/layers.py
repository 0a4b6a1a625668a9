"""Transformer building blocks shared by the encoder and the AC predictor.

Parameter names (`norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`) equal the
official ones so checkpoints load with strict key checking.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vjepa2_ros.model.rope import apply_rope

KVCache = tuple[torch.Tensor, torch.Tensor]   # keys, values: [B or 1, heads, L, head_dim]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              mask: torch.Tensor | None = None, kernel: str = "sdpa") -> torch.Tensor:
    """softmax(q kᵀ / sqrt(hd)) v. q [B,H,Nq,hd], k/v [B,H,Nk,hd], mask [Nq,Nk] bool, True = may attend."""
    if kernel == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))     # [B, H, Nq, Nk]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v                                        # [B, H, Nq, hd]


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection and rotary positions on q and k."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, kernel: str = "sdpa") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.kernel = kernel
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None = None, past: KVCache | None = None
                ) -> tuple[torch.Tensor, KVCache]:
        """x [B, N, C] -> ([B, N, C], (k, v) of all keys seen, past included)."""
        B, N, C = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3, B, H, N, hd
        q, k, v = qkv.unbind(0)
        cos, sin = rope
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past is not None:
            # Keys/values of earlier steps, possibly shared by all samples (batch 1): expand is a view.
            pk, pv = past
            k = torch.cat([pk.expand(B, -1, -1, -1), k], dim=2)
            v = torch.cat([pv.expand(B, -1, -1, -1), v], dim=2)
        out = attention(q, k, v, mask, self.kernel)                          # B, H, N, hd
        return self.proj(out.transpose(1, 2).reshape(B, N, C)), (k, v)


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, qkv_bias: bool = True,
                 norm_eps: float = 1e-6, kernel: str = "sdpa") -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, kernel)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None = None, past: KVCache | None = None
                ) -> tuple[torch.Tensor, KVCache]:
        a, kv = self.attn(self.norm1(x), rope, mask, past)
        x = x + a
        return x + self.mlp(self.norm2(x)), kv


def init_weights_(module: nn.Module, std: float = 0.02) -> None:
    """The official initialisation: trunc-normal(std) Linear/Conv weights, zero biases, unit LN.

    Blocks' `attn.proj` and `mlp.fc2` weights are then divided by sqrt(2 * (layer + 1)).
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv3d)):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    blocks = [m for m in module.modules() if isinstance(m, Block)]
    with torch.no_grad():
        for i, block in enumerate(blocks):
            block.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))
