"""VGG-11/13/16/19 (Simonyan & Zisserman 2015, "Very deep convolutional networks for large-scale image
recognition", Table 1, configurations A, B, D, E), with and without batch norm, and two heads.

ImageNet head (`vgg16`, `vgg16_bn`, ...): as torchvision.models.vgg*: adaptive average pooling to 7x7
(exact torchvision windows; on 224x224 inputs the map is already 7x7), flatten 25,088 > fc 4096 >
fc 4096 (ReLU, dropout 0.5 after each) > classes. As in torchvision every conv keeps its bias, also
before batch norm, so the counts equal torchvision's (vgg16 138,357,544, vgg16_bn 138,365,992 for
1000 classes); the batch-norm running statistics are non-trainable state.

CIFAR head (`vgg16_cifar`, `vgg16_bn_cifar`, ...): as kuangliu/pytorch-cifar models/vgg.py: the
same features on 32x32 inputs give a 1x1x512 map, flattened into one fc 512 > classes (its final
1x1/1 average pool is the identity and is left out). kuangliu's VGG always uses batch norm, so the
_bn_cifar models are its exact counterparts: `feature_params` + 513 x classes, e.g. vgg16_bn_cifar
14,714,688 + 8,448 + 5,130 = 14,728,266 for 10 classes.

All honour `model.downsample` ('default' = max): it replaces the five 2x2/2 max-pools.
"""

from __future__ import annotations

from functools import partial

import jax
import ml_collections
from flax import linen as nn

from cnn_jax.layers import AdaptiveAvgPool, ConvUnit, Downsample, Flatten, MLPHead
from cnn_jax.models import register

STAGE_WIDTHS = (64, 128, 256, 512, 512)
STAGE_CONVS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
PAPER_CONFIG = {11: "A", 13: "B", 16: "D", 19: "E"}


class VGGStage(nn.Module):
    """`num_convs` 3x3 convs with bias (also before batch norm, as torchvision), then the downsampling switch."""

    features: int
    num_convs: int
    downsample: str = "max"
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for _ in range(self.num_convs):
            x = ConvUnit(self.features, 3, batch_norm=self.batch_norm, use_bias=True)(x, train)
        return Downsample(self.downsample, 2, 2, batch_norm=self.batch_norm)(x, train)


class VGG(nn.Module):
    """Five stages of 3x3 convs (64-128-256-512-512 channels), then the ImageNet or the CIFAR head."""

    stage_convs: tuple[int, ...]
    num_classes: int = 1000
    cifar_head: bool = False
    batch_norm: bool = False
    downsample: str = "max"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i, (width, convs) in enumerate(zip(STAGE_WIDTHS, self.stage_convs), start=1):
            x = VGGStage(width, convs, self.downsample, self.batch_norm, name=f"stage{i}")(x, train)
        if self.cifar_head:
            return nn.Dense(self.num_classes, name="classifier")(Flatten(name="flatten")(x))
        x = Flatten(name="flatten")(AdaptiveAvgPool(7, name="avgpool")(x))
        return MLPHead((4096, 4096), self.num_classes, dropout=0.5, name="classifier")(x, train)


def vgg(options: ml_collections.ConfigDict, *, num_classes: int, input_shape: tuple[int, int, int],
        depth: int, batch_norm: bool, cifar_head: bool) -> nn.Module:
    """The factory of every VGG name; `depth`, `batch_norm` and `cifar_head` are bound at registration."""
    del input_shape  # adaptive pooling (ImageNet head) or flatten (CIFAR head) fits any size
    downsample = "max" if options.downsample == "default" else options.downsample
    return VGG(STAGE_CONVS[depth], num_classes, cifar_head, batch_norm, downsample)


def feature_params(depth: int, batch_norm: bool) -> int:
    """Parameters of the five stages: 3x3 conv weights and bias, plus batch-norm scale and bias."""
    widths = [width for width, convs in zip(STAGE_WIDTHS, STAGE_CONVS[depth]) for _ in range(convs)]
    per_channel = 3 if batch_norm else 1
    return sum(9 * c_in * c_out + per_channel * c_out for c_in, c_out in zip([3, *widths], widths))


def _register_all() -> None:
    imagenet_head = (512 * 7 * 7 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 1000
    cifar_head = (512 + 1) * 10
    for depth, config in PAPER_CONFIG.items():
        for batch_norm in (False, True):
            name = f"vgg{depth}" + ("_bn" if batch_norm else "")
            title = f"VGG-{depth}{' with batch norm' if batch_norm else ''} (Simonyan & Zisserman 2015, config {config})"
            features = feature_params(depth, batch_norm)
            register(name, f"{title} as torchvision.models.{name}; {features + imagenet_head:,} params for 1000 classes",
                     uses=("downsample",))(partial(vgg, depth=depth, batch_norm=batch_norm, cifar_head=False))
            register(f"{name}_cifar", f"{title} with kuangliu/pytorch-cifar's head (1x1x512 > fc); "
                                      f"{features + cifar_head:,} params for 10 classes",
                     uses=("downsample",))(partial(vgg, depth=depth, batch_norm=batch_norm, cifar_head=True))


_register_all()
