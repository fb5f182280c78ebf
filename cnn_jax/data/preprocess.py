"""The model's input from a batch of uint8 images, in jit: grey to RGB, resize, centre crop, normalize.

The dataset stays on the device at its own size; a model that wants another input (ImageNet weights at
224 x 224 on 32 x 32 CIFAR images) gets each batch resized on the fly. With no resize, crop or channel
change this is exactly `augment.normalize`, so runs that use none of it compute what they always did.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from cnn_jax.data.augment import normalize


@dataclass(frozen=True)
class InputTransform:
    """uint8 (N, H, W, C) -> float32 model input: `grey_to_rgb` repeats a single channel three times;
    `resize` > 0 resizes to resize x resize (bilinear; square images keep their aspect); `center_crop` > 0
    then keeps the central crop x crop pixels; finally (x / 255 - mean) / std per channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int = 0
    center_crop: int = 0
    grey_to_rgb: bool = False

    def __call__(self, images: jax.Array) -> jax.Array:
        if self.grey_to_rgb:
            images = jnp.repeat(images, 3, axis=-1)
        mean, std = jnp.asarray(self.mean, jnp.float32), jnp.asarray(self.std, jnp.float32)
        if not self.resize and not self.center_crop:
            return normalize(images, mean, std)
        x = images.astype(jnp.float32) / 255.0
        if self.resize:
            x = jax.image.resize(x, (x.shape[0], self.resize, self.resize, x.shape[-1]), method="bilinear")
        if self.center_crop:
            top, left = (x.shape[1] - self.center_crop) // 2, (x.shape[2] - self.center_crop) // 2
            x = x[:, top : top + self.center_crop, left : left + self.center_crop, :]
        return (x - mean) / std

    def output_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The model's input shape (H, W, C) for stored images of `image_shape`."""
        height, width, channels = image_shape
        if self.resize:
            height = width = self.resize
        if self.center_crop:
            height = width = self.center_crop
        return (height, width, 3 if self.grey_to_rgb else channels)

    def record(self) -> dict:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
            "center_crop": self.center_crop,
            "grey_to_rgb": self.grey_to_rgb,
        }
