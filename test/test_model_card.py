"""The model card (model.json) a shipped model is opened through: it names the networks, and the
weights beside it must be the files it hashed."""

import shutil
from pathlib import Path

import pytest

from vjepa2_ros.engines.factory import runtime_config_from_card
from vjepa2_ros.errors import ConfigError
from vjepa2_ros.model.card import MODEL_CARD, read_model_card

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "sim_reach"


@pytest.fixture()
def shipped_copy(tmp_path):
    dst = tmp_path / "sim_reach"
    shutil.copytree(SHIPPED, dst)
    return dst


def test_card_of_the_shipped_model_names_the_files_beside_it(shipped_copy):
    card = read_model_card(shipped_copy)                      # a folder or its model.json
    assert card.checkpoint == shipped_copy / "predictor.safetensors"
    assert card.encoder_checkpoint == shipped_copy / "encoder.safetensors"
    cfg = runtime_config_from_card(shipped_copy / MODEL_CARD, device="cpu")
    assert cfg.checkpoint == str(card.checkpoint) and cfg.predictor_cfg == card.predictor_config()


def test_a_weight_file_that_is_not_the_one_the_card_hashed_is_refused(shipped_copy):
    weights = shipped_copy / "predictor.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ConfigError, match="predictor.safetensors is not the file this card was written for"):
        runtime_config_from_card(shipped_copy / MODEL_CARD)


def test_missing_weights_or_a_broken_card_say_what_is_wrong(shipped_copy):
    (shipped_copy / "encoder.safetensors").unlink()
    with pytest.raises(ConfigError, match="encoder_checkpoint encoder.safetensors is not beside it"):
        read_model_card(shipped_copy)
    (shipped_copy / MODEL_CARD).write_text('{"model": {"encoder": "vit_tiny"}}')
    with pytest.raises(ConfigError, match="not a readable model card.*KeyError"):
        read_model_card(shipped_copy)
