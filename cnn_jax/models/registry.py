"""The one registry of models, and the check of a config's model section against the model's fields.

`config.model.name` picks the model; every other `config.model.*` key is a keyword argument of its
flax Module, i.e. one of the module's dataclass fields (big_vision's convention). A model's defaults
are the architecture's own; a registered variant is a `functools.partial` that binds some fields.
The seeds' switches keep one name in every model that has them (`downsample`, `kernel_scheme`,
`batch_norm`, `dropout`, `pool_window`, ...), so one sweep axis applies to each of those models.
The kinds of `downsample` (max, avg, l2, stride, strided_conv, none) are described in one place, the
docstring of `layers.Downsample`; AlexNet and the ResNet stem narrow them with CHOICES.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

from flax import linen as nn

from cnn_jax.errors import UserError, did_you_mean, unknown_choice
from cnn_jax.models import ablation_net, alexnet, allcnn, googlenet, lenet, resnet, seed_cnn, vgg
from cnn_jax.models.layers import ACTIVATIONS, DOWNSAMPLE_KINDS, KERNEL_SCHEMES
from cnn_jax.models.spec import ModelSpec

FAMILIES = (ablation_net, alexnet, allcnn, googlenet, lenet, resnet, seed_cnn, vgg)
REGISTRY: dict[str, ModelSpec] = {name: spec for family in FAMILIES for name, spec in family.MODELS.items()}
# Allowed values of the string switches; a model narrows them with a class attribute CHOICES.
SWITCH_CHOICES = {
    "downsample": DOWNSAMPLE_KINDS,
    "kernel_scheme": tuple(KERNEL_SCHEMES),
    "activation": tuple(ACTIVATIONS),
}
FRACTIONS = ("dropout",)  # numeric fields in [0, 1); every other numeric field must be > 0
BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
NOT_CONFIG = ("parent", "name", "num_classes")  # module fields that the config does not set


def available_models() -> tuple[str, ...]:
    """Names of all registered models, sorted."""
    return tuple(sorted(REGISTRY))


def model_entry(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise unknown_choice("config field 'model.name'", name, REGISTRY)
    return REGISTRY[name]


def model_fields(name: str) -> dict[str, Any]:
    """The fields a config may set for model `name`, with their values in that model."""
    module = model_entry(name).module
    bound = module.keywords if isinstance(module, functools.partial) else {}
    fields = {}
    for field in dataclasses.fields(_module_class(module)):
        value = bound.get(field.name, field.default)
        if field.name not in NOT_CONFIG and _is_config_value(value):
            fields[field.name] = value
    return fields


def check_model_config(section: Mapping[str, Any] | str) -> dict[str, Any]:
    """`{"name": ..., **fields}` of a model section, types normalized (an int given for a float field
    becomes a float); a UserError names a field the model lacks, a wrong type or an impossible value."""
    section = {"name": section} if isinstance(section, str) else dict(section)
    name = section.pop("name", None)
    if not isinstance(name, str):
        raise UserError(f"config field 'model.name' = {name!r}: give a model name (see `cnn-jax models`).")
    fields, choices = model_fields(name), _choices(name)
    checked = {"name": name}
    for key, value in section.items():
        if key == "num_classes":
            raise UserError(
                "config field 'model.num_classes' is not set by the config: it is the dataset's class count."
            )
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none besides model.name"
            raise UserError(
                f"model '{name}' has no field 'model.{key}'.{did_you_mean(key, fields)} Its fields: {known}."
            )
        checked[key] = _checked_value(f"model.{key}", value, fields[key], choices.get(key))
    try:  # a model's own rules between its fields run when it is constructed
        model_entry(name).module(
            num_classes=model_entry(name).num_classes, **{k: v for k, v in checked.items() if k != "name"}
        )
    except ValueError as exc:
        raise UserError(f"model '{name}': {exc}") from None
    return checked


def build_model(section: Mapping[str, Any] | str, *, num_classes: int) -> nn.Module:
    """The flax Module of a model section (or a bare name); it takes (images, train) and returns logits."""
    checked = check_model_config(section)
    name = checked.pop("name")
    return model_entry(name).module(num_classes=num_classes, **checked)


def _module_class(module: Any) -> type[nn.Module]:
    return module.func if isinstance(module, functools.partial) else module


def _is_config_value(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_is_config_value(v) for v in value)
    return isinstance(value, (bool, int, float, str))


def _choices(name: str) -> dict[str, tuple[str, ...]]:
    return {**SWITCH_CHOICES, **getattr(_module_class(model_entry(name).module), "CHOICES", {})}


def _checked_value(field: str, value: Any, default: Any, allowed: tuple[str, ...] | None) -> Any:
    """`value` of a model field whose own value is `default`: the same type (an int is taken for a float, a
    list for a tuple, whose items must have the type of the default's items), an allowed choice, in range."""
    if isinstance(value, str) and not isinstance(default, str):
        value = _parse_text(value, default)
    if isinstance(default, (tuple, list)):
        if not isinstance(value, (tuple, list)):
            raise _wrong_type(field, value, default)
        items = default[:1] * len(value)  # the items of a tuple field share their type
        return tuple(_checked_value(f"{field}[{i}]", v, d, allowed) for i, (v, d) in enumerate(zip(value, items)))
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
        ok, value = isinstance(value, (int, float)), float(value) if isinstance(value, (int, float)) else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise _wrong_type(field, value, default)
    if allowed is not None and isinstance(value, str) and value not in allowed:
        raise unknown_choice(f"config field '{field}'", value, allowed)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        fraction = field.rsplit(".", 1)[-1] in FRACTIONS
        if not (math.isfinite(value) and (0.0 <= value < 1.0 if fraction else value > 0)):
            raise UserError(f"config field '{field}' = {value}: must be {'in [0, 1)' if fraction else '> 0'}.")
    return value


def _parse_text(text: str, default: Any) -> Any:
    """Command-line text for a field that is not a string: a bool word, or a Python literal (else the text)."""
    if isinstance(default, bool) and text.strip().lower() in BOOL_WORDS:
        return BOOL_WORDS[text.strip().lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _wrong_type(field: str, value: Any, default: Any) -> UserError:
    return UserError(
        f"config field '{field}' = {value!r} has type {type(value).__name__}; expected {type(default).__name__} "
        f"(the model's own value is {default!r})."
    )
