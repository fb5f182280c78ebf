"""The layer vocabulary: shapes, parameter counts and exact values of the switches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cnn_jax.models.layers import (
    ACTIVATIONS,
    BATCH_NORM,
    DOWNSAMPLE_KINDS,
    L2_POOL_EPSILON,
    ConvStack,
    ConvUnit,
    Downsample,
    Pool,
    TransposedConv,
    Upsample,
    flax_padding,
    identity,
    strided_padding,
)

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
        ("l2", (2, 4, 4, 3), 0),
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
    size=st.integers(1, 40),
    window=st.integers(1, 4),
    stride=st.integers(1, 4),
    kind=st.sampled_from(["max", "avg", "l2"]),
)
def test_pool_output_size_follows_the_same_formula_without_padding(size, window, stride, kind):
    assume(size >= window)
    x = jax.ShapeDtypeStruct((1, size, size, 2), jnp.float32)
    out = jax.eval_shape(
        lambda v: Downsample(kind, window=window, stride=stride).init_with_output(jax.random.PRNGKey(0), v)[0], x
    )
    expected = (size - window) // stride + 1
    assert out.shape == (1, expected, expected, 2)


# ----------------------------------------------------------------------------- L2 pooling


def l2_pool_reference(x: np.ndarray, window: int, stride: int, pad: int = 0) -> np.ndarray:
    """sqrt(sum of squares + epsilon) over each window, written out in float64; padding counts as zeros."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    b, h, w, c = x.shape
    rows, cols = (h - window) // stride + 1, (w - window) // stride + 1
    out = np.zeros((b, rows, cols, c))
    for i in range(rows):
        for j in range(cols):
            cell = x[:, i * stride : i * stride + window, j * stride : j * stride + window, :]
            out[:, i, j, :] = np.sqrt(np.sum(cell**2, axis=(1, 2)) + L2_POOL_EPSILON)
    return out


def test_the_switch_has_six_kinds_each_described_in_the_downsample_docstring():
    assert DOWNSAMPLE_KINDS == ("max", "avg", "l2", "stride", "strided_conv", "none")
    assert all(f"'{kind}'" in Downsample.__doc__ for kind in DOWNSAMPLE_KINDS)


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 7, 9, 2)])
@pytest.mark.parametrize("window, stride", [(2, 2), (3, 2), (3, 3)])
def test_l2_pool_is_the_root_of_the_sum_of_squares_over_each_window(shape, window, stride):
    x = jax.random.normal(jax.random.PRNGKey(4), shape)
    out, count = init_apply(Downsample("l2", window=window, stride=stride), x)
    assert count == 0
    np.testing.assert_allclose(out, l2_pool_reference(x, window, stride), rtol=1e-6, atol=1e-7)


def test_l2_pool_values_and_padding_counted_as_zeros():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    out = init_apply(Downsample("l2"), x)[0][0, :, :, 0]
    expected = [
        [np.sqrt(0 + 1 + 16 + 25), np.sqrt(4 + 9 + 36 + 49)],
        [np.sqrt(64 + 81 + 144 + 169), np.sqrt(100 + 121 + 196 + 225)],
    ]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    padded = init_apply(Pool("l2", window=3, stride=2, padding=1), X)[0]
    np.testing.assert_allclose(padded, l2_pool_reference(X, 3, 2, pad=1), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_l2_pool_gradient_is_finite_at_all_zero_windows(dtype):
    pool = Downsample("l2")
    zeros = jnp.zeros((1, 4, 4, 2), dtype)
    out = pool.apply({}, zeros)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.sqrt(L2_POOL_EPSILON), rtol=1e-2)
    grad = jax.grad(lambda v: pool.apply({}, v).astype(jnp.float32).sum())(zeros)
    assert grad.dtype == dtype and np.isfinite(np.asarray(grad, np.float32)).all()
    np.testing.assert_array_equal(np.asarray(grad, np.float32), 0.0)
    # A window that is all zeros next to ones that are not: d sqrt(sum x^2) / dx = x / ||window|| elsewhere.
    x = jax.random.normal(jax.random.PRNGKey(5), (1, 4, 4, 2)).at[:, :2, :2, :].set(0.0)
    grad = jax.grad(lambda v: pool.apply({}, v).sum())(x)
    norms = np.repeat(np.repeat(l2_pool_reference(x, 2, 2), 2, axis=1), 2, axis=2)
    assert np.isfinite(np.asarray(grad)).all()
    np.testing.assert_allclose(grad, np.asarray(x) / norms, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- strided conv (Strided-CNN)


def test_strided_conv_is_applied_by_the_block_not_by_the_downsample_module():
    with pytest.raises(ValueError, match="conv before the downsampling point takes the stride"):
        init_apply(Downsample("strided_conv"))


@pytest.mark.parametrize(
    "padding, kernel, window, expected",
    [
        ("SAME", 3, 2, ((1, 0), (1, 0))),  # PyTorch's padding=1 on even sizes; one row fewer on odd ones
        ("SAME", 5, 2, ((2, 1), (2, 1))),
        ("SAME", 7, 2, ((3, 2), (3, 2))),
        ("VALID", 3, 2, ((0, -1), (0, -1))),  # crops the row that the 2x2 pool would leave out
        (2, 5, 2, ((2, 1), (2, 1))),
        ("SAME", 3, 3, ((1, -1), (1, -1))),
    ],
)
def test_strided_padding_is_the_stride_1_padding_less_window_minus_1_at_the_bottom_and_right(
    padding, kernel, window, expected
):
    assert strided_padding(padding, kernel, window) == expected


def check_strided_conv_against_stride_1_conv_and_pool(size, kernel, padding, window, stride):
    """Same output size as conv + VALID pool, and the values of the stride-1 conv where each pooling
    window starts (its top-left corner)."""
    x = jax.random.normal(jax.random.PRNGKey(size), (1, size, size + 1, 2))
    dense = ConvUnit(3, kernel=kernel, padding=padding, act=ACTIVATIONS["none"])
    strided = ConvUnit(
        3, kernel=kernel, stride=stride, padding=strided_padding(padding, kernel, window), act=ACTIVATIONS["none"]
    )
    variables = dense.init(jax.random.PRNGKey(1), x)
    full = dense.apply(variables, x)
    if min(full.shape[1:3]) < window:
        return False
    pooled = Pool("max", window=window, stride=stride).apply({}, full)
    out = strided.apply(variables, x)
    assert out.shape == pooled.shape
    expected = full[:, ::stride, ::stride, :][:, : out.shape[1], : out.shape[2], :]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    return True


@pytest.mark.parametrize(
    "size, kernel, padding, window",
    [(8, 3, "SAME", 2), (7, 3, "SAME", 2), (7, 3, "VALID", 2), (8, 3, "VALID", 2), (9, 5, 2, 3), (6, 7, "SAME", 2)],
)
def test_strided_conv_is_the_stride_1_conv_at_the_top_left_of_each_pooling_window(size, kernel, padding, window):
    assert check_strided_conv_against_stride_1_conv_and_pool(size, kernel, padding, window, stride=2)


@pytest.mark.slow  # a compile per example
@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 23),
    kernel=st.sampled_from([1, 3, 5, 7]),
    padding=st.sampled_from(["SAME", "VALID", 1, 2]),
    window=st.integers(1, 3),
    stride=st.integers(2, 3),
)
def test_strided_conv_matches_conv_and_pool_for_every_size_padding_window_and_stride(
    size, kernel, padding, window, stride
):
    assume(check_strided_conv_against_stride_1_conv_and_pool(size, kernel, padding, window, stride))


@pytest.mark.parametrize("scheme", ["3x3", "5x5", "3x3x2", "7x7"])
@pytest.mark.parametrize("size", [8, 7, 28, 13])
def test_conv_stack_with_stride_has_the_parameters_of_the_stack_and_the_shape_of_stack_and_pool(scheme, size):
    def shape_and_count(module, x):
        out, variables = jax.eval_shape(lambda v: module.init_with_output(jax.random.PRNGKey(0), v), x)
        return out.shape, sum(a.size for a in jax.tree_util.tree_leaves(variables))

    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    plain, plain_count = shape_and_count(ConvStack(8, scheme), x)
    strided, strided_count = shape_and_count(ConvStack(8, scheme, stride=2), x)
    pooled, _ = shape_and_count(Downsample("max"), jax.ShapeDtypeStruct(plain, jnp.float32))
    assert strided_count == plain_count
    assert strided == pooled == (1, size // 2, size // 2, 8)


@pytest.mark.parametrize(
    ("size", "stride", "padding"), [(2, 1, "SAME"), (1, 1, "SAME"), (2, 2, "SAME"), (2, 1, 1), (2, 2, ((1, 0), (1, 0)))]
)
def test_a_conv_on_a_map_smaller_than_its_kernel_pads_explicitly_with_the_same_result(size, stride, padding):
    """ConvUnit pads such maps itself (XLA's CPU conv is ~100x slower padding them); value and gradients are
    those of flax's conv with the padding inside."""
    x = jax.random.normal(jax.random.PRNGKey(0), (3, size, size, 8))
    unit = ConvUnit(16, kernel=3, stride=stride, padding=padding, act=identity)
    reference = nn.Conv(16, (3, 3), strides=(stride, stride), padding=flax_padding(padding))
    variables = {"params": {"Conv_0": reference.init(jax.random.PRNGKey(1), x)["params"]}}

    def loss(v, x, apply):
        return jnp.sum(apply(v, x) ** 2)

    ours = lambda v, x: unit.apply(v, x)  # noqa: E731
    theirs = lambda v, x: reference.apply({"params": v["params"]["Conv_0"]}, x)  # noqa: E731
    np.testing.assert_allclose(ours(variables, x), theirs(variables, x), rtol=1e-5, atol=1e-5)
    g_ours = jax.grad(loss, argnums=(0, 1))(variables, x, ours)
    g_theirs = jax.grad(loss, argnums=(0, 1))(variables, x, theirs)
    for a, b in zip(jax.tree_util.tree_leaves(g_ours), jax.tree_util.tree_leaves(g_theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
