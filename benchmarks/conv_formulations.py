"""Convolution formulations measured as levers by train_step_speed.py (not used by the library).

`im2col_conv` has the signature of `lax.conv_general_dilated` for NHWC inputs and HWIO kernels: it
concatenates the kh*kw shifted (strided) slices of the padded input along channels and multiplies by
the reshaped kernel once. `wgrad_matmul_conv` keeps XLA's convolution for the forward pass and the
input gradient and computes only the kernel gradient as that matmul. `with_conv(fn)` makes every flax
`nn.Conv` that `cnn_jax.models.layers` builds use `fn` while the models are traced.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from cnn_jax.models import layers

NHWC = ("NHWC", "HWIO", "NHWC")


def _plain(lhs, rhs, dilation, dimension_numbers, feature_group_count, batch_group_count) -> bool:
    """True for what these formulations do not cover: grouped or dilated convs, other layouts."""
    dilated = any(d != 1 for d in dilation)
    layout = dimension_numbers in (None, NHWC) or getattr(dimension_numbers, "lhs_spec", None) == (0, 3, 1, 2)
    return feature_group_count != 1 or batch_group_count != 1 or dilated or not layout or lhs.ndim != 4


def patches(x, kh: int, kw: int, strides, padding):
    """(N, Ho, Wo, kh*kw*C): the kh*kw shifted, strided slices of the padded NHWC input, side by side."""
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(x.shape[1:3], (kh, kw), strides, padding)
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    sh, sw = strides
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    cols = [
        x[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :] for i in range(kh) for j in range(kw)
    ]
    return jnp.concatenate(cols, axis=-1) if len(cols) > 1 else cols[0]


def im2col_conv(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """A 2-D convolution as shifted slices + one matmul; what it does not cover goes to XLA's conv."""
    if _plain(
        lhs,
        rhs,
        (*(lhs_dilation or ()), *(rhs_dilation or ())),
        dimension_numbers,
        feature_group_count,
        batch_group_count,
    ):
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            batch_group_count,
            precision,
            preferred_element_type,
        )
    kh, kw, cin, cout = rhs.shape
    return jnp.dot(patches(lhs, kh, kw, window_strides, padding), rhs.reshape(kh * kw * cin, cout), precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_wgrad_matmul(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)


def _conv_forward(x, w, strides, padding):
    return _conv_wgrad_matmul(x, w, strides, padding), (x, w)


def _conv_backward(strides, padding, saved, g):
    x, w = saved
    kh, kw, _, cout = w.shape
    _, input_vjp = jax.vjp(lambda x_: lax.conv_general_dilated(x_, w, strides, padding, dimension_numbers=NHWC), x)
    columns = patches(x, kh, kw, strides, padding)
    dw = jnp.dot(columns.reshape(-1, columns.shape[-1]).T, g.reshape(-1, cout)).reshape(w.shape)
    return input_vjp(g)[0], dw


_conv_wgrad_matmul.defvjp(_conv_forward, _conv_backward)


def wgrad_matmul_conv(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """XLA's convolution, with its kernel gradient computed as one matmul over the input's patches."""
    if _plain(
        lhs,
        rhs,
        (*(lhs_dilation or ()), *(rhs_dilation or ())),
        dimension_numbers,
        feature_group_count,
        batch_group_count,
    ):
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            batch_group_count,
            precision,
            preferred_element_type,
        )
    pad = padding if isinstance(padding, str) else tuple(tuple(p) for p in padding)
    return _conv_wgrad_matmul(lhs, rhs, tuple(window_strides), pad)


def from_channels(conv: Callable, min_channels: int) -> Callable:
    """`conv` for convolutions with at least `min_channels` input channels, XLA's for the others."""

    def choose(lhs, rhs, *args, **kwargs):
        if rhs.shape[2] >= min_channels:
            return conv(lhs, rhs, *args, **kwargs)
        return lax.conv_general_dilated(lhs, rhs, *args, **kwargs)

    return choose


@contextlib.contextmanager
def with_conv(fn: Callable) -> Iterator[None]:
    """Within the block, the `nn.Conv` of cnn_jax.models.layers computes with `fn`."""
    original = layers.nn
    shim = type("FlaxWithConv", (), {k: getattr(nn, k) for k in dir(nn) if not k.startswith("__")})
    shim.Conv = lambda *args, **kwargs: nn.Conv(*args, conv_general_dilated=fn, **kwargs)
    layers.nn = shim
    try:
        yield
    finally:
        layers.nn = original


def traced_with(conv: Callable, fn: Callable) -> Callable:
    """`fn`, whose convolutions (when jax traces it) compute with `conv`."""

    def wrapped(*args, **kwargs):
        with with_conv(conv):
            return fn(*args, **kwargs)

    return wrapped
