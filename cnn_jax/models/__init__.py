"""The one registry of models: a name maps to a factory building a flax Module from the model config.

A factory is called as `factory(options, num_classes=..., input_shape=...)`, where `options` is
the config's `model` section. It declares which of the switch fields of that section it honours
(`uses`); any other field left away from its default is an error, so a switch never silently
does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ml_collections
from flax import linen as nn

from cnn_jax.errors import UserError, unknown_choice

ModelFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: ModelFactory
    description: str
    uses: tuple[str, ...]  # model config fields besides `name` that this model reads


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, description: str, uses: Sequence[str] = ()) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator adding `factory(options, *, num_classes, input_shape) -> nn.Module` under `name`."""
    def add(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        _REGISTRY[name] = ModelEntry(name, factory, description, tuple(uses))
        return factory
    return add


def available_models() -> tuple[str, ...]:
    """Names of all registered models, sorted."""
    return tuple(sorted(_REGISTRY))


def model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise unknown_choice("config field 'model.name'", name, _REGISTRY)
    return _REGISTRY[name]


def build_model(options: ml_collections.ConfigDict | str, *, num_classes: int,
                input_shape: tuple[int, int, int]) -> nn.Module:
    """The flax Module for `options.name`; modules take (images, train: bool) and return logits."""
    from cnn_jax.config import default_config  # the schema of the model section

    defaults = default_config().model
    if isinstance(options, str):
        options = ml_collections.ConfigDict({**defaults.to_dict(), "name": options})
    entry = model_entry(options.name)
    changed = [k for k in defaults.keys() if k != "name" and options[k] != defaults[k] and k not in entry.uses]
    if changed:
        raise UserError(
            f"model '{entry.name}' does not use config field 'model.{changed[0]}' (set to {options[changed[0]]!r}); "
            f"fields it uses: {', '.join('model.' + u for u in entry.uses) or 'none besides model.name'}."
        )
    return entry.factory(options, num_classes=num_classes, input_shape=tuple(input_shape))


def _register_families() -> None:
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_register_families()
