"""Blocks built from the layer vocabulary: VGG block, Inception v1 (with GoogLeNet's auxiliary head),
and the ResNet v1 residual blocks. Each takes the layers it is built from as fields (a `conv` unit,
or a `norm` and an `act`), as the blocks of flax's examples/imagenet do."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn_jax.models.layers import (
    BATCH_NORM,
    STRIDED_CONV,
    AdaptiveAvgPool,
    ConvStack,
    ConvUnit,
    Downsample,
    Dropout,
    Flatten,
    ModuleDef,
    Pool,
    identity,
)


class VGGBlock(nn.Module):
    """`num_convs` kernel-scheme units (SAME padding) of `conv` with `features` channels, then the
    downsampling switch (`layers.Downsample` says what each kind does): a pool of `pool_window` with
    stride 2, one more `conv` ('stride'), nothing ('none'), or for 'strided_conv' no layer after the
    convs: the block's last conv takes stride 2 itself, padded so that H and W come out as the
    pool's, floor((H - pool_window) / 2) + 1 (`layers.strided_padding`)."""

    features: int
    num_convs: int = 2
    scheme: str = "3x3"
    downsample: str = "max"
    pool_window: int = 2
    conv: ModuleDef = ConvUnit

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        strided = self.downsample == STRIDED_CONV
        for i in range(self.num_convs):
            stride = 2 if strided and i == self.num_convs - 1 else 1
            x = ConvStack(
                self.features,
                scheme=self.scheme,
                padding="SAME",
                conv=self.conv,
                stride=stride,
                window=self.pool_window,
            )(x, train)
        if strided:
            return x
        return Downsample(self.downsample, window=self.pool_window, stride=2, conv=self.conv)(x, train)


# ----------------------------------------------------------------------------- Inception (GoogLeNet)

GOOGLENET_INIT = nn.initializers.normal(0.01)  # torchvision: N(0, 0.01) cut at +-2, i.e. in effect uncut
# torchvision's BasicConv2d: conv without bias, batch norm (eps 0.001), ReLU
GOOGLENET_CONV = partial(ConvUnit, norm=partial(BATCH_NORM, epsilon=1e-3), kernel_init=GOOGLENET_INIT)


class InceptionV1(nn.Module):
    """Inception module of GoogLeNet (Szegedy et al. 2014, Fig. 2b), channels named as in Table 1:
    1x1 | 1x1 -> 3x3 | 1x1 -> "5x5" | 3x3/1 max-pool -> 1x1, concatenated on channels.

    Every conv is a `conv` unit (default: torchvision's BasicConv2d). `ch5x5_kernel` is the kernel
    of the "5x5" branch: 3 as torchvision builds it (its known deviation, kept for parameter
    compatibility), 5 as in the paper.
    """

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    ch5x5_kernel: int = 3
    conv: ModuleDef = GOOGLENET_CONV

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        def unit(features: int, kernel: int, name: str) -> nn.Module:
            return self.conv(features, kernel=kernel, padding=kernel // 2, name=name)

        branch1 = unit(self.ch1x1, kernel=1, name="branch1")(x, train)
        branch2 = unit(self.ch3x3red, kernel=1, name="branch2_reduce")(x, train)
        branch2 = unit(self.ch3x3, kernel=3, name="branch2")(branch2, train)
        branch3 = unit(self.ch5x5red, kernel=1, name="branch3_reduce")(x, train)
        branch3 = unit(self.ch5x5, kernel=self.ch5x5_kernel, name="branch3")(branch3, train)
        branch4 = Pool("max", window=3, stride=1, padding="SAME", name="branch4_pool")(x)
        branch4 = unit(self.pool_proj, kernel=1, name="branch4")(branch4, train)
        return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)


class InceptionAux(nn.Module):
    """GoogLeNet's auxiliary classifier as torchvision builds it: adaptive average pool to 4x4,
    1x1 conv 128 (BasicConv2d), flatten, fc 1024 + ReLU, dropout 0.7, fc classes.
    (The paper pools 5x5/3, which gives the same 4x4 on its 14x14 maps.)"""

    num_classes: int
    dropout: float = 0.7
    conv: ModuleDef = GOOGLENET_CONV
    kernel_init: nn.initializers.Initializer = GOOGLENET_INIT  # of the dense layers

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = AdaptiveAvgPool(4, name="pool")(x)
        x = self.conv(128, kernel=1, name="conv")(x, train)
        x = Flatten(name="flatten")(x)
        x = nn.relu(nn.Dense(1024, kernel_init=self.kernel_init, name="fc1")(x))
        x = Dropout(self.dropout, name="dropout")(x, train)
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="fc2")(x)


# ----------------------------------------------------------------------------- residual (ResNet v1)

SHORTCUTS = ("projection", "zero_pad")
HE_NORMAL_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # torchvision's ResNet conv init


class Shortcut(nn.Module):
    """The shortcut path of a residual block (He et al. 2015, Sec. 3.3). Identity when the shapes
    match; otherwise option B 'projection' (1x1 conv with the stride, then `norm`) or option A
    'zero_pad' (subsample by the stride, append zero channels; no parameters)."""

    features: int
    stride: int = 1
    kind: str = "projection"
    norm: ModuleDef = BATCH_NORM
    kernel_init: nn.initializers.Initializer = HE_NORMAL_FAN_OUT

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.kind not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {self.kind!r}; allowed: {SHORTCUTS}")
        if self.stride == 1 and x.shape[-1] == self.features:
            return x
        if self.kind == "projection":
            return ConvUnit(
                self.features,
                kernel=1,
                stride=self.stride,
                padding=0,
                norm=self.norm,
                act=identity,
                kernel_init=self.kernel_init,
                name="projection",
            )(x, train)
        if self.stride > 1:
            x = Pool("avg", window=1, stride=self.stride, name="subsample")(x)
        return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.features - x.shape[-1])))


def add_shortcut(block: nn.Module, x: jax.Array, y: jax.Array, train: bool) -> jax.Array:
    """`act(y + shortcut(x))`, the end of a residual block: the block's stride, shortcut kind, norm,
    activation and init; a submodule 'shortcut' of `block`, widened to `y`'s channels."""
    residual = Shortcut(
        y.shape[-1],
        stride=block.stride,
        kind=block.shortcut,
        norm=block.norm,
        kernel_init=block.kernel_init,
        name="shortcut",
    )(x, train)
    return block.act(y + residual)


class BasicBlock(nn.Module):
    """ResNet v1 basic block: 3x3 conv (stride) > norm > act > 3x3 conv > norm, add the shortcut, act.
    Output channels: `features`."""

    features: int
    stride: int = 1
    shortcut: str = "projection"
    norm: ModuleDef = BATCH_NORM
    act: Callable[[jax.Array], jax.Array] = nn.relu
    kernel_init: nn.initializers.Initializer = HE_NORMAL_FAN_OUT

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = partial(ConvUnit, norm=self.norm, kernel_init=self.kernel_init)
        y = conv(self.features, kernel=3, stride=self.stride, padding=1, act=self.act, name="conv1")(x, train)
        y = conv(self.features, kernel=3, stride=1, padding=1, act=identity, name="conv2")(y, train)
        return add_shortcut(self, x, y, train)


class Bottleneck(nn.Module):
    """ResNet v1 bottleneck: 1x1 conv `features` > 3x3 conv `features` (stride) > 1x1 conv
    `expansion` x `features`, each with `norm` (`act` after the first two), add the shortcut, `act`.
    Output channels: `expansion` (4) x `features`.

    The stride sits on the 3x3 conv, as in torchvision ("ResNet v1.5"); He et al. 2015 put it on
    the first 1x1 conv. Parameter counts are the same; v1.5 is slightly more accurate and slower.
    """

    features: int
    stride: int = 1
    shortcut: str = "projection"
    norm: ModuleDef = BATCH_NORM
    act: Callable[[jax.Array], jax.Array] = nn.relu
    kernel_init: nn.initializers.Initializer = HE_NORMAL_FAN_OUT
    expansion: int = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = partial(ConvUnit, norm=self.norm, kernel_init=self.kernel_init)
        y = conv(self.features, kernel=1, stride=1, padding=0, act=self.act, name="conv1")(x, train)
        y = conv(self.features, kernel=3, stride=self.stride, padding=1, act=self.act, name="conv2")(y, train)
        y = conv(self.features * self.expansion, kernel=1, stride=1, padding=0, act=identity, name="conv3")(y, train)
        return add_shortcut(self, x, y, train)
