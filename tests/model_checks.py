"""The checks every registered model passes: parameter count, forward shape, one jitted train step
without NaNs, and init determinism. Model-family tests call `check_model`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnn_jax.models import build_model
from cnn_jax.models.summary import summarize


def count_params(name: str, input_shape, num_classes: int = 1000, **options) -> tuple[int, int]:
    """(trainable, non-trainable) parameter counts from an abstract trace (no compute)."""
    summary = summarize(_build(name, input_shape, num_classes, **options), tuple(input_shape), name)
    return summary.trainable_params, summary.non_trainable_params


def _build(name, input_shape, num_classes, **options):
    from cnn_jax import config as config_lib

    overrides = {"model.name": name, **{f"model.{k}": v for k, v in options.items()}}
    config = config_lib.apply_overrides(config_lib.default_config(), overrides)
    return build_model(config.model, num_classes=num_classes)


def check_model(name: str, input_shape, num_classes: int = 10, batch: int = 2, **options) -> None:
    """Forward shape (N, classes); one SGD train step is finite and changes parameters; same seed, same init."""
    model = _build(name, input_shape, num_classes, **options)
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, *input_shape))
    labels = jnp.arange(batch) % num_classes
    keys = {"params": jax.random.PRNGKey(1), "dropout": jax.random.PRNGKey(2)}
    init = jax.jit(lambda k: model.init(k, x[:1], train=False))  # one compile instead of one per layer
    variables, again = init(keys), init(keys)
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(again)):
        np.testing.assert_array_equal(a, b)
    logits = jax.jit(lambda v: model.apply(v, x, train=False))(variables)
    assert logits.shape == (batch, num_classes), logits.shape

    tx = optax.sgd(0.01)
    params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}

    @jax.jit
    def step(params, opt_state):
        def loss_fn(p):
            out, updates = model.apply(
                {"params": p, **rest}, x, train=True, mutable=list(rest), rngs={"dropout": jax.random.PRNGKey(3)}
            )
            return optax.softmax_cross_entropy_with_integer_labels(out, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), loss

    new_params, loss = step(params, tx.init(params))
    assert np.isfinite(float(loss))
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree_util.tree_leaves(new_params))
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(new_params))
    )
