"""The All-CNN family of Springenberg et al. 2014, "Striving for Simplicity: The All Convolutional Net"
(arXiv:1412.6806), Tables 1 and 2: Model C and its three variants for CIFAR-10.

Padding. The paper gives no padding, only the 6x6 map that the global average pools over; on a
32x32 input that fixes: every 3x3 conv before the last one zero-pads 1 pixel each side, each
downsampling halves 32 -> 16 -> 8, and the last 3x3 conv is unpadded (VALID, 8 -> 6). So the 3x3/2
max-pools pad too: 'SAME', one row and column at the bottom and right (the windows of Caffe's
ceil-mode pooling); stride-2 convs pad 1 each side ('SAME' would pad only bottom and right: same
shapes and counts, windows shifted by a pixel). 1x1 convs are unpadded.

Dropout as in the paper's experimental setup: 20% on the input image, 50% after each pooling layer or the
layer replacing it. The switch `dropout` replaces the 50% rate (0 switches it off); the input rate stays 20%.
`width_multiplier` scales every hidden conv's channels (rounded), for CPU-sized runs of the same shape.
The paper's table puts a ReLU after every conv, the class-score 1x1 conv included; so do we.
"""

from __future__ import annotations

import itertools
from functools import partial

import jax
from flax import linen as nn

from cnn_jax.models.layers import ConvUnit, Dropout, GlobalAvgPool, Pool
from cnn_jax.models.spec import ModelSpec

VARIANTS = ("model_c", "strided", "convpool", "all")
INPUT_DROPOUT, DOWNSAMPLE_DROPOUT = 0.2, 0.5


class AllCNN(nn.Module):
    """Two stages (96, 192 channels) of padded 3x3 convs, each ending in a downsampling; then
    conv3x3 192 VALID, conv1x1 192, conv1x1 classes, global average.

    Variants: 'model_c' (max-pool 3x3/2), 'strided' (no pool: the stage's last conv has stride 2),
    'convpool' (an extra 3x3 conv before each pool), 'all' (each pool becomes a 3x3 conv, stride 2).
    """

    variant: str = "all"
    num_classes: int = 10
    dropout: float = DOWNSAMPLE_DROPOUT
    width_multiplier: float = 1.0  # < 1: a narrower net of the same shape, for CPU-sized runs
    CHOICES = {"variant": VARIANTS}

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown All-CNN variant {self.variant!r}; allowed: {VARIANTS}")
        x = Dropout(INPUT_DROPOUT, name="input_dropout")(x, train)
        names = (f"conv{i}" for i in itertools.count(1))

        def conv(x, features, kernel=3, stride=1, padding=1):
            return ConvUnit(features, kernel=kernel, stride=stride, padding=padding, name=next(names))(x, train)

        wide = max(1, round(192 * self.width_multiplier))
        for stage, width in enumerate((max(1, round(96 * self.width_multiplier)), wide), start=1):
            x = conv(x, features=width)
            x = conv(x, features=width, stride=2 if self.variant == "strided" else 1)
            if self.variant == "convpool":
                x = conv(x, features=width)
            if self.variant in ("model_c", "convpool"):
                x = Pool("max", window=3, stride=2, padding="SAME", name=f"pool{stage}")(x)
            if self.variant == "all":
                x = conv(x, features=width, stride=2)
            x = Dropout(self.dropout, name=f"dropout{stage}")(x, train)
        x = conv(x, features=wide, padding="VALID")
        x = conv(x, features=wide, kernel=1, padding=0)
        x = conv(x, features=self.num_classes, kernel=1, padding=0)
        return GlobalAvgPool(name="gap")(x)


# name -> (variant, description). Exact counts for 10 classes; the paper's Table 3 rounds them to
# ~1.3M (Model C, Strided-CNN-C) and ~1.4M (ConvPool-CNN-C, All-CNN-C). Model C's 954,730 is nearer 1.0M;
# the layers of Tables 1 and 2, which fix every count, are what we follow.
PAPER_MODELS = {
    "allcnn_model_c": (
        "model_c",
        "All-CNN paper's Model C: 3x3 convs 96-96, max-pool 3x3/2, 192-192, max-pool, "
        "192 VALID, 1x1 192, 1x1 classes, GAP; 954,730 params",
    ),
    "allcnn_strided_c": (
        "strided",
        "Strided-CNN-C: Model C without pooling, the conv before each pool has stride 2; 954,730 params",
    ),
    "allcnn_convpool_c": (
        "convpool",
        "ConvPool-CNN-C: Model C with an extra 3x3 conv before each pooling; 1,369,738 params",
    ),
    "allcnn_all_c": (
        "all",
        "All-CNN-C (Springenberg et al. 2014): each pooling of Model C replaced by a 3x3 "
        "stride-2 conv; 1,369,738 params",
    ),
}
MODELS = {
    name: ModelSpec(partial(AllCNN, variant=variant), description, input_shape=(32, 32, 3), num_classes=10)
    for name, (variant, description) in PAPER_MODELS.items()
}
