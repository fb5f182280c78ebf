"""Models and layers: exact parameter counts, shapes, and the pooling formulation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from cnn_jax.errors import UserError
from cnn_jax.layers import max_pool
from cnn_jax.models import available_models, build_model


def test_seed_cnn_has_exactly_the_keras_parameter_counts_of_seed_002():
    model = build_model("seed_cnn", num_classes=10, input_shape=(28, 28, 1))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]
    per_layer = {name: sum(x.size for x in jax.tree_util.tree_leaves(p)) for name, p in params.items()}
    assert per_layer == {"conv1": 640, "conv2": 73_856, "conv3": 295_168, "dense": 2_570}
    assert sum(per_layer.values()) == 372_234
    logits = model.apply({"params": params}, jnp.zeros((3, 28, 28, 1)))
    assert logits.shape == (3, 10)


def test_registry_lists_seed_cnn_and_rejects_unknown_names_with_a_suggestion():
    assert "seed_cnn" in available_models()
    with pytest.raises(UserError, match="Did you mean 'seed_cnn'"):
        build_model("seed-cnn", num_classes=10, input_shape=(28, 28, 1))


@pytest.mark.parametrize("shape", [(2, 26, 26, 3), (2, 11, 11, 4), (1, 7, 9, 2)])
def test_reshape_max_pool_equals_flax_max_pool_in_value_and_gradient(shape):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    ours = max_pool(x, 2)
    reference = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
    assert ours.shape == reference.shape
    np.testing.assert_array_equal(ours, reference)
    weights = jax.random.normal(jax.random.PRNGKey(1), reference.shape)
    g_ours = jax.grad(lambda v: jnp.sum(max_pool(v, 2) * weights))(x)
    g_ref = jax.grad(lambda v: jnp.sum(nn.max_pool(v, (2, 2), strides=(2, 2), padding="VALID") * weights))(x)
    np.testing.assert_array_equal(g_ours, g_ref)


def test_overlapping_max_pool_falls_back_to_reduce_window():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 13, 13, 2))
    np.testing.assert_array_equal(max_pool(x, 3, 2), nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID"))


def test_seed_cnn_passes_the_common_model_checks():
    from model_checks import check_model, count_params

    assert count_params("seed_cnn", (28, 28, 1), 10) == (372_234, 0)
    check_model("seed_cnn", (28, 28, 1))
    check_model("seed_cnn", (28, 28, 1), downsample="stride")
