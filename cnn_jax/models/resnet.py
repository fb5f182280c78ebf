"""ResNet v1 (He et al. 2015, "Deep Residual Learning for Image Recognition", arXiv:1512.03385).

ImageNet ResNets `resnet18` .. `resnet152` (Table 1) as torchvision builds them: 7x7/2 conv 64 + BN
+ ReLU, 3x3/2 max-pool (1 pixel padding), four stages of basic or bottleneck blocks (64, 128, 256, 512
channels, stride 2 from stage 2 on, projection shortcuts where the shape changes), global average,
fc. Bottleneck downsamples on its 3x3 conv (torchvision's "v1.5"). The switch `downsample` swaps the
stem pool: max (default) | avg (3x3/2, padded) | stride (3x3/2 conv 64 + BN + ReLU) | none.

CIFAR ResNets `resnet20` .. `resnet110` (Sec. 4.2): 3x3 conv 16 + BN + ReLU, three stages of n basic
blocks (16, 32, 64 channels; depth 6n + 2), global average, fc; option A shortcuts (zero padding),
so the model has the paper's parameter counts; `shortcut="projection"` is the paper's option B.

Convs start from He normal weights with fan-out (torchvision's init); batch norm eps 1e-5.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
from flax import linen as nn

from cnn_jax.models.blocks import HE_NORMAL_FAN_OUT, SHORTCUTS, BasicBlock, Bottleneck
from cnn_jax.models.layers import BATCH_NORM, ConvUnit, GlobalAvgPool, ModuleDef, Pool
from cnn_jax.models.spec import ModelSpec

STEM_POOLS = ("max", "avg", "stride", "none")
STEM_CONV = partial(ConvUnit, norm=BATCH_NORM, kernel_init=HE_NORMAL_FAN_OUT)


class ResidualStage(nn.Module):
    """`num_blocks` residual `block`s of `features` channels; the first one downsamples by `stride`."""

    block: ModuleDef
    num_blocks: int
    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i in range(self.num_blocks):
            x = self.block(self.features, stride=self.stride if i == 0 else 1, name=f"block{i + 1}")(x, train)
        return x


class ResNet(nn.Module):
    """ImageNet ResNet: stem conv and pool (`downsample`), four residual stages, global average, fc."""

    block: ModuleDef
    stage_sizes: Sequence[int]
    num_classes: int = 1000
    downsample: str = "max"
    CHOICES = {"downsample": STEM_POOLS}

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = STEM_CONV(64, kernel=7, stride=2, padding=3, name="stem")(x, train)
        x = self._stem_pool(x, train)
        for i, (size, width) in enumerate(zip(self.stage_sizes, (64, 128, 256, 512))):
            x = ResidualStage(
                self.block, num_blocks=size, features=width, stride=1 if i == 0 else 2, name=f"stage{i + 1}"
            )(x, train)
        x = GlobalAvgPool(name="gap")(x)
        return nn.Dense(self.num_classes, name="fc")(x)

    def _stem_pool(self, x: jax.Array, train: bool) -> jax.Array:
        if self.downsample in ("max", "avg"):
            return Pool(self.downsample, window=3, stride=2, padding=1, name="pool")(x)
        if self.downsample == "stride":
            return STEM_CONV(64, kernel=3, stride=2, padding=1, name="pool")(x, train)
        if self.downsample == "none":
            return x
        raise ValueError(f"unknown stem pool {self.downsample!r}; allowed: {STEM_POOLS}")


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth 6n + 2: conv 16, stages of n basic blocks (16, 32, 64), global average, fc."""

    blocks_per_stage: int
    num_classes: int = 10
    shortcut: str = "zero_pad"
    CHOICES = {"shortcut": SHORTCUTS}

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = STEM_CONV(16, kernel=3, stride=1, padding=1, name="stem")(x, train)
        block = partial(BasicBlock, shortcut=self.shortcut)
        for i, width in enumerate((16, 32, 64)):
            x = ResidualStage(
                block, num_blocks=self.blocks_per_stage, features=width, stride=1 if i == 0 else 2, name=f"stage{i + 1}"
            )(x, train)
        x = GlobalAvgPool(name="gap")(x)
        return nn.Dense(self.num_classes, name="fc")(x)


BLOCK_NAMES = {BasicBlock: "basic blocks", Bottleneck: "bottleneck blocks (stride on the 3x3, v1.5)"}
# name -> (block, blocks per stage, parameters for 1000 classes), torchvision's layouts of Table 1.
IMAGENET = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), "11,689,512"),
    "resnet34": (BasicBlock, (3, 4, 6, 3), "21,797,672"),
    "resnet50": (Bottleneck, (3, 4, 6, 3), "25,557,032"),
    "resnet101": (Bottleneck, (3, 4, 23, 3), "44,549,160"),
    "resnet152": (Bottleneck, (3, 8, 36, 3), "60,192,808"),
}
# name -> (n, parameters for 10 classes); the paper's Table 6 rounds them to 0.27M .. 1.7M.
CIFAR = {
    "resnet20": (3, "269,722"),
    "resnet32": (5, "464,154"),
    "resnet44": (7, "658,586"),
    "resnet56": (9, "853,018"),
    "resnet110": (18, "1,727,962"),
}
MODELS = {
    **{
        name: ModelSpec(
            partial(ResNet, block=block, stage_sizes=sizes),
            f"ResNet-{name.removeprefix('resnet')} (He et al. 2015, Table 1) as in torchvision: "
            f"{BLOCK_NAMES[block]} {'-'.join(map(str, sizes))}; {count} params for 1000 classes",
            input_shape=(224, 224, 3),
            num_classes=1000,
        )
        for name, (block, sizes, count) in IMAGENET.items()
    },
    **{
        name: ModelSpec(
            partial(CifarResNet, blocks_per_stage=n),
            f"CIFAR ResNet-{name.removeprefix('resnet')} (He et al. 2015, Sec. 4.2): 3 stages of {n} basic "
            f"blocks, 16-32-64 channels, option A shortcuts; {count} params for 10 classes",
            input_shape=(32, 32, 3),
            num_classes=10,
        )
        for name, (n, count) in CIFAR.items()
    },
}
