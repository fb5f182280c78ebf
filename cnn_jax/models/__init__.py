"""Model building: layers <- blocks <- one file per family <- the registry (see registry.py)."""

from cnn_jax.models.registry import available_models, build_model, check_model_config, model_entry, model_fields

__all__ = ["available_models", "build_model", "check_model_config", "model_entry", "model_fields"]
