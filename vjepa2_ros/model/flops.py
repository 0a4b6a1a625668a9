"""Analytic FLOP counts (2 per multiply-add) of the encoder and the AC predictor.

Counted: every matmul (patch embedding, qkv, attention scores and mixing, projections, MLP).
Not counted: norms, softmax, RoPE, GELU (a few percent at these widths).
"""

from __future__ import annotations

from vjepa2_ros.model.config import EncoderConfig, PredictorConfig


def block_flops(tokens: int, width: int, mlp_hidden: int, keys: int | None = None) -> int:
    """One pre-norm transformer block over `tokens` queries attending to `keys` keys (default: all)."""
    keys = tokens if keys is None else keys
    linear = 2 * tokens * width * (3 * width + width + 2 * mlp_hidden)      # qkv, proj, fc1 + fc2
    attention = 2 * 2 * tokens * keys * width                                # q kᵀ and p v
    return linear + attention


def encoder_flops(cfg: EncoderConfig, frames: int = 1, img_size: int | None = None) -> int:
    """Encoding `frames` independent images (each repeated to a tubelet) at `img_size` px."""
    gh, gw = cfg.grid(img_size)
    n = gh * gw
    patch = 2 * n * cfg.in_chans * cfg.tubelet_size * cfg.patch_size ** 2 * cfg.embed_dim
    return frames * (patch + cfg.depth * block_flops(n, cfg.embed_dim, cfg.mlp_hidden))


def predictor_step_flops(cfg: PredictorConfig, step: int = 0, cached: bool = True) -> int:
    """One predictor step for one sample: the newest step's 2 + n tokens.

    step: 0-based index of the step in the rollout. With the KV cache the new tokens attend to
    all (step + 1) * (2 + n) keys; without it (the notebook) the whole history is recomputed.
    """
    n, width = cfg.tokens_per_frame, cfg.predictor_embed_dim
    per_step = 2 + n
    embed = 2 * n * cfg.embed_dim * width + 2 * 2 * cfg.action_embed_dim * width
    head = 2 * n * width * cfg.embed_dim
    if cached:
        blocks = cfg.depth * block_flops(per_step, width, cfg.mlp_hidden, keys=(step + 1) * per_step)
        return embed + blocks + head
    tokens = (step + 1) * per_step
    return (step + 1) * (embed + head) + cfg.depth * block_flops(tokens, width, cfg.mlp_hidden)


def planning_flops(enc: EncoderConfig, pred: PredictorConfig, samples: int, iterations: int, horizon: int,
                   cached: bool = True) -> int:
    """One CEM planning step: encode the frame once, then samples x iterations rollouts of `horizon` steps."""
    rollout = sum(predictor_step_flops(pred, h, cached) for h in range(horizon))
    return encoder_flops(enc) + samples * iterations * rollout
