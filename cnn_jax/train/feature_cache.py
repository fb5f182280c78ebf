"""Feature extraction without recomputing the frozen backbone (`transfer.feature_cache`).

When only one top-level module trains (the head, e.g. 'classifier' or 'fc'), nothing random happens
before it (no augmentation, no active dropout in the backbone) and frozen batch norms use their stored
statistics, the head's input does not change during training: it is computed once per example, and the
steps apply the head alone to those features. The head keeps its module path (`HeadOnly`), so its
dropout draws the same masks as inside the whole model, and the state, checkpoints and results are those
of a run that trained through the frozen backbone. Features are stored beside the run directories of
the experiment, `runs/<experiment>/.feature_cache/<key>.npz`, the key hashing the model, the backbone's
variables, the data fingerprints, the examples used and the input transform, so every seed and variant
with the same backbone and data reads them back.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from cnn_jax.data.pipeline import DeviceSplit
from cnn_jax.files import write_bytes_atomic

CACHE_DIR = ".feature_cache"


def head_of(trainable: dict) -> str | None:
    """The top-level module whose parameters are exactly the trainable ones, or None."""
    flat = traverse_util.flatten_dict(trainable["params"], sep="/")
    tops = {path.split("/", 1)[0] for path, on in flat.items() if on}
    if len(tops) != 1:
        return None
    (top,) = tops
    inside = [on for path, on in flat.items() if path.split("/", 1)[0] == top]
    stats = traverse_util.flatten_dict(trainable["batch_stats"], sep="/") if trainable["batch_stats"] else {}
    statistics_update_only_in_head = all(not on or path.startswith(f"{top}/") for path, on in stats.items())
    return top if all(inside) and statistics_update_only_in_head else None


def why_not(config, model: nn.Module, input_shape: tuple[int, ...], trainable: dict) -> str | None:
    """None when a transfer run (masks `trainable`) can train its head on cached features; else the reason."""
    head = head_of(trainable)
    if head is None:
        return "what trains is not one top-level module (the head) as a whole"
    augment = config.dataset.augment
    if any(augment[f] for f in augment):
        return "augmentation changes the backbone's input every epoch"
    if config.transfer.frozen_batch_norm != "inference" and trainable["batch_stats"]:
        return "frozen batch norms normalize with each batch's statistics (transfer.frozen_batch_norm)"
    active = _dropouts_outside(model, input_shape, head)
    if active:
        return f"dropout acts before the head ({active[0]})"
    return None


def _dropouts_outside(model: nn.Module, input_shape: tuple[int, ...], head: str) -> list[str]:
    found = []

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, nn.Dropout) and module.rate > 0 and module.path[:1] != (head,):
            found.append("/".join(module.path))
        return next_fun(*args, **kwargs)

    def apply():
        variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *input_shape)), train=False)
        with nn.intercept_methods(interceptor):
            return model.apply(
                variables,
                jnp.zeros((1, *input_shape)),
                train=True,
                rngs={"dropout": jax.random.PRNGKey(0)},
                mutable=True,
            )

    jax.eval_shape(apply)
    return found


@dataclass(frozen=True)
class HeadOnly:
    """Quacks like the run's model for the train and eval steps, but takes the head's input: applies the
    model's top-level submodule `name` (built by `make`) at its own path."""

    make: Callable[..., nn.Module]
    name: str

    def apply(self, variables: dict, features: jax.Array, train: bool = False, **kwargs) -> Any:
        part = {col: {self.name: tree[self.name]} for col, tree in variables.items() if self.name in tree}
        out = _Wrapper(self.make, self.name).apply(part, features, train, **kwargs)
        if "mutable" not in kwargs:
            return out
        logits, updates = out
        merged = {col: {**variables.get(col, {}), **tree} for col, tree in updates.items()}
        return logits, merged


class _Wrapper(nn.Module):
    """A root whose only child is the head, named as in the model, so that the head's path (and its
    dropout stream) is the model's."""

    make: Callable[..., nn.Module]
    head: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        module = self.make(name=self.head)
        takes_train = "train" in inspect.signature(type(module).__call__).parameters  # nn.Dense does not
        return module(x, train) if takes_train else module(x)


def head_factory(model: nn.Module, input_shape: tuple[int, ...], name: str) -> Callable[..., nn.Module]:
    """The class and field values of the model's top-level submodule `name`, as the model builds it."""
    captured = []

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and module.path == (name,) and not captured:
            fields = {
                f.name: getattr(module, f.name) for f in dataclasses.fields(module) if f.name not in ("parent", "name")
            }
            captured.append(functools.partial(type(module), **fields))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *input_shape)), train=False))
    return captured[0]


def extract(
    model: nn.Module, variables: dict, inputs, splits: dict[str, DeviceSplit], name: str, batch: int
) -> dict[str, np.ndarray]:
    """The head's input for every stored example of each split (padding included), in batches of `batch`:
    one compiled program for all splits, the variables passed to it (not baked in as constants)."""

    @jax.jit
    def features(variables, images):
        captured = []

        def interceptor(next_fun, args, kwargs, context):
            if context.method_name == "__call__" and context.module.path == (name,):
                captured.append(args[0])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            model.apply(variables, inputs(images), train=False)
        return captured[0]

    def all_of(split: DeviceSplit) -> np.ndarray:
        n = len(split.labels)
        return np.concatenate(
            [np.asarray(features(variables, split.images[i : i + batch])) for i in range(0, n, batch)]
        )

    return {key: all_of(split) for key, split in splits.items()}


def identity(x: jax.Array) -> jax.Array:
    """The steps' input transform on cached features: they are the head's input already."""
    return x


def cache_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def variables_digest(variables: dict, head: str) -> str:
    """A hash of the backbone's variables (everything but the head)."""
    digest = hashlib.sha256()
    for collection in sorted(variables):
        for path, value in sorted(traverse_util.flatten_dict(variables[collection], sep="/").items()):
            if not path.startswith(f"{head}/"):
                digest.update(path.encode())
                digest.update(np.ascontiguousarray(np.asarray(value)).tobytes())
    return digest.hexdigest()


def load_or_compute(path: Path, compute) -> dict[str, np.ndarray]:
    """The arrays stored at `path`, or `compute()`'s, written there atomically for the next run."""
    if path.exists():
        with np.load(path) as stored:
            return {k: stored[k] for k in stored.files}
    arrays = compute()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())
    return arrays


def as_split(split: DeviceSplit, features: np.ndarray) -> DeviceSplit:
    """`split` with its images replaced by the head's input features."""
    return DeviceSplit(jnp.asarray(features), split.labels, split.mask, split.size)
