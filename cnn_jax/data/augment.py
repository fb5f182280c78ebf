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


def _cast_like(values: jax.Array, dtype) -> jax.Array:
    """Float results back to the input dtype: integer images rounded to nearest and clipped to their range."""
    if jnp.issubdtype(dtype, jnp.integer):
        info = jnp.iinfo(dtype)
        values = jnp.clip(jnp.round(values), info.min, info.max)
    return values.astype(dtype)


def rotate(image: jax.Array, degrees: jax.Array | float) -> jax.Array:
    """Rotate one HWC image about its centre, positive = counter-clockwise (as np.rot90), bilinear.

    Source positions outside the image are filled by reflection about the edge, (d c b a | a b c d), as
    Keras' RandomRotation default fill_mode='reflect'; the result has the input's shape and dtype.
    """
    h, w, _ = image.shape
    theta = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    y, x = rows - cy, cols - cx
    # each output pixel reads the source at its position rotated back by -theta (rows point down)
    source = [cy + x * sin + y * cos, cx + x * cos - y * sin]

    def sample(channel):
        return jax.scipy.ndimage.map_coordinates(channel, source, order=1, mode="reflect")

    values = jax.vmap(sample, in_axes=2, out_axes=2)(image.astype(jnp.float32))
    return _cast_like(values, image.dtype)


def random_rotation(images: jax.Array, key: jax.Array, max_degrees: float) -> jax.Array:
    """Rotate each NHWC image by its own angle drawn uniformly in [-max_degrees, max_degrees] (see `rotate`)."""
    if max_degrees == 0:
        return images
    angles = jax.random.uniform(key, (images.shape[0],), minval=-max_degrees, maxval=max_degrees)
    return jax.vmap(rotate)(images, angles)


def random_greyscale(images: jax.Array, key: jax.Array, probability: float) -> jax.Array:
    """Replace each RGB image, with the given probability, by its BT.601 luminance on all 3 channels.

    Luminance 0.299 R + 0.587 G + 0.114 B as torchvision's RandomGrayscale, rounded for integer images;
    images that do not have 3 channels are returned unchanged.
    """
    if probability == 0 or images.shape[-1] != 3:
        return images
    weights = jnp.array([0.299, 0.587, 0.114], jnp.float32)
    luminance = _cast_like(images.astype(jnp.float32) @ weights, images.dtype)[..., None]
    grey = jax.random.bernoulli(key, probability, (images.shape[0], 1, 1, 1))
    return jnp.where(grey, jnp.broadcast_to(luminance, images.shape), images)


def augment(
    images: jax.Array,
    key: jax.Array,
    *,
    crop_padding: int,
    translate: int,
    horizontal_flip: bool,
    rotation: float = 0.0,
    greyscale: float = 0.0,
) -> jax.Array:
    """The configured train-time augmentations, each with its own key; identity when all are off.

    Applied in the order crop, shift, rotation, flip, greyscale. The rotation and greyscale keys are folded
    out of `key` rather than split with the others, so runs without them compute bitwise what they did before.
    """
    crop_key, shift_key, flip_key = jax.random.split(key, 3)
    images = random_shift(images, crop_key, crop_padding, "constant")
    images = random_shift(images, shift_key, translate, "reflect")
    images = random_rotation(images, jax.random.fold_in(key, 1001), rotation)
    if horizontal_flip:
        images = random_horizontal_flip(images, flip_key)
    return random_greyscale(images, jax.random.fold_in(key, 1002), greyscale)
