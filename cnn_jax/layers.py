"""The layer vocabulary of the course: pooling, global average pooling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn


def max_pool(x: jax.Array, window: int = 2, stride: int | None = None) -> jax.Array:
    """VALID max pooling over H and W of an NHWC batch.

    Non-overlapping windows (window == stride) use a crop + reshape + max, which
    equals `nn.max_pool` in value and gradient and is faster to differentiate on CPU.
    """
    stride = window if stride is None else stride
    if window != stride:
        return nn.max_pool(x, (window, window), strides=(stride, stride), padding="VALID")
    b, h, w, c = x.shape
    hh, ww = h // window, w // window
    x = x[:, : hh * window, : ww * window, :]
    return x.reshape(b, hh, window, ww, window, c).max(axis=(2, 4))


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over H and W: (N, H, W, C) -> (N, C)."""
    return jnp.mean(x, axis=(1, 2))
