"""`ablation_net`: a VGG-style network whose whole shape is config, for the course's ablations
(max vs avg vs L2 pooling vs stride-2 convs, with or without their own parameters; 5x5 vs 3x3x2 and
7x7 vs 3x3x3 kernels; GAP vs MLP head)."""

from __future__ import annotations

from functools import partial

import jax
from flax import linen as nn

from cnn_jax.models.blocks import VGGBlock
from cnn_jax.models.layers import ACTIVATIONS, BATCH_NORM, ConvUnit, Dropout, Flatten, GlobalAvgPool, MLPHead
from cnn_jax.models.spec import ModelSpec

MLP_HIDDEN = 256
HEADS = ("gap", "mlp")
POOLS = ("max", "avg", "l2")  # the downsample kinds that have a pooling window


class AblationNet(nn.Module):
    """`stages` VGG blocks (stage i: `width * 2**i` channels, `convs_per_stage` kernel-scheme units,
    SAME padding, then the downsampling switch, whose kinds `layers.Downsample` describes: 'max',
    'avg' and 'l2' pool `pool_window` x `pool_window` with stride 2; 'stride' adds a 3x3 stride-2
    conv per stage; 'strided_conv' gives the stage's last conv stride 2, the pools' parameters and
    output sizes; 'none'), then a 'gap' head (global average -> dropout -> Dense) or an 'mlp' head
    (flatten -> Dense 256 -> activation -> dropout -> Dense)."""

    num_classes: int = 10
    stages: int = 3
    convs_per_stage: int = 1
    width: int = 32
    kernel_scheme: str = "3x3"
    downsample: str = "max"
    pool_window: int = 2
    batch_norm: bool = False
    activation: str = "relu"
    head: str = "gap"
    dropout: float = 0.0
    CHOICES = {"head": HEADS}

    def __post_init__(self):
        if self.pool_window != 2 and self.downsample not in POOLS:
            raise ValueError(
                f"config field 'model.pool_window' = {self.pool_window} needs pooling, but "
                f"model.downsample = '{self.downsample}'; leave pool_window at 2 or use max, avg or l2."
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        conv = partial(ConvUnit, norm=BATCH_NORM if self.batch_norm else None, act=act)
        for i in range(self.stages):
            x = VGGBlock(
                self.width * 2**i,
                num_convs=self.convs_per_stage,
                scheme=self.kernel_scheme,
                downsample=self.downsample,
                pool_window=self.pool_window,
                conv=conv,
                name=f"stage{i + 1}",
            )(x, train)
        if self.head == "mlp":
            x = Flatten(name="flatten")(x)
            return MLPHead((MLP_HIDDEN,), num_classes=self.num_classes, dropout=self.dropout, act=act, name="mlp")(
                x, train
            )
        x = Dropout(self.dropout, name="dropout")(GlobalAvgPool(name="gap")(x), train)
        return nn.Dense(self.num_classes, name="classifier")(x)


MODELS = {
    "ablation_net": ModelSpec(
        AblationNet,
        "VGG-style net shaped by config: stages x convs_per_stage kernel-scheme units, width doubling "
        "per stage, downsampling switch (max|avg|l2|stride|strided_conv|none), GAP or MLP head",
        input_shape=(32, 32, 3),
        num_classes=10,
    ),
}
