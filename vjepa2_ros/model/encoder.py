"""The V-JEPA 2 video encoder: 3D tubelet patch embedding, 3D-RoPE ViT blocks, final norm."""

from __future__ import annotations

import torch
from torch import nn

from vjepa2_ros.errors import ConfigError
from vjepa2_ros.model.config import EncoderConfig
from vjepa2_ros.model.layers import Block, init_weights_
from vjepa2_ros.model.rope import grid_positions, rope_angles, rope_tables


class PatchEmbed3D(nn.Module):
    """Conv3d with kernel = stride = (tubelet, patch, patch). [B,C,T,H,W] -> [B, N, D], time-major."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, tubelet_size: int) -> None:
        super().__init__()
        k = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)              # B, D, t, h, w -> B, t*h*w, D


class VJEPA2Encoder(nn.Module):
    """Video [B, 3, T, H, W] (or images [B, 3, H, W]) -> tokens [B, (T/2)*(H/16)*(W/16), D].

    No cls token, no absolute positions: token positions come from the actual input grid, so any
    resolution that is a multiple of the patch size works. A single image is repeated to a
    2-frame tubelet, as the AC pipeline does.
    """

    def __init__(self, cfg: EncoderConfig, init: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed3D(cfg.in_chans, cfg.embed_dim, cfg.patch_size, cfg.tubelet_size)
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_hidden, cfg.qkv_bias, cfg.norm_eps, cfg.attn)
            for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        if init:
            init_weights_(self)

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate a video or image batch; images become 2-frame tubelets. Returns [B,C,T,H,W]."""
        cfg = self.cfg
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ConfigError(f"encoder input must be a floating-point tensor (preprocessed frames), "
                              f"got {getattr(x, 'dtype', type(x).__name__)}")
        if x.dim() == 4:                                            # B, C, H, W: one image each
            x = x.unsqueeze(2).expand(-1, -1, cfg.tubelet_size, -1, -1)
        if x.dim() != 5:
            raise ConfigError(f"encoder input must be [B, {cfg.in_chans}, T, H, W] or [B, {cfg.in_chans}, H, W], "
                              f"got shape {tuple(x.shape)}")
        B, C, T, H, W = x.shape
        if C != cfg.in_chans:
            raise ConfigError(f"encoder input has {C} channels at dim 1, expected {cfg.in_chans} "
                              f"(layout [B, C, T, H, W])")
        if T % cfg.tubelet_size:
            raise ConfigError(f"encoder input has {T} frames, expected a multiple of the tubelet size "
                              f"{cfg.tubelet_size} (encode single frames with encode_frames)")
        if H % cfg.patch_size or W % cfg.patch_size or H == 0 or W == 0:
            raise ConfigError(f"encoder input is {H}x{W} px, expected multiples of the patch size {cfg.patch_size}")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.check_input(x)
        B, C, T, H, W = x.shape
        t, h, w = T // self.cfg.tubelet_size, H // self.cfg.patch_size, W // self.cfg.patch_size
        x = self.patch_embed(x)                                      # B, t*h*w, D
        pos_t, pos_h, pos_w = grid_positions(t, h, w, x.device)
        rope = rope_tables(rope_angles(self.cfg.head_dim, x.dtype, pos_t, pos_h, pos_w))
        for block in self.blocks:
            x, _ = block(x, rope)
        return self.norm(x)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Encode F independent frames, each repeated to a tubelet. [B, C, F, H, W] -> [B, F*N, D].

        This is what the AC pipeline does for training targets and planning observations; every
        frame gets temporal position 0.
        """
        if not isinstance(frames, torch.Tensor) or frames.dim() != 5:
            raise ConfigError(f"encode_frames expects [B, C, F, H, W], got {tuple(getattr(frames, 'shape', ()))}")
        B, C, F, H, W = frames.shape
        images = frames.transpose(1, 2).reshape(B * F, C, H, W)     # B*F, C, H, W
        tokens = self.forward(images)                                # B*F, N, D
        return tokens.reshape(B, F * tokens.shape[1], tokens.shape[2])
