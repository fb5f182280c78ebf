"""`seed_cnn`: the Keras example of seed 002 (Fashion-MNIST, 372,234 parameters)."""

from __future__ import annotations

import jax
from flax import linen as nn

from cnn_jax.layers import global_avg_pool, max_pool
from cnn_jax.models import register


class SeedCNN(nn.Module):
    """Conv64-3x3 > MaxPool2 > Conv128-3x3 > MaxPool2 > Conv256-3x3 > GAP > Dense, all convs VALID + ReLU."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.relu(nn.Conv(64, (3, 3), padding="VALID")(x))
        x = max_pool(x, 2)
        x = nn.relu(nn.Conv(128, (3, 3), padding="VALID")(x))
        x = max_pool(x, 2)
        x = nn.relu(nn.Conv(256, (3, 3), padding="VALID")(x))
        return nn.Dense(self.num_classes)(global_avg_pool(x))


@register("seed_cnn")
def seed_cnn(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    del input_shape  # fully convolutional up to the global pooling
    return SeedCNN(num_classes=num_classes)
