"""Blocks built from the layer vocabulary: VGG block, Inception v1 (with GoogLeNet's auxiliary head),
and the ResNet v1 residual blocks."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn_jax.layers import AdaptiveAvgPool, ConvStack, ConvUnit, Downsample, Dropout, Flatten, Pool


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


# ----------------------------------------------------------------------------- Inception (GoogLeNet)

GOOGLENET_INIT = nn.initializers.normal(0.01)  # torchvision: N(0, 0.01) cut at +-2, i.e. in effect uncut


class InceptionV1(nn.Module):
    """Inception module of GoogLeNet (Szegedy et al. 2014, Fig. 2b), channels named as in Table 1:
    1x1 | 1x1 -> 3x3 | 1x1 -> "5x5" | 3x3/1 max-pool -> 1x1, concatenated on channels.

    Every conv is torchvision's BasicConv2d: conv without bias, batch norm (eps 0.001), ReLU.
    `ch5x5_kernel` is the kernel of the "5x5" branch: 3 as torchvision builds it (its known
    deviation, kept for parameter compatibility), 5 as in the paper.
    """

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    ch5x5_kernel: int = 3
    kernel_init: nn.initializers.Initializer = GOOGLENET_INIT

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        def conv(features: int, kernel: int, name: str) -> ConvUnit:
            return ConvUnit(features, kernel, padding=kernel // 2, batch_norm=True, bn_epsilon=1e-3,
                            kernel_init=self.kernel_init, name=name)

        branch1 = conv(self.ch1x1, 1, "branch1")(x, train)
        branch2 = conv(self.ch3x3red, 1, "branch2_reduce")(x, train)
        branch2 = conv(self.ch3x3, 3, "branch2")(branch2, train)
        branch3 = conv(self.ch5x5red, 1, "branch3_reduce")(x, train)
        branch3 = conv(self.ch5x5, self.ch5x5_kernel, "branch3")(branch3, train)
        branch4 = Pool("max", 3, 1, "SAME", name="branch4_pool")(x)
        branch4 = conv(self.pool_proj, 1, "branch4")(branch4, train)
        return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)


class InceptionAux(nn.Module):
    """GoogLeNet's auxiliary classifier as torchvision builds it: adaptive average pool to 4x4,
    1x1 conv 128 (BasicConv2d), flatten, fc 1024 + ReLU, dropout 0.7, fc classes.
    (The paper pools 5x5/3, which gives the same 4x4 on its 14x14 maps.)"""

    num_classes: int
    dropout: float = 0.7
    kernel_init: nn.initializers.Initializer = GOOGLENET_INIT

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = AdaptiveAvgPool(4, name="pool")(x)
        x = ConvUnit(128, 1, batch_norm=True, bn_epsilon=1e-3, kernel_init=self.kernel_init, name="conv")(x, train)
        x = Flatten(name="flatten")(x)
        x = nn.relu(nn.Dense(1024, kernel_init=self.kernel_init, name="fc1")(x))
        x = Dropout(self.dropout, name="dropout")(x, train)
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="fc2")(x)


# ----------------------------------------------------------------------------- residual (ResNet v1)

SHORTCUTS = ("projection", "zero_pad")
HE_NORMAL_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # torchvision's ResNet conv init


class Shortcut(nn.Module):
    """The shortcut path of a residual block (He et al. 2015, Sec. 3.3). Identity when the shapes
    match; otherwise option B 'projection' (1x1 conv with the stride, then batch norm) or option A
    'zero_pad' (subsample by the stride, append zero channels; no parameters)."""

    features: int
    stride: int = 1
    kind: str = "projection"
    kernel_init: nn.initializers.Initializer = HE_NORMAL_FAN_OUT

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.kind not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {self.kind!r}; allowed: {SHORTCUTS}")
        if self.stride == 1 and x.shape[-1] == self.features:
            return x
        if self.kind == "projection":
            return ConvUnit(self.features, 1, self.stride, 0, batch_norm=True, activation="none",
                            kernel_init=self.kernel_init, name="projection")(x, train)
        if self.stride > 1:
            x = Pool("avg", 1, self.stride, name="subsample")(x)
        return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.features - x.shape[-1])))


class BasicBlock(nn.Module):
    """ResNet v1 basic block: 3x3 conv (stride) > BN > ReLU > 3x3 conv > BN, add the shortcut, ReLU.
    Output channels: `features`."""

    features: int
    stride: int = 1
    shortcut: str = "projection"
    kernel_init: nn.initializers.Initializer = HE_NORMAL_FAN_OUT

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = partial(ConvUnit, batch_norm=True, kernel_init=self.kernel_init)
        y = conv(self.features, 3, self.stride, 1, name="conv1")(x, train)
        y = conv(self.features, 3, 1, 1, activation="none", name="conv2")(y, train)
        residual = Shortcut(self.features, self.stride, self.shortcut, self.kernel_init, name="shortcut")(x, train)
        return nn.relu(y + residual)


class Bottleneck(nn.Module):
    """ResNet v1 bottleneck: 1x1 conv `features` > 3x3 conv `features` (stride) > 1x1 conv
    `expansion` x `features`, each with BN (ReLU after the first two), add the shortcut, ReLU.
    Output channels: `expansion` (4) x `features`.

    The stride sits on the 3x3 conv, as in torchvision ("ResNet v1.5"); He et al. 2015 put it on
    the first 1x1 conv. Parameter counts are the same; v1.5 is slightly more accurate and slower.
    """

    features: int
    stride: int = 1
    shortcut: str = "projection"
    kernel_init: nn.initializers.Initializer = HE_NORMAL_FAN_OUT
    expansion: int = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = partial(ConvUnit, batch_norm=True, kernel_init=self.kernel_init)
        y = conv(self.features, 1, 1, 0, name="conv1")(x, train)
        y = conv(self.features, 3, self.stride, 1, name="conv2")(y, train)
        y = conv(self.features * self.expansion, 1, 1, 0, activation="none", name="conv3")(y, train)
        residual = Shortcut(self.features * self.expansion, self.stride, self.shortcut, self.kernel_init,
                            name="shortcut")(x, train)
        return nn.relu(y + residual)
