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

Switches: `downsample` replaces the five 2x2/2 max-pools (its kinds: `layers.Downsample`;
'strided_conv' gives each stage's last conv stride 2); `kernel_scheme="5x5"` is the ablation of
the paper's Sec. 4.1 (net B against the same net with each pair of 3x3 convs replaced by one 5x5
conv, the same receptive field): in a stage of an odd number of convs the unpaired 3x3 stays;
`batch_norm` and `dropout` (of the ImageNet head; 0 in the CIFAR head, where it acts before the fc).
"""

from __future__ import annotations

from functools import partial

import jax
from flax import linen as nn

from cnn_jax.models.layers import (
    BATCH_NORM,
    STRIDED_CONV,
    AdaptiveAvgPool,
    ConvUnit,
    Downsample,
    Dropout,
    Flatten,
    MLPHead,
    ModuleDef,
    strided_padding,
)
from cnn_jax.models.spec import ModelSpec

STAGE_WIDTHS = (64, 128, 256, 512, 512)
STAGE_CONVS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
PAPER_CONFIG = {11: "A", 13: "B", 16: "D", 19: "E"}
SCHEME_KERNELS = {"3x3": lambda convs: (3,) * convs, "5x5": lambda convs: (5,) * (convs // 2) + (3,) * (convs % 2)}


class VGGStage(nn.Module):
    """A conv unit per kernel in `kernels` (SAME padding), then the downsampling switch, whose
    'stride' kind is one more `downsample_conv`; 'strided_conv' instead gives the last conv stride 2
    and `layers.strided_padding`, so the output has the 2x2/2 pool's size."""

    features: int
    kernels: tuple[int, ...]
    downsample: str = "max"
    conv: ModuleDef = ConvUnit
    downsample_conv: ModuleDef = ConvUnit

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        strided = self.downsample == STRIDED_CONV
        for i, kernel in enumerate(self.kernels):
            if strided and i == len(self.kernels) - 1:
                x = self.conv(self.features, kernel=kernel, stride=2, padding=strided_padding("SAME", kernel))(x, train)
            else:
                x = self.conv(self.features, kernel=kernel)(x, train)
        if strided:
            return x
        return Downsample(self.downsample, window=2, stride=2, conv=self.downsample_conv)(x, train)


class VGG(nn.Module):
    """Five stages of convs (64-128-256-512-512 channels, `stage_convs` 3x3 convs each), then the
    ImageNet or the CIFAR head. Every conv keeps its bias, also before batch norm (torchvision)."""

    stage_convs: tuple[int, ...]
    num_classes: int = 1000
    cifar_head: bool = False
    batch_norm: bool = False
    downsample: str = "max"
    kernel_scheme: str = "3x3"
    dropout: float = 0.5
    CHOICES = {"kernel_scheme": tuple(SCHEME_KERNELS)}

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm = BATCH_NORM if self.batch_norm else None
        for i, (width, convs) in enumerate(zip(STAGE_WIDTHS, self.stage_convs), start=1):
            x = VGGStage(
                width,
                kernels=SCHEME_KERNELS[self.kernel_scheme](convs),
                downsample=self.downsample,
                conv=partial(ConvUnit, norm=norm, use_bias=True),
                downsample_conv=partial(ConvUnit, norm=norm),
                name=f"stage{i}",
            )(x, train)
        if self.cifar_head:
            x = Dropout(self.dropout, name="dropout")(Flatten(name="flatten")(x), train)
            return nn.Dense(self.num_classes, name="classifier")(x)
        x = Flatten(name="flatten")(AdaptiveAvgPool(7, name="avgpool")(x))
        return MLPHead((4096, 4096), num_classes=self.num_classes, dropout=self.dropout, name="classifier")(x, train)


def feature_params(depth: int, batch_norm: bool) -> int:
    """Parameters of the five stages: 3x3 conv weights and bias, plus batch-norm scale and bias."""
    widths = [width for width, convs in zip(STAGE_WIDTHS, STAGE_CONVS[depth]) for _ in range(convs)]
    per_channel = 3 if batch_norm else 1
    return sum(9 * c_in * c_out + per_channel * c_out for c_in, c_out in zip([3, *widths], widths))


def _variants() -> dict[str, ModelSpec]:
    imagenet_head = (512 * 7 * 7 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 1000
    cifar_head = (512 + 1) * 10
    models = {}
    for depth, config in PAPER_CONFIG.items():
        for batch_norm in (False, True):
            name = f"vgg{depth}" + ("_bn" if batch_norm else "")
            title = (
                f"VGG-{depth}{' with batch norm' if batch_norm else ''} (Simonyan & Zisserman 2015, config {config})"
            )
            features = feature_params(depth, batch_norm)
            variant = partial(VGG, stage_convs=STAGE_CONVS[depth], batch_norm=batch_norm)
            models[name] = ModelSpec(
                variant,
                f"{title} as torchvision.models.{name}; {features + imagenet_head:,} params for 1000 classes",
                input_shape=(224, 224, 3),
                num_classes=1000,
            )
            models[f"{name}_cifar"] = ModelSpec(
                partial(variant, cifar_head=True, dropout=0.0),
                f"{title} with kuangliu/pytorch-cifar's head (1x1x512 > fc); {features + cifar_head:,} params for "
                "10 classes",
                input_shape=(32, 32, 3),
                num_classes=10,
            )
    return models


MODELS = _variants()
