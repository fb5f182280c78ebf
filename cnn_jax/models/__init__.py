"""The one registry of models: a name maps to a function building a flax Module."""

from __future__ import annotations

from collections.abc import Callable

from flax import linen as nn

from cnn_jax.errors import unknown_choice

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: make `factory(num_classes=..., input_shape=...)` available under `name`."""
    def add(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        _REGISTRY[name] = factory
        return factory
    return add


def available_models() -> tuple[str, ...]:
    """Names of all registered models, sorted."""
    return tuple(sorted(_REGISTRY))


def build_model(name: str, *, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """The flax Module for `name`; modules take (images, train: bool) and return logits."""
    if name not in _REGISTRY:
        raise unknown_choice("config field 'model.name'", name, _REGISTRY)
    return _REGISTRY[name](num_classes=num_classes, input_shape=input_shape)


from cnn_jax.models import seed_cnn  # noqa: E402,F401  (registers)
