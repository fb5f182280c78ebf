"""Convolution formulations measured as levers by train_step_speed.py (not used by the library).

`im2col_conv` has the signature of `lax.conv_general_dilated` for NHWC inputs and HWIO kernels: it
concatenates the kh*kw shifted (strided) slices of the padded input along channels and multiplies by
the reshaped kernel once. `with_conv(fn)` makes every flax `nn.Conv` that `cnn_jax.layers` builds use
`fn` while the models are built and traced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from cnn_jax import layers


def im2col_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                feature_group_count=1, batch_group_count=1, precision=None, preferred_element_type=None):
    """A 2-D convolution as shifted slices + one matmul; grouped or dilated ones go to XLA's conv."""
    kh, kw, cin, cout = rhs.shape
    dilated = any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
    if feature_group_count != 1 or batch_group_count != 1 or dilated:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, batch_group_count, precision,
                                        preferred_element_type)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), window_strides, padding)
    x = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
    sh, sw = window_strides
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    cols = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :] for i in range(kh) for j in range(kw)]
    patches = jnp.concatenate(cols, axis=-1) if len(cols) > 1 else cols[0]
    return jnp.dot(patches, rhs.reshape(kh * kw * cin, cout), precision=precision)


def im2col_from(min_channels: int) -> Callable:
    """im2col for convs with at least `min_channels` input channels, XLA's conv for the others."""
    def conv(lhs, rhs, *args, **kwargs):
        if rhs.shape[2] >= min_channels:
            return im2col_conv(lhs, rhs, *args, **kwargs)
        return lax.conv_general_dilated(lhs, rhs, *args, **kwargs)
    return conv


@contextlib.contextmanager
def with_conv(fn: Callable) -> Iterator[None]:
    """Within the block, the `nn.Conv` of cnn_jax.layers computes with `fn`."""
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
