"""LeNet-5, two ways.

`lenet5`: the common 6-16-120-84-10 variant of PyTorch's "Neural Networks" tutorial
(pytorch.org/tutorials/beginner/blitz/neural_networks_tutorial.html): 5x5 convs with ReLU, 2x2 max
pooling, dense 120 > 84 > classes; 61,706 parameters for 10 classes.

`lenet5_1998`: LeCun, Bottou, Bengio, Haffner 1998, "Gradient-based learning applied to document
recognition", Section II.B: C1 (156 params), trainable subsampling S2 (12), C3 with the partial
connections of Table I (1,516), S4 (32), C5 (48,120), F6 (10,164), every one followed by the squashing
function 1.7159 tanh(2a/3), then the Euclidean RBF output with fixed centres: 60,000 trainable
parameters plus 84 x 10 = 840 fixed ones.

Both expect 32x32 images; smaller ones (28x28 MNIST) get zero padding in the first conv so that it
sees 32x32, as the paper pads its 28x28 digits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from cnn_jax.models.layers import (
    STRIDED_CONV,
    Conv,
    ConvUnit,
    Downsample,
    Flatten,
    MLPHead,
    Pool,
    flax_padding,
    strided_padding,
)
from cnn_jax.models.spec import ModelSpec

LENET_INPUT = 32
# Table I of the paper: the S2 maps each C3 map reads.
C3_INPUTS = (
    (0, 1, 2),
    (1, 2, 3),
    (2, 3, 4),
    (3, 4, 5),
    (4, 5, 0),
    (5, 0, 1),
    (0, 1, 2, 3),
    (1, 2, 3, 4),
    (2, 3, 4, 5),
    (3, 4, 5, 0),
    (4, 5, 0, 1),
    (5, 0, 1, 2),
    (0, 1, 3, 4),
    (1, 2, 4, 5),
    (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


def padding_to_32(x: jax.Array) -> int | str:
    """Zeros on each side that bring the smaller image side of an NHWC batch up to 32 (2 for 28x28);
    'VALID' when it is 32 or more."""
    return math.ceil(max(0, LENET_INPUT - min(x.shape[1:3])) / 2) or "VALID"


class ScaledTanh(nn.Module):
    """The paper's squashing function f(a) = A tanh(S a), A = 1.7159, S = 2/3 (Appendix A); a module,
    so that the summary tracks the receptive field of its output."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return 1.7159 * jnp.tanh(2.0 * x / 3.0)


class LeNet5(nn.Module):
    """Conv 6 5x5 > pool > conv 16 5x5 > pool > flatten > dense 120 > dense 84 > dense classes, ReLU;
    `downsample` replaces the two max-pools (kinds: `layers.Downsample`); 'strided_conv' gives both
    convs stride 2, padded by `layers.strided_padding`, so the maps stay 14x14 and 5x5."""

    num_classes: int = 10
    downsample: str = "max"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i, (features, padding) in enumerate(((6, padding_to_32(x)), (16, "VALID")), start=1):
            if self.downsample == STRIDED_CONV:
                x = ConvUnit(features, kernel=5, stride=2, padding=strided_padding(padding, 5), name=f"conv{i}")(x)
            else:
                x = ConvUnit(features, kernel=5, padding=padding, name=f"conv{i}")(x)
                x = Downsample(self.downsample, name=f"pool{i}")(x, train)
        x = Flatten(name="flatten")(x)
        return MLPHead((120, 84), num_classes=self.num_classes, name="classifier")(x, train)


class Subsampling(nn.Module):
    """S2/S4: each map's 2x2 sum times a trainable coefficient plus a trainable bias (2 params a map),
    built as 2x2 average pooling and a depthwise 1x1 conv (the coefficient absorbs the factor 4;
    it starts at 1, i.e. as plain average pooling)."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        maps = x.shape[-1]
        x = Pool("avg", window=2, stride=2)(x)
        return Conv(maps, (1, 1), feature_group_count=maps, kernel_init=nn.initializers.ones)(x)


class SelectMaps(nn.Module):
    """The input maps `maps`, in that order (a module, so that the summary tracks their receptive field)."""

    maps: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return x[..., list(self.maps)]


class PartialConv(nn.Module):
    """A VALID conv whose output map i reads only the input maps `inputs[i]` (LeNet-5's C3).

    Consecutive maps with the same number of inputs form one grouped conv over the gathered input
    maps, so C3 is three convs: 6 maps from 3 inputs, 9 from 4, 1 from all 6.
    """

    inputs: Sequence[Sequence[int]]
    kernel: int = 5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        outputs = []
        for fan_in, same_fan_in in itertools.groupby(self.inputs, key=len):
            group = tuple(same_fan_in)
            gathered = SelectMaps(tuple(channel for maps in group for channel in maps), name=f"select{fan_in}")(x)
            conv = Conv(
                len(group),
                (self.kernel, self.kernel),
                padding="VALID",
                feature_group_count=len(group),
                name=f"from{fan_in}",
            )
            outputs.append(conv(gathered))
        return jnp.concatenate(outputs, axis=-1)


def fixed_code(shape: tuple[int, int]) -> jax.Array:
    """A fixed +-1 code, one column per class, the same for every run and seed.

    The paper's centres are +-1 7x12 bitmaps of the ASCII characters; any fixed +-1 code plays their role.
    """
    return jnp.asarray(np.random.default_rng(1998).choice((-1.0, 1.0), size=shape), jnp.float32)


class RBFOutput(nn.Module):
    """Euclidean RBF units: logit_i = -||x - w_i||^2 with fixed centres w_i.

    The centres live in the 'batch_stats' collection, the state this codebase carries but never trains,
    so the summary counts them as non-trainable and the trainer keeps them unchanged.
    """

    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        centres = self.variable("batch_stats", "centres", fixed_code, (x.shape[-1], self.num_classes)).value
        return -jnp.sum((x[:, :, None] - centres[None]) ** 2, axis=1)


class LeNet5_1998(nn.Module):
    """C1 > S2 > C3 (Table I) > S4 > C5 > F6, scaled tanh after each, then the RBF output."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = ScaledTanh()(Conv(6, (5, 5), padding=flax_padding(padding_to_32(x)), name="c1")(x))
        x = ScaledTanh()(Subsampling(name="s2")(x))
        x = ScaledTanh()(PartialConv(C3_INPUTS, kernel=5, name="c3")(x))
        x = ScaledTanh()(Subsampling(name="s4")(x))
        x = ScaledTanh()(Conv(120, (5, 5), padding="VALID", name="c5")(x))
        x = ScaledTanh()(nn.Dense(84, name="f6")(Flatten(name="flatten")(x)))
        return RBFOutput(self.num_classes, name="output")(x)


MODELS = {
    "lenet5": ModelSpec(
        LeNet5,
        "LeNet-5 as in PyTorch's 'Neural Networks' tutorial: conv 6-16 5x5, 2x2 max pools, "
        "dense 120-84, ReLU; 61,706 params for 10 classes",
        input_shape=(32, 32, 1),
        num_classes=10,
    ),
    "lenet5_1998": ModelSpec(
        LeNet5_1998,
        "LeNet-5 of LeCun et al. 1998: trainable subsampling, C3 connection "
        "table, scaled tanh, fixed RBF output; 60,000 trainable + 840 fixed params",
        input_shape=(32, 32, 1),
        num_classes=10,
    ),
}
