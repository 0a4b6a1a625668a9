"""Build the encoder and predictor from configs, optionally loading weights."""

from __future__ import annotations

from pathlib import Path

import torch

from vjepa2_ros.errors import ConfigError
from vjepa2_ros.model.checkpoint import load_official_checkpoint, read_checkpoint
from vjepa2_ros.model.config import EncoderConfig, PredictorConfig
from vjepa2_ros.model.encoder import VJEPA2Encoder
from vjepa2_ros.model.predictor import ACPredictor


def build_model(encoder_cfg: EncoderConfig, predictor_cfg: PredictorConfig,
                checkpoint: str | Path | None = None, encoder_checkpoint: str | Path | None = None,
                seed: int = 0) -> tuple[VJEPA2Encoder, ACPredictor]:
    """Encoder and AC predictor, eval mode, float32 on the CPU.

    checkpoint: an AC file (official `.pt` with `encoder` and `predictor`, or our safetensors);
    encoder_checkpoint: a separate encoder file (default: the AC file's own encoder).
    Without files the weights are the official random initialisation, seeded.
    """
    if predictor_cfg.embed_dim != encoder_cfg.embed_dim:
        raise ConfigError(f"predictor embed_dim {predictor_cfg.embed_dim} must equal the encoder width "
                          f"{encoder_cfg.embed_dim}")
    if predictor_cfg.grid != encoder_cfg.grid():
        raise ConfigError(f"predictor patch grid {predictor_cfg.grid} must equal the encoder's {encoder_cfg.grid()} "
                          f"(img_size / patch_size)")
    torch.manual_seed(seed)
    ac = read_checkpoint(checkpoint) if checkpoint is not None else None      # read a large file once
    enc_source = encoder_checkpoint if encoder_checkpoint is not None else ac
    # Networks whose weights come from a file are built on the meta device and take the file's
    # tensors (assign): a ViT-g is not first allocated and randomly initialised for nothing.
    with torch.device("meta" if enc_source is not None else "cpu"):
        encoder = VJEPA2Encoder(encoder_cfg, init=enc_source is None)
    with torch.device("meta" if ac is not None else "cpu"):
        predictor = ACPredictor(predictor_cfg, init=ac is None)
    if enc_source is not None:
        load_official_checkpoint(enc_source, encoder, assign=True)
    if ac is not None:
        load_official_checkpoint(ac, predictor, assign=True)
    return encoder.float().eval(), predictor.float().eval()
