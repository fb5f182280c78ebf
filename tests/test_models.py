"""Models and layers: exact parameter counts, shapes, and the pooling formulation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from cnn_jax.errors import UserError
from cnn_jax.models import available_models, build_model
from cnn_jax.models.layers import max_pool
from cnn_jax.models.summary import summarize


def test_seed_cnn_has_exactly_the_keras_parameter_counts_of_seed_002():
    model = build_model("seed_cnn", num_classes=10)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]
    per_layer = {name: sum(x.size for x in jax.tree_util.tree_leaves(p)) for name, p in params.items()}
    assert per_layer == {"conv1": 640, "conv2": 73_856, "conv3": 295_168, "dense": 2_570}
    assert sum(per_layer.values()) == 372_234
    logits = model.apply({"params": params}, jnp.zeros((3, 28, 28, 1)))
    assert logits.shape == (3, 10)


def test_registry_lists_seed_cnn_and_rejects_unknown_names_with_a_suggestion():
    assert "seed_cnn" in available_models()
    with pytest.raises(UserError, match="Did you mean 'seed_cnn'"):
        build_model("seed-cnn", num_classes=10)


def _pool_value_and_grad(pool, x, weights):
    return pool(x), jax.grad(lambda v: jnp.sum(pool(v).astype(jnp.float32) * weights))(x)


def _with_ties(x, window):
    """ReLU zeros, the first window all zeros, and the second diagonal window's maximum repeated twice."""
    x = jnp.maximum(x, 0).at[..., :window, :window, :].set(0.0)
    top = x[..., window : 2 * window, window : 2 * window, :].max(axis=(-3, -2))
    return x.at[..., window + 1, window, :].set(top).at[..., window + 1, window + 1, :].set(top)


def test_tiled_max_pool_value_is_the_same_evaluated_and_differentiated():
    """Evaluation computes the pool by reduce-window, training by its tiles: the same numbers either way."""
    x = _with_ties(jax.random.normal(jax.random.PRNGKey(3), (2, 13, 13, 5)), 2)
    differentiated, _ = jax.vjp(lambda v: max_pool(v, 2), x)
    np.testing.assert_array_equal(differentiated, max_pool(x, 2))
    np.testing.assert_array_equal(differentiated, nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID"))


@pytest.mark.device
@pytest.mark.parametrize("window", [2, 3])
@pytest.mark.parametrize(  # odd sizes (cropped rows and columns) in the slow tier
    "shape",
    [
        (2, 26, 26, 3),
        pytest.param((2, 11, 11, 4), marks=pytest.mark.slow),
        pytest.param((1, 7, 9, 2), marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize("ties", [False, True])
def test_tiled_max_pool_equals_flax_max_pool_in_value_and_gradient(shape, window, ties):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    x = _with_ties(x, window) if ties else x

    def reference(v):
        return nn.max_pool(v, (window, window), strides=(window, window), padding="VALID")

    weights = jax.random.normal(jax.random.PRNGKey(1), reference(x).shape)
    ours, g_ours = _pool_value_and_grad(lambda v: max_pool(v, window), x, weights)
    theirs, g_ref = _pool_value_and_grad(reference, x, weights)
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(g_ours, g_ref)
    if ties:  # a window of equal maxima sends its whole gradient to one element, as select-and-scatter does
        assert int(jnp.sum(g_ours[:, :window, :window, :] != 0)) == shape[0] * shape[3]


@pytest.mark.device
def test_tiled_max_pool_gradient_under_vmap_and_in_bfloat16():
    x = _with_ties(jax.random.normal(jax.random.PRNGKey(2), (3, 2, 10, 10, 4)), 2).astype(jnp.bfloat16)

    def reference(v):
        return nn.max_pool(v, (2, 2), strides=(2, 2), padding="VALID")

    weights = jax.random.normal(jax.random.PRNGKey(3), (2, 5, 5, 4))
    ours = jax.vmap(lambda v: _pool_value_and_grad(lambda u: max_pool(u, 2), v, weights))(x)
    theirs = jax.vmap(lambda v: _pool_value_and_grad(reference, v, weights))(x)
    assert ours[1].dtype == jnp.bfloat16
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


def test_plain_switch_uses_flax_max_pool(monkeypatch):
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 8, 8, 2))
    tiled = str(jax.make_jaxpr(jax.grad(lambda v: max_pool(v, 2).sum()))(x))
    monkeypatch.setenv("CNN_JAX_PLAIN", "1")
    plain = str(jax.make_jaxpr(jax.grad(lambda v: max_pool(v, 2).sum()))(x))
    assert "reduce_max" in tiled and "select_and_scatter" not in tiled  # the tiles' max and hand-written gradient
    assert "reduce_max" not in plain and "select_and_scatter" in plain


def test_overlapping_max_pool_falls_back_to_reduce_window():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 13, 13, 2))
    np.testing.assert_array_equal(max_pool(x, 3, 2), nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID"))


def test_seed_cnn_passes_the_common_model_checks():
    from model_checks import check_model, count_params

    assert count_params("seed_cnn", (28, 28, 1), 10) == (372_234, 0)
    check_model("seed_cnn", (28, 28, 1))
    check_model("seed_cnn", (28, 28, 1), downsample="stride")


def test_seed_cnn_strided_conv_keeps_the_parameters_and_the_pools_map_sizes():
    """conv1 and conv2 take stride 2 and crop the row and column that the 2x2 pools of their odd maps
    (26 -> 13, 11 -> 5) leave out: 28 -> 13 -> 5 -> 3, as with the pools."""
    from model_checks import check_model, count_params

    assert count_params("seed_cnn", (28, 28, 1), 10, downsample="strided_conv") == (372_234, 0)
    model = build_model({"name": "seed_cnn", "downsample": "strided_conv"}, num_classes=10)
    rows = summarize(model, (28, 28, 1)).rows
    assert [r.output_shape for r in rows if r.kind == "Conv"] == [(13, 13, 64), (5, 5, 128), (3, 3, 256)]
    check_model("seed_cnn", (28, 28, 1), downsample="strided_conv")
