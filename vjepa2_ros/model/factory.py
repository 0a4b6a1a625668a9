"""Build the encoder and predictor from configs, optionally loading weights."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from vjepa2_ros.errors import ConfigError
from vjepa2_ros.model.checkpoint import load_official_checkpoint, read_checkpoint
from vjepa2_ros.model.config import EncoderConfig, PredictorConfig
from vjepa2_ros.model.encoder import VJEPA2Encoder
from vjepa2_ros.model.predictor import ACPredictor

log = logging.getLogger(__name__)

# Randomly initialised networks larger than this are refused unless asked for (allow_random): a
# ViT-L/g + AC predictor without weights plans nothing and takes minutes per step on a CPU. The
# project's own small models (tiny, the sim model: ~1 M parameters) stay far below it.
RANDOM_PARAMETER_LIMIT = 50_000_000


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


def parameter_count(*configs: EncoderConfig | PredictorConfig) -> int:
    """Parameters of the networks these configs describe, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        nets = [VJEPA2Encoder(c, init=False) if isinstance(c, EncoderConfig) else ACPredictor(c, init=False)
                for c in configs]
    return sum(p.numel() for net in nets for p in net.parameters())


def check_random_weights(encoder_cfg: EncoderConfig, predictor_cfg: PredictorConfig, checkpoint: str | Path | None,
                         encoder_checkpoint: str | Path | None, allow_random: bool = False) -> int:
    """Refuse (ConfigError) random networks over RANDOM_PARAMETER_LIMIT unless allowed; say so for
    smaller ones. Returns the number of randomly initialised parameters."""
    random = [] if checkpoint is not None else [predictor_cfg] + ([encoder_cfg] if encoder_checkpoint is None else [])
    n = parameter_count(*random)
    if n > RANDOM_PARAMETER_LIMIT and not allow_random:
        raise ConfigError(
            f"no checkpoint: this would run {n / 1e6:,.0f} M randomly initialised parameters "
            f"(encoder {encoder_cfg.embed_dim} wide x {encoder_cfg.depth}, predictor "
            f"{predictor_cfg.predictor_embed_dim} wide x {predictor_cfg.depth}), which plan nothing and take minutes "
            f"per step on a CPU. Give the model one of three ways: model.checkpoint / --checkpoint (the official AC "
            f"checkpoint, .pt or .safetensors), a model card (--model-card models/sim_reach/model.json, or "
            f"config/sim_demo.yaml), or engines (model.engine_dir / --engine-dir with runtime onnxruntime or tensorrt)")
    if n:
        log.warning("randomly initialised networks (%.2f M parameters, no checkpoint): untrained, for tests and "
                    "smoke runs only", n / 1e6)
    return n
