"""`googlenet`: GoogLeNet (Inception v1) of Szegedy et al. 2014, "Going Deeper with Convolutions"
(arXiv:1409.4842), Table 1, as torchvision builds it (transform_input off): batch norm after every
conv, the "5x5" branches built as 3x3 (`kernel_scheme="5x5"` restores the paper's 5x5), dropout
0.2 before the classifier (`dropout`; the paper's is 0.4). 6,624,904 parameters for 1000 classes;
13,004,888 with the auxiliary heads (`aux_heads`).

Pooling. torchvision pools 3x3/2 in ceil mode; on the even maps of a 224x224 input (112, 56, 28, 14)
that is exactly 'SAME' padding, which we use on any input (on an odd map 'SAME' keeps one more row
and column than ceil mode).

Auxiliary heads (`aux_heads=True`) sit after inception 4a and 4d. They are built at init (so
their parameters exist and count) and run only in training. The model returns the main logits only;
with train=True each head's logits are sown into 'intermediates' / 'aux_logits' (aux 4a first), for a
train step that adds them to the loss with weight 0.3 each, as in the paper.
"""

from __future__ import annotations

import jax
from flax import linen as nn

from cnn_jax.models.blocks import GOOGLENET_CONV, GOOGLENET_INIT, InceptionAux, InceptionV1
from cnn_jax.models.layers import Dropout, GlobalAvgPool, Pool
from cnn_jax.models.spec import ModelSpec

# name -> (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj), Table 1 of the paper.
INCEPTIONS = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
POOL_BEFORE = {"3a": ("pool2", 3), "4a": ("pool3", 3), "5a": ("pool4", 2)}  # inception -> (pool, window), stride 2
AUX_AFTER = {"4a": "aux1", "4d": "aux2"}
BRANCH_KERNELS = {"3x3": 3, "5x5": 5}  # kernel_scheme -> kernel of the "5x5" branches


class GoogLeNet(nn.Module):
    """Stem (7x7/2 conv 64, max-pool, 1x1 conv 64, 3x3 conv 192, max-pool), inceptions 3a-3b, pool,
    4a-4e, pool, 5a-5b, global average, dropout, fc; optional auxiliary heads."""

    num_classes: int = 1000
    aux_heads: bool = False
    kernel_scheme: str = "3x3"
    dropout: float = 0.2
    CHOICES = {"kernel_scheme": tuple(BRANCH_KERNELS)}

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        def conv(features: int, kernel: int, stride: int, name: str) -> nn.Module:
            return GOOGLENET_CONV(features, kernel=kernel, stride=stride, padding=kernel // 2, name=name)

        x = conv(64, kernel=7, stride=2, name="conv1")(x, train)
        x = Pool("max", window=3, stride=2, padding="SAME", name="pool1")(x)
        x = conv(64, kernel=1, stride=1, name="conv2")(x, train)
        x = conv(192, kernel=3, stride=1, name="conv3")(x, train)
        run_aux = self.aux_heads and (train or self.is_initializing())
        for name, channels in INCEPTIONS.items():
            if name in POOL_BEFORE:
                pool_name, window = POOL_BEFORE[name]
                x = Pool("max", window=window, stride=2, padding="SAME", name=pool_name)(x)
            x = InceptionV1(*channels, ch5x5_kernel=BRANCH_KERNELS[self.kernel_scheme], name=f"inception{name}")(
                x, train
            )
            if name in AUX_AFTER and run_aux:
                aux_logits = InceptionAux(self.num_classes, name=AUX_AFTER[name])(x, train)
                self.sow("intermediates", "aux_logits", aux_logits)
        x = GlobalAvgPool(name="gap")(x)
        x = Dropout(self.dropout, name="dropout")(x, train)
        return nn.Dense(self.num_classes, kernel_init=GOOGLENET_INIT, name="fc")(x)


MODELS = {
    "googlenet": ModelSpec(
        GoogLeNet,
        "GoogLeNet / Inception v1 (Szegedy et al. 2014) as in torchvision: 9 inception "
        "modules, BN; 6,624,904 params (13,004,888 with aux heads) for 1000 classes",
        input_shape=(224, 224, 3),
        num_classes=1000,
    ),
}
