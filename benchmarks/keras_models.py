"""The benchmark's models in Keras 3 (functional API, NHWC), layer for layer as cnn_jax builds them.

Set KERAS_BACKEND before importing this module. Each model takes uint8 images and starts with a
weightless `Rescaling` that standardizes them, (x / 255 - mean) / std, as cnn_jax's step does.
Convs padded by 1 pixel use padding="same" at stride 1 (identical) and `ZeroPadding2D(1)` + VALID
at stride 2 (Keras' "same" would pad only bottom/right there). Initialization as flax's: LecunNormal
(truncated, fan-in) for convs and dense layers, zero biases, He normal with fan-out for the ResNet's convs;
batch norm momentum 0.9, eps 1e-5.
"""

from __future__ import annotations

import keras
from keras import layers

HE_NORMAL_FAN_OUT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}


def conv(
    x,
    features: int,
    kernel: int,
    stride: int = 1,
    padding: int = 0,
    *,
    activation: str | None = "relu",
    use_bias: bool = True,
    kernel_init="lecun_normal",
):
    """A conv with cnn_jax's integer padding (zeros on each side), then `activation`."""
    mode = "valid"
    if padding and stride == 1 and 2 * padding == kernel - 1:
        mode = "same"
    elif padding:
        x = layers.ZeroPadding2D(padding)(x)
    return layers.Conv2D(
        features,
        kernel,
        stride,
        mode,
        activation=activation,
        use_bias=use_bias,
        kernel_initializer=keras.initializers.get(kernel_init),
        bias_initializer="zeros",
    )(x)


def standardized_input(input_shape, mean, std):
    """(keras.Input of uint8 images, the images standardized per channel as float32)."""
    images = keras.Input(input_shape, dtype="uint8")
    scale = [1.0 / (255.0 * float(s)) for s in std]
    offset = [-float(m) / float(s) for m, s in zip(mean, std)]
    return images, layers.Rescaling(scale, offset)(images)


def seed_cnn(x, num_classes: int):
    """Conv64 > MaxPool2 > Conv128 > MaxPool2 > Conv256 (3x3, VALID, ReLU) > GAP > Dense."""
    x = layers.MaxPooling2D(2)(conv(x, 64, 3))
    x = layers.MaxPooling2D(2)(conv(x, 128, 3))
    x = layers.GlobalAveragePooling2D()(conv(x, 256, 3))
    return layers.Dense(num_classes, kernel_initializer="lecun_normal")(x)


class ZeroPadShortcut(layers.Layer):
    """ResNet option A shortcut: subsample by `stride`, append `extra` zero channels; no weights."""

    def __init__(self, stride: int, extra: int, **kwargs):
        super().__init__(**kwargs)
        self.stride, self.extra = stride, extra

    def call(self, x):
        x = x[:, :: self.stride, :: self.stride, :]
        return keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.extra]])


def batch_norm(x):
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)


def basic_block(x, features: int, stride: int):
    """conv3x3 (stride) > BN > ReLU > conv3x3 > BN, plus the shortcut, ReLU."""
    he = HE_NORMAL_FAN_OUT
    y = layers.ReLU()(batch_norm(conv(x, features, 3, stride, 1, activation=None, use_bias=False, kernel_init=he)))
    y = batch_norm(conv(y, features, 3, 1, 1, activation=None, use_bias=False, kernel_init=he))
    if stride > 1 or x.shape[-1] != features:
        x = ZeroPadShortcut(stride, features - x.shape[-1])(x)
    return layers.ReLU()(layers.Add()([y, x]))


def cifar_resnet(x, num_classes: int, blocks_per_stage: int = 3):
    """Conv16 + BN + ReLU, stages of basic blocks (16, 32, 64 channels), GAP, fc."""
    x = conv(x, 16, 3, 1, 1, activation=None, use_bias=False, kernel_init=HE_NORMAL_FAN_OUT)
    x = layers.ReLU()(batch_norm(x))
    for i, width in enumerate((16, 32, 64)):
        for b in range(blocks_per_stage):
            x = basic_block(x, width, 2 if (i > 0 and b == 0) else 1)
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dense(num_classes, kernel_initializer="lecun_normal")(x)


def allcnn_all_c(x, num_classes: int):
    """All-CNN-C: dropout 0.2 on the input; 96-96-96/2, dropout 0.5; 192-192-192/2, dropout 0.5;
    conv3x3 192 VALID, 1x1 192, 1x1 classes (ReLU after every conv), GAP."""
    x = layers.Dropout(0.2)(x)
    for width in (96, 192):
        x = conv(conv(x, width, 3, 1, 1), width, 3, 1, 1)
        x = layers.Dropout(0.5)(conv(x, width, 3, 2, 1))
    x = conv(conv(conv(x, 192, 3), 192, 1), num_classes, 1)
    return layers.GlobalAveragePooling2D()(x)


def bottleneck(x, width: int, stride: int):
    """ResNet v1.5 bottleneck: 1x1 > 3x3 (stride) > 1x1 (4 x width), BN after each, ReLU after the first two and
    after the sum; a 1x1 projection (stride) + BN shortcut where the shape changes."""
    he, out = HE_NORMAL_FAN_OUT, 4 * width
    y = layers.ReLU()(batch_norm(conv(x, width, 1, activation=None, use_bias=False, kernel_init=he)))
    y = layers.ReLU()(batch_norm(conv(y, width, 3, stride, 1, activation=None, use_bias=False, kernel_init=he)))
    y = batch_norm(conv(y, out, 1, activation=None, use_bias=False, kernel_init=he))
    if stride > 1 or x.shape[-1] != out:
        x = batch_norm(conv(x, out, 1, stride, activation=None, use_bias=False, kernel_init=he))
    return layers.ReLU()(layers.Add()([y, x]))


def resnet50(x, num_classes: int, stage_sizes=(3, 4, 6, 3)):
    """Conv 7x7/2 64 + BN + ReLU, max-pool 3x3/2 (zero padding 1: the inputs are >= 0 after the ReLU, so
    it equals padding with -inf), bottleneck stages of 64, 128, 256, 512, GAP, fc."""
    x = conv(x, 64, 7, 2, 3, activation=None, use_bias=False, kernel_init=HE_NORMAL_FAN_OUT)
    x = layers.MaxPooling2D(3, 2)(layers.ZeroPadding2D(1)(layers.ReLU()(batch_norm(x))))
    for i, (size, width) in enumerate(zip(stage_sizes, (64, 128, 256, 512))):
        for b in range(size):
            x = bottleneck(x, width, 2 if (i > 0 and b == 0) else 1)
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dense(num_classes, kernel_initializer="lecun_normal")(x)


BUILDERS = {"seed_cnn": seed_cnn, "resnet20": cifar_resnet, "allcnn_all_c": allcnn_all_c, "resnet50": resnet50}


def build(name: str, input_shape, num_classes: int, mean, std) -> keras.Model:
    """The Keras twin of the cnn_jax model `name`, taking uint8 images."""
    images, x = standardized_input(input_shape, mean, std)
    return keras.Model(images, BUILDERS[name](x, num_classes), name=name)


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """Trainable weights and non-trainable ones (batch-norm moving statistics)."""

    def count(weights):
        return sum(int(w.numpy().size) for w in weights)

    return {"trainable": count(model.trainable_weights), "non_trainable": count(model.non_trainable_weights)}
