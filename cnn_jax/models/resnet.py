"""ResNet v1 (He et al. 2015, "Deep Residual Learning for Image Recognition", arXiv:1512.03385).

ImageNet ResNets `resnet18` .. `resnet152` (Table 1) as torchvision builds them: 7x7/2 conv 64 + BN
+ ReLU, 3x3/2 max-pool (1 pixel padding), four stages of basic or bottleneck blocks (64, 128, 256, 512
channels, stride 2 from stage 2 on, projection shortcuts where the shape changes), global average,
fc. Bottleneck downsamples on its 3x3 conv (torchvision's "v1.5"). `model.downsample` swaps the stem
pool: max (default) | avg (3x3/2, padded) | stride (3x3/2 conv 64 + BN + ReLU) | none.

CIFAR ResNets `resnet20` .. `resnet110` (Sec. 4.2): 3x3 conv 16 + BN + ReLU, three stages of n basic
blocks (16, 32, 64 channels; depth 6n + 2), global average, fc; option A shortcuts (zero padding),
so the model has the paper's parameter counts.

Convs start from He normal weights with fan-out (torchvision's init); batch norm eps 1e-5.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import ml_collections
from flax import linen as nn

from cnn_jax.blocks import HE_NORMAL_FAN_OUT, BasicBlock, Bottleneck
from cnn_jax.layers import ConvUnit, GlobalAvgPool, Pool
from cnn_jax.models import register

STEM_POOLS = ("max", "avg", "stride", "none")
BlockClass = type[BasicBlock] | type[Bottleneck]


class ResidualStage(nn.Module):
    """`num_blocks` residual blocks of `features` channels; the first one downsamples by `stride`."""

    block: BlockClass
    num_blocks: int
    features: int
    stride: int = 1
    shortcut: str = "projection"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i in range(self.num_blocks):
            x = self.block(self.features, self.stride if i == 0 else 1, self.shortcut, name=f"block{i + 1}")(x, train)
        return x


class ResNet(nn.Module):
    """ImageNet ResNet: stem conv and pool, four residual stages, global average, fc."""

    block: BlockClass
    stage_sizes: Sequence[int]
    num_classes: int = 1000
    stem_pool: str = "max"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = ConvUnit(64, 7, 2, 3, batch_norm=True, kernel_init=HE_NORMAL_FAN_OUT, name="stem")(x, train)
        x = self._stem_pool(x, train)
        for i, (size, width) in enumerate(zip(self.stage_sizes, (64, 128, 256, 512))):
            x = ResidualStage(self.block, size, width, 1 if i == 0 else 2, name=f"stage{i + 1}")(x, train)
        x = GlobalAvgPool(name="gap")(x)
        return nn.Dense(self.num_classes, name="fc")(x)

    def _stem_pool(self, x: jax.Array, train: bool) -> jax.Array:
        if self.stem_pool in ("max", "avg"):
            return Pool(self.stem_pool, 3, 2, 1, name="pool")(x)
        if self.stem_pool == "stride":
            return ConvUnit(64, 3, 2, 1, batch_norm=True, kernel_init=HE_NORMAL_FAN_OUT, name="pool")(x, train)
        if self.stem_pool == "none":
            return x
        raise ValueError(f"unknown stem pool {self.stem_pool!r}; allowed: {STEM_POOLS}")


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth 6n + 2: conv 16, stages of n basic blocks (16, 32, 64), global average, fc."""

    blocks_per_stage: int
    num_classes: int = 10
    shortcut: str = "zero_pad"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = ConvUnit(16, 3, 1, 1, batch_norm=True, kernel_init=HE_NORMAL_FAN_OUT, name="stem")(x, train)
        for i, width in enumerate((16, 32, 64)):
            x = ResidualStage(BasicBlock, self.blocks_per_stage, width, 1 if i == 0 else 2, self.shortcut,
                              name=f"stage{i + 1}")(x, train)
        x = GlobalAvgPool(name="gap")(x)
        return nn.Dense(self.num_classes, name="fc")(x)


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


def _imagenet_factory(block: BlockClass, stage_sizes: tuple[int, ...]):
    def build(options: ml_collections.ConfigDict, *, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
        del input_shape  # padded convs and global averaging fit any input size
        stem_pool = "max" if options.downsample == "default" else options.downsample
        return ResNet(block, stage_sizes, num_classes, stem_pool)
    return build


def _cifar_factory(blocks_per_stage: int):
    def build(options: ml_collections.ConfigDict, *, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
        del options, input_shape  # no switches; any input size
        return CifarResNet(blocks_per_stage, num_classes)
    return build


BLOCK_NAMES = {BasicBlock: "basic blocks", Bottleneck: "bottleneck blocks (stride on the 3x3, v1.5)"}
for _name, (_block, _sizes, _count) in IMAGENET.items():
    _depth = _name.removeprefix("resnet")
    register(_name, f"ResNet-{_depth} (He et al. 2015, Table 1) as in torchvision: {BLOCK_NAMES[_block]} "
                    f"{'-'.join(map(str, _sizes))}; {_count} params for 1000 classes",
             uses=("downsample",))(_imagenet_factory(_block, _sizes))
for _name, (_n, _count) in CIFAR.items():
    _depth = _name.removeprefix("resnet")
    register(_name, f"CIFAR ResNet-{_depth} (He et al. 2015, Sec. 4.2): 3 stages of {_n} basic blocks, "
                    f"16-32-64 channels, option A shortcuts; {_count} params for 10 classes")(_cifar_factory(_n))
