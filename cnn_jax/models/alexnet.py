"""AlexNet, two ways.

`alexnet`: Krizhevsky, Sutskever, Hinton 2012, "ImageNet classification with deep convolutional neural
networks", Section 3 and Fig. 2, on one GPU (no grouping) and on 227x227 inputs, the size for which
the stated 55x55 maps come out: conv 96 11x11/4 > max-pool 3x3/2 > conv 256 5x5 > pool > conv 384,
384, 256 3x3 > pool > 6x6x256 > fc 4096, 4096 with dropout 0.5 > classes; 62,378,344 parameters for
1000 classes. Local response normalization is left out (it has no parameters; the paper credits it
with 1.2-1.4 points of top-1). Other input sizes give other flatten sizes.

`alexnet_torchvision`: torchvision.models.alexnet: channels 64-192-384-256-256, conv1 padded by 2 for
224x224 inputs, adaptive average pooling to 6x6 (exact torchvision windows on any map; on a 224x224
input the map is already 6x6), dropout before the first two fc layers; 61,100,840 parameters for
1000 classes, on any input size.

Both have the switches `downsample` (the three 3x3/2 max-pools; the kinds of `layers.Downsample`
except 'strided_conv', which would turn conv1, already of stride 4 before an overlapping pool, into an
11x11 conv of stride 8 that crops 8 pixels), `pool_window` (3, the overlapping
pooling; 2 gives the paper's non-overlapping comparison, same shapes) and `dropout` (0.5, in the
classifier; the paper's Sec. 4.2 ablation switches it off).
"""

from __future__ import annotations

import jax
from flax import linen as nn

from cnn_jax.models.layers import (
    DOWNSAMPLE_KINDS,
    STRIDED_CONV,
    AdaptiveAvgPool,
    ConvUnit,
    Downsample,
    Dropout,
    Flatten,
    MLPHead,
)
from cnn_jax.models.spec import ModelSpec

PAPER_WIDTHS = (96, 256, 384, 384, 256)
TORCHVISION_WIDTHS = (64, 192, 384, 256, 256)
DOWNSAMPLES = tuple(kind for kind in DOWNSAMPLE_KINDS if kind != STRIDED_CONV)  # see the module docstring


class AlexNetFeatures(nn.Module):
    """Conv 11x11/4 > pool > conv 5x5 > pool > three 3x3 convs > pool, ReLU after every conv."""

    widths: tuple[int, int, int, int, int]
    conv1_padding: str | int
    downsample: str = "max"
    pool_window: int = 3

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        width1, width2, *widths345 = self.widths
        pool = dict(window=self.pool_window, stride=2)
        x = ConvUnit(width1, kernel=11, stride=4, padding=self.conv1_padding, name="conv1")(x)
        x = Downsample(self.downsample, **pool, name="pool1")(x, train)
        x = ConvUnit(width2, kernel=5, padding=2, name="conv2")(x)
        x = Downsample(self.downsample, **pool, name="pool2")(x, train)
        for i, width in enumerate(widths345, start=3):
            x = ConvUnit(width, kernel=3, padding=1, name=f"conv{i}")(x)
        return Downsample(self.downsample, **pool, name="pool5")(x, train)


class AlexNet(nn.Module):
    """The paper's AlexNet on one GPU: features, flatten, fc 4096 > fc 4096 (ReLU, dropout 0.5) > classes."""

    num_classes: int = 1000
    downsample: str = "max"
    pool_window: int = 3
    dropout: float = 0.5
    CHOICES = {"downsample": DOWNSAMPLES}

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = AlexNetFeatures(
            PAPER_WIDTHS,
            conv1_padding="VALID",
            downsample=self.downsample,
            pool_window=self.pool_window,
            name="features",
        )(x, train)
        x = Flatten(name="flatten")(x)
        return MLPHead((4096, 4096), num_classes=self.num_classes, dropout=self.dropout, name="classifier")(x, train)


class AlexNetTorchvision(nn.Module):
    """torchvision's AlexNet: features, adaptive average pool to 6x6, then
    dropout > fc 4096 > ReLU > dropout > fc 4096 > ReLU > fc classes."""

    num_classes: int = 1000
    downsample: str = "max"
    pool_window: int = 3
    dropout: float = 0.5
    CHOICES = {"downsample": DOWNSAMPLES}

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = AlexNetFeatures(
            TORCHVISION_WIDTHS,
            conv1_padding=2,
            downsample=self.downsample,
            pool_window=self.pool_window,
            name="features",
        )(x, train)
        x = Flatten(name="flatten")(AdaptiveAvgPool(6, name="avgpool")(x))
        x = nn.relu(nn.Dense(4096, name="fc6")(Dropout(self.dropout, name="dropout6")(x, train)))
        x = nn.relu(nn.Dense(4096, name="fc7")(Dropout(self.dropout, name="dropout7")(x, train)))
        return nn.Dense(self.num_classes, name="fc8")(x)


MODELS = {
    "alexnet": ModelSpec(
        AlexNet,
        "AlexNet of Krizhevsky et al. 2012 on one GPU, 227x227 input, no LRN; 62,378,344 params for 1000 classes",
        input_shape=(227, 227, 3),
        num_classes=1000,
    ),
    "alexnet_torchvision": ModelSpec(
        AlexNetTorchvision,
        "torchvision's AlexNet (64-192-384-256-256, adaptive 6x6 pooling); 61,100,840 params for 1000 classes",
        input_shape=(224, 224, 3),
        num_classes=1000,
    ),
}
