"""What the registry knows of a model besides its code: a description and what it was published for."""

from __future__ import annotations

from dataclasses import dataclass

from cnn_jax.models.layers import ModuleDef


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: `module` (a flax Module class, or a partial binding a variant's fields) is
    called with `num_classes` and the config's model fields; `input_shape` and `num_classes` are the
    input and class count it was published with (the defaults of `cnn-jax summary`)."""

    module: ModuleDef
    description: str
    input_shape: tuple[int, int, int]
    num_classes: int
