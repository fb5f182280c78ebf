"""The layer vocabulary: shapes, parameter counts and exact values of the switches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cnn_jax.models.layers import ACTIVATIONS, BATCH_NORM, ConvStack, ConvUnit, Downsample, TransposedConv, Upsample

X = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))


def init_apply(module, x=X):
    variables = module.init(jax.random.PRNGKey(1), x)
    count = sum(a.size for a in jax.tree_util.tree_leaves(variables.get("params", {})))
    return module.apply(variables, x), count


@pytest.mark.parametrize(
    "kind, shape, params",
    [
        ("max", (2, 4, 4, 3), 0),
        ("avg", (2, 4, 4, 3), 0),
        ("stride", (2, 4, 4, 3), 3 * 3 * 3 * 3 + 3),  # k*k*c_in*c_out + c_out
        ("none", (2, 8, 8, 3), 0),
    ],
)
def test_downsampling_halves_h_and_w_with_the_expected_parameters(kind, shape, params):
    out, count = init_apply(Downsample(kind))
    assert out.shape == shape and count == params


def test_avg_and_max_pool_values():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    assert init_apply(Downsample("max"), x)[0][0, :, :, 0].tolist() == [[5, 7], [13, 15]]
    assert init_apply(Downsample("avg"), x)[0][0, :, :, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]


@pytest.mark.parametrize(
    "scheme, params",
    [
        ("5x5", 25 * 3 * 8 + 8),
        ("3x3x2", 9 * 3 * 8 + 8 + 9 * 8 * 8 + 8),
        ("7x7", 49 * 3 * 8 + 8),
        ("3x3x3", 9 * 3 * 8 + 8 + 2 * (9 * 8 * 8 + 8)),
    ],
)
def test_kernel_schemes_count_their_parameters(scheme, params):
    out, count = init_apply(ConvStack(8, scheme))
    assert out.shape == (2, 8, 8, 8) and count == params


@pytest.mark.parametrize("padding, size", [("SAME", 8), ("VALID", 6), (2, 10), (0, 6)])
def test_conv_padding_same_valid_and_explicit(padding, size):
    out, _ = init_apply(ConvUnit(4, kernel=3, padding=padding))
    assert out.shape == (2, size, size, 4)


@pytest.mark.parametrize(
    "activation, expected",
    [
        ("relu", lambda z: np.maximum(z, 0.0)),
        ("leaky_relu", lambda z: np.where(z >= 0, z, 0.01 * z)),
        ("elu", lambda z: np.where(z > 0, z, np.expm1(z))),
        ("gelu", lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))),  # flax's tanh form
        ("none", lambda z: z),
    ],
)
def test_conv_unit_applies_its_activation_to_the_conv_output(activation, expected):
    unit = ConvUnit(4, kernel=1, act=ACTIVATIONS[activation])
    variables = unit.init(jax.random.PRNGKey(1), X)
    pre_activation = ConvUnit(4, kernel=1, act=ACTIVATIONS["none"]).apply(variables, X)
    out = unit.apply(variables, X)
    assert sum(a.size for a in jax.tree_util.tree_leaves(variables)) == 3 * 4 + 4
    assert float(np.min(pre_activation)) < 0.0 < float(np.max(pre_activation))  # both branches are exercised
    np.testing.assert_allclose(out, expected(np.asarray(pre_activation, np.float64)), rtol=1e-5, atol=1e-6)


def test_batch_norm_replaces_the_conv_bias_and_keeps_running_statistics():
    module = ConvUnit(4, kernel=3, norm=BATCH_NORM)
    variables = module.init(jax.random.PRNGKey(1), X)
    assert "bias" not in variables["params"]["Conv_0"]
    assert set(variables["batch_stats"]["BatchNorm_0"]) == {"mean", "var"}
    _, updates = module.apply(variables, X, train=True, mutable=["batch_stats"])
    assert not np.allclose(updates["batch_stats"]["BatchNorm_0"]["mean"], 0.0)


def test_upsampling_nearest_bilinear_and_bed_of_nails():
    x = jnp.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    nearest = init_apply(Upsample(2, "nearest"), x)[0][0, :, :, 0]
    assert nearest.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    nails = init_apply(Upsample(2, "zeros"), x)[0][0, :, :, 0]
    assert nails.tolist() == [[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]
    bilinear = init_apply(Upsample(2, "bilinear"), x)[0]
    assert bilinear.shape == (1, 4, 4, 1) and float(bilinear.min()) >= 1.0 and float(bilinear.max()) <= 4.0


def test_transposed_conv_doubles_resolution_with_k_k_cin_cout_plus_bias_parameters():
    out, count = init_apply(TransposedConv(5, 3, 2))
    assert out.shape == (2, 16, 16, 5) and count == 3 * 3 * 3 * 5 + 5


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 40), kernel=st.integers(1, 7), stride=st.integers(1, 4), padding=st.integers(0, 3))
def test_conv_output_size_is_w_minus_f_plus_2p_over_s_plus_1(size, kernel, stride, padding):
    """Seed 002's formula W2 = (W1 - F + 2P) / S + 1 (floor) against the jitted layer's shape."""
    assume(size + 2 * padding >= kernel)
    x = jax.ShapeDtypeStruct((1, size, size, 2), jnp.float32)
    out = jax.eval_shape(
        lambda v: ConvUnit(3, kernel=kernel, stride=stride, padding=padding).init_with_output(jax.random.PRNGKey(0), v)[
            0
        ],
        x,
    )
    expected = (size - kernel + 2 * padding) // stride + 1
    assert out.shape == (1, expected, expected, 3)


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 40), window=st.integers(1, 4), stride=st.integers(1, 4), kind=st.sampled_from(["max", "avg"])
)
def test_pool_output_size_follows_the_same_formula_without_padding(size, window, stride, kind):
    assume(size >= window)
    x = jax.ShapeDtypeStruct((1, size, size, 2), jnp.float32)
    out = jax.eval_shape(
        lambda v: Downsample(kind, window=window, stride=stride).init_with_output(jax.random.PRNGKey(0), v)[0], x
    )
    expected = (size - window) // stride + 1
    assert out.shape == (1, expected, expected, 2)
