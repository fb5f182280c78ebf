"""TrainState: everything that changes during training, as one pytree."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax import struct


@struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: updates applied so far
    params: Any
    batch_stats: Any  # {} for models without batch norm
    opt_state: Any
    rng: jax.Array  # raw uint32[2] key; step t uses fold_in(rng, t)


def run_keys(seed: int) -> dict[str, jax.Array]:
    """Independent keys of a run: parameter init, data order, per-step randomness."""
    root = jax.random.PRNGKey(seed)
    return {name: jax.random.fold_in(root, i) for i, name in enumerate(("init", "data", "step"))}


def create_train_state(
    model: nn.Module, tx: optax.GradientTransformation, input_shape: tuple[int, int, int], seed: int
) -> TrainState:
    """Initialize parameters, batch statistics and optimizer state for `seed` (the init is compiled: traced
    op by op, a deep model's init takes seconds of Python)."""
    keys = run_keys(seed)
    init = jax.jit(functools.partial(model.init, train=False))
    variables = init({"params": keys["init"], "dropout": keys["init"]}, jnp.zeros((1, *input_shape), jnp.float32))
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=keys["step"],
    )
