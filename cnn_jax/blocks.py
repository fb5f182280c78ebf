"""Blocks built from the layer vocabulary: VGG block (more to come: Inception, residual)."""

from __future__ import annotations

import jax
from flax import linen as nn

from cnn_jax.layers import ConvStack, Downsample


class VGGBlock(nn.Module):
    """`num_convs` kernel-scheme units (SAME padding) with `features` channels, then the downsampling switch."""

    features: int
    num_convs: int = 2
    scheme: str = "3x3"
    downsample: str = "max"
    pool_window: int = 2
    batch_norm: bool = False
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for _ in range(self.num_convs):
            x = ConvStack(self.features, self.scheme, "SAME", self.batch_norm, self.activation)(x, train)
        return Downsample(self.downsample, self.pool_window, 2, batch_norm=self.batch_norm,
                          activation=self.activation)(x, train)
