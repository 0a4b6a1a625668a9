"""The AC pipeline's extra normalisation of latents (spec b.5)."""

import torch
import torch.nn.functional as F

LATENT_LN_EPS = 1e-5   # not the encoder's 1e-6: the official call uses F.layer_norm's default


def normalize_latents(x: torch.Tensor) -> torch.Tensor:
    """Non-affine layer norm over the feature dim, applied to encoder outputs and to every
    predictor output before they are compared, fed back or used as goals. [..., D] -> [..., D]."""
    return F.layer_norm(x, (x.shape[-1],), eps=LATENT_LN_EPS)
