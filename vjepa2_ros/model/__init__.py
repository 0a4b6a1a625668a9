"""V-JEPA 2 encoder and V-JEPA 2-AC predictor, weight-compatible with the official checkpoints."""

from vjepa2_ros.model.checkpoint import load_official_checkpoint, read_state_dict
from vjepa2_ros.model.config import ENCODER_PRESETS, PREDICTOR_PRESETS, EncoderConfig, PredictorConfig
from vjepa2_ros.model.encoder import VJEPA2Encoder
from vjepa2_ros.model.factory import build_model
from vjepa2_ros.model.latents import normalize_latents
from vjepa2_ros.model.predictor import ACPredictor, PredictorCache, block_causal_mask
from vjepa2_ros.model.preprocess import PreprocessConfig, preprocess_frames

__all__ = [
    "ACPredictor", "ENCODER_PRESETS", "EncoderConfig", "PREDICTOR_PRESETS", "PredictorCache",
    "PredictorConfig", "PreprocessConfig", "VJEPA2Encoder", "block_causal_mask", "build_model",
    "load_official_checkpoint", "normalize_latents", "preprocess_frames", "read_state_dict",
]
