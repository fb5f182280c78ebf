"""`ablation_net`: a VGG-style network whose whole shape is config, for the course's ablations
(max vs avg vs stride-2 downsampling; 5x5 vs 3x3x2 and 7x7 vs 3x3x3 kernels; GAP vs MLP head)."""

from __future__ import annotations

import jax
import ml_collections
from flax import linen as nn

from cnn_jax.blocks import VGGBlock
from cnn_jax.errors import UserError
from cnn_jax.layers import Dropout, Flatten, GlobalAvgPool, MLPHead
from cnn_jax.models import register

MLP_HIDDEN = 256


class AblationNet(nn.Module):
    """`stages` VGG blocks (stage i: `width * 2**i` channels, `convs_per_stage` kernel-scheme units,
    SAME padding, then the downsampling switch), then a 'gap' head (global average -> dropout -> Dense)
    or an 'mlp' head (flatten -> Dense 256 -> ReLU -> dropout -> Dense)."""

    num_classes: int = 10
    stages: int = 3
    convs_per_stage: int = 1
    width: int = 32
    scheme: str = "3x3"
    downsample: str = "max"
    pool_window: int = 2
    batch_norm: bool = False
    head: str = "gap"
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i in range(self.stages):
            x = VGGBlock(self.width * 2**i, self.convs_per_stage, self.scheme, self.downsample, self.pool_window,
                         self.batch_norm, name=f"stage{i + 1}")(x, train)
        if self.head == "mlp":
            x = Flatten(name="flatten")(x)
            return MLPHead((MLP_HIDDEN,), self.num_classes, self.dropout, name="mlp")(x, train)
        x = Dropout(self.dropout, name="dropout")(GlobalAvgPool(name="gap")(x), train)
        return nn.Dense(self.num_classes, name="classifier")(x)


@register("ablation_net", "VGG-style net shaped by config: stages x convs_per_stage kernel-scheme units, width doubling "
          "per stage, downsampling switch, GAP or MLP head",
          uses=("downsample", "kernel_scheme", "pool_window", "batch_norm", "dropout", "stages", "convs_per_stage",
                "width", "head"))
def ablation_net(options: ml_collections.ConfigDict, *, num_classes: int,
                 input_shape: tuple[int, int, int]) -> nn.Module:
    del input_shape  # the summary's trace checks that the stages fit the input
    downsample = "max" if options.downsample == "default" else options.downsample
    if options.pool_window and downsample not in ("max", "avg"):
        raise UserError(f"config field 'model.pool_window' = {options.pool_window} needs pooling, but "
                        f"model.downsample = '{downsample}'; leave pool_window at 0 or use max/avg.")
    return AblationNet(num_classes=num_classes, stages=options.stages, convs_per_stage=options.convs_per_stage,
                       width=options.width,
                       scheme="3x3" if options.kernel_scheme == "default" else options.kernel_scheme,
                       downsample=downsample, pool_window=options.pool_window or 2, batch_norm=options.batch_norm,
                       head=options.head, dropout=max(options.dropout, 0.0))
