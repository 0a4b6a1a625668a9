"""Model cards: the model.json that `vjepa2-ros pipeline`'s ship stage writes beside a trained
model's weights, and the one reader everything else opens a shipped model through.

    {"about": str,
     "model": {"encoder": {...}, "predictor": {...},           # config_from_dict sections
               "checkpoint": ".../predictor.safetensors", "encoder_checkpoint": ".../encoder.safetensors"},
     "sha256": {"predictor.safetensors": hex, "encoder.safetensors": hex},
     "training": {"steps", "loss", "loss_tf", "loss_rollout", "config"}}

The weight files are the ones beside the card (the paths in "model" are where they were shipped
to, for stack configs that name them); reading a card checks their sha256.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vjepa2_ros.errors import ConfigError
from vjepa2_ros.model.checkpoint import sha256_file
from vjepa2_ros.model.config import EncoderConfig, PredictorConfig, config_from_dict

MODEL_CARD = "model.json"
ABOUT = ("A V-JEPA-style world model (frozen encoder + action-conditioned predictor) trained by `vjepa2-ros "
         "pipeline` on the data its training config names; plan with it via a stack config whose model section "
         "matches `model` below.")


@dataclass(frozen=True)
class ModelCard:
    path: Path                      # the model.json
    encoder: str | dict[str, Any]   # config_from_dict("encoder", ...) section: a preset or fields
    predictor: str | dict[str, Any]
    checkpoint: Path                # predictor weights, beside the card
    encoder_checkpoint: Path        # encoder weights, beside the card
    sha256: dict[str, str]          # file name -> hex digest
    training: dict[str, Any]

    def encoder_config(self) -> EncoderConfig:
        return config_from_dict("encoder", self.encoder)

    def predictor_config(self) -> PredictorConfig:
        return config_from_dict("predictor", self.predictor)


def write_model_card(directory: str | Path, encoder: str | dict[str, Any], predictor: str | dict[str, Any],
                     checkpoint: str, encoder_checkpoint: str, training: dict[str, Any]) -> Path:
    """Write directory/model.json for the weight files `checkpoint` and `encoder_checkpoint`
    (names of files in `directory`), hashing them."""
    directory = Path(directory)
    files = {"checkpoint": directory / checkpoint, "encoder_checkpoint": directory / encoder_checkpoint}
    card = {"about": ABOUT,
            "model": {"encoder": encoder, "predictor": predictor, **{k: str(p) for k, p in files.items()}},
            "sha256": {p.name: sha256_file(p) for p in files.values()},
            "training": training}
    path = directory / MODEL_CARD
    path.write_text(json.dumps(card, indent=1) + "\n")
    return path


def read_model_card(path: str | Path) -> ModelCard:
    """The card at `path` (a model.json or the folder holding one). Raises ConfigError naming what
    is missing or wrong, or when a weight file is not the one the card hashed."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_CARD
    try:
        raw = json.loads(path.read_text())
        model = raw["model"]
        card = ModelCard(path=path, encoder=model["encoder"], predictor=model["predictor"],
                         checkpoint=path.parent / Path(model["checkpoint"]).name,
                         encoder_checkpoint=path.parent / Path(model["encoder_checkpoint"]).name,
                         sha256=dict(raw["sha256"]), training=dict(raw.get("training", {})))
        card.encoder_config(), card.predictor_config()
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: not a readable model card (model.json with a 'model' section naming encoder, "
                          f"predictor, checkpoint and encoder_checkpoint, and 'sha256'): "
                          f"{type(e).__name__}: {e}") from None
    for name, file in (("checkpoint", card.checkpoint), ("encoder_checkpoint", card.encoder_checkpoint)):
        if not file.is_file():
            raise ConfigError(f"{path}: its {name} {file.name} is not beside it in {path.parent}")
        if sha256_file(file) != card.sha256.get(file.name):
            raise ConfigError(f"{path}: {file.name} is not the file this card was written for (sha256 differs); "
                              f"re-run the pipeline's ship stage or restore the file")
    return card
