"""Normalization and augmentation as pure jnp functions of (images, key), run inside jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def normalize(images_u8: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """uint8 NHWC -> float32, per-channel standardized."""
    return (images_u8.astype(jnp.float32) / 255.0 - mean) / std


def random_shift(images: jax.Array, key: jax.Array, max_shift: int, pad_mode: str) -> jax.Array:
    """Shift each image by an independent offset in [-max_shift, max_shift] along H and W.

    pad_mode 'constant' is the zero-padded random crop of He et al. 2015; 'reflect' fills
    like Keras' RandomTranslation.
    """
    if max_shift == 0:
        return images
    n, h, w, _ = images.shape
    p = max_shift
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode=pad_mode)
    offsets = jax.random.randint(key, (n, 2), 0, 2 * p + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


def random_horizontal_flip(images: jax.Array, key: jax.Array) -> jax.Array:
    """Mirror each image left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1, :], images)


def augment(
    images: jax.Array, key: jax.Array, *, crop_padding: int, translate: int, horizontal_flip: bool
) -> jax.Array:
    """The configured train-time augmentations, each with its own key; identity when all are off."""
    crop_key, shift_key, flip_key = jax.random.split(key, 3)
    images = random_shift(images, crop_key, crop_padding, "constant")
    images = random_shift(images, shift_key, translate, "reflect")
    if horizontal_flip:
        images = random_horizontal_flip(images, flip_key)
    return images
