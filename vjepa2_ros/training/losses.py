"""The official AC training objective (spec c): teacher forcing plus an auto-regressive rollout,
L1 on normalised latents."""

from __future__ import annotations

import torch

from vjepa2_ros.errors import ConfigError
from vjepa2_ros.model.latents import normalize_latents
from vjepa2_ros.model.predictor import ACPredictor


def predict_normalized(predictor: ACPredictor, z: torch.Tensor, actions: torch.Tensor,
                       states: torch.Tensor) -> torch.Tensor:
    """One predictor call followed by the non-affine LN: [B, T*n, D] -> [B, T*n, D]."""
    return normalize_latents(predictor(z, actions, states))


def ac_forward(predictor: ACPredictor, h: torch.Tensor, actions: torch.Tensor, states: torch.Tensor,
               auto_steps: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced and rolled-out predictions of a clip.

    h [B, T*n, D]: normalised latents of T frames; actions [B, T-1, 7]; states [B, T, 7].
    Returns z_tf [B, (T-1)*n, D] (predictions of frames 1..T-1 from true frames 0..T-2) and
    z_ar [B, auto_steps*n, D] (frames 1..auto_steps, each step fed the previous prediction and the
    ground-truth states). Gradients flow through the fed-back predictions.
    """
    n = predictor.cfg.tokens_per_frame
    T = h.shape[1] // n
    if T < 2 or h.shape[1] % n:
        raise ConfigError(f"a training clip needs >= 2 frames of {n} tokens, got latents {tuple(h.shape)}")
    if actions.shape[:2] != (h.shape[0], T - 1) or states.shape[:2] != (h.shape[0], T):
        raise ConfigError(f"clip of {T} frames needs actions [B, {T - 1}, 7] and states [B, {T}, 7], "
                          f"got {tuple(actions.shape)} and {tuple(states.shape)}")
    if not 1 <= auto_steps <= T - 1:
        raise ConfigError(f"auto_steps must be in 1..{T - 1} for a {T}-frame clip, got {auto_steps}")
    z_tf = predict_normalized(predictor, h[:, :-n], actions, states[:, :-1])
    z = torch.cat([h[:, :n], z_tf[:, :n]], dim=1)                    # [true frame 0, predicted frame 1]
    for step in range(1, auto_steps):
        nxt = predict_normalized(predictor, z, actions[:, :step + 1], states[:, :step + 1])[:, -n:]
        z = torch.cat([z, nxt], dim=1)
    return z_tf, z[:, n:]


def latent_l1(z: torch.Tensor, h: torch.Tensor, n: int) -> torch.Tensor:
    """Mean |z - h[frames 1 .. ]| where z holds predictions of frames starting at frame 1."""
    return (z - h[:, n:n + z.shape[1]]).abs().mean()


def ac_losses(predictor: ACPredictor, h: torch.Tensor, actions: torch.Tensor, states: torch.Tensor,
              auto_steps: int = 2) -> dict[str, torch.Tensor]:
    """{"tf", "rollout", "total"} losses of one clip batch (total = tf + rollout, weights 1:1)."""
    z_tf, z_ar = ac_forward(predictor, h, actions, states, auto_steps)
    n = predictor.cfg.tokens_per_frame
    tf, ar = latent_l1(z_tf, h, n), latent_l1(z_ar, h, n)
    return {"tf": tf, "rollout": ar, "total": tf + ar, "z_tf": z_tf, "z_rollout": z_ar}
