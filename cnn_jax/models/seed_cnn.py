"""`seed_cnn`: the Keras example of seed 002 (Fashion-MNIST, 372,234 parameters)."""

from __future__ import annotations

import jax
from flax import linen as nn

from cnn_jax.models.layers import STRIDED_CONV, ConvUnit, Downsample, GlobalAvgPool, strided_padding
from cnn_jax.models.spec import ModelSpec


class SeedCNN(nn.Module):
    """Conv64-3x3 > MaxPool2 > Conv128-3x3 > MaxPool2 > Conv256-3x3 > GAP > Dense, all convs VALID + ReLU;
    `downsample` replaces the two max-pools (kinds: `layers.Downsample`); 'strided_conv' gives conv1
    and conv2 stride 2 and crops a row and column (`layers.strided_padding`), the pools' output sizes."""

    num_classes: int = 10
    downsample: str = "max"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i, features in enumerate((64, 128), start=1):
            if self.downsample == STRIDED_CONV:
                x = ConvUnit(features, kernel=3, stride=2, padding=strided_padding("VALID", 3), name=f"conv{i}")(x)
            else:
                x = ConvUnit(features, kernel=3, padding="VALID", name=f"conv{i}")(x)
                x = Downsample(self.downsample, name=f"pool{i}")(x, train)
        x = ConvUnit(256, kernel=3, padding="VALID", name="conv3")(x)
        x = GlobalAvgPool(name="gap")(x)
        return nn.Dense(self.num_classes, name="dense")(x)


MODELS = {
    "seed_cnn": ModelSpec(
        SeedCNN,
        "seed 002's Keras CNN: 3 VALID 3x3 convs (64-128-256), 2 pools, GAP, dense; 372,234 params",
        input_shape=(28, 28, 1),
        num_classes=10,
    ),
}
