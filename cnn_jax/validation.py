"""The whole check of a config before anything is read or compiled: its own fields (config.py) and
its model section against the chosen model's fields (models/registry.py)."""

from __future__ import annotations

import ml_collections

from cnn_jax import config as config_lib
from cnn_jax.models import check_model_config


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise a UserError naming the first impossible field; normalizes the model section in place
    (an int given for a float field becomes a float), so equal configs get equal run ids."""
    config_lib.validate_fields(config)
    checked = check_model_config(config.model.to_dict())
    config.model = ml_collections.ConfigDict(checked)
