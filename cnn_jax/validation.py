"""The whole check of a config before anything is read or compiled: its own fields (config.py) and
its model section against the chosen model's fields (models/registry.py)."""

from __future__ import annotations

import ml_collections

from cnn_jax import config as config_lib
from cnn_jax.errors import unknown_choice
from cnn_jax.models import available_models, check_model_config


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise a UserError naming the first impossible field; normalizes the model section in place
    (an int given for a float field becomes a float), so equal configs get equal run ids."""
    config_lib.validate_fields(config)
    checked = check_model_config(config.model.to_dict())
    config.model = ml_collections.ConfigDict(checked)
    source_model = config.transfer.source_model
    if source_model and source_model not in available_models():
        raise unknown_choice("config field 'transfer.source_model'", source_model, available_models())
