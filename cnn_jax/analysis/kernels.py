"""The classic fixed kernels of seed 001 and a function that filters an image with one of them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cnn_jax.errors import unknown_choice

# Each kernel sums to 1, so flat regions keep their brightness (the slides show the integer cores).
CLASSIC_KERNELS: dict[str, np.ndarray] = {
    "box_blur": np.ones((3, 3), np.float32) / 9.0,
    "gaussian_blur": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 16.0,
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32),  # edge enhancement
}


def get_kernel(name: str) -> np.ndarray:
    if name not in CLASSIC_KERNELS:
        raise unknown_choice("kernel", name, CLASSIC_KERNELS)
    return CLASSIC_KERNELS[name]


@jax.jit
def apply_kernel(image: jax.Array, kernel: jax.Array) -> jax.Array:
    """Filter each channel of an HxWxC uint8 image (edges replicated, same size); uint8, clipped to 0..255."""
    k = kernel.shape[0] // 2
    x = jnp.pad(image.astype(jnp.float32), ((k, k), (k, k), (0, 0)), mode="edge")
    channels = image.shape[-1]
    weights = jnp.broadcast_to(kernel[:, :, None, None], (*kernel.shape, 1, channels))
    out = jax.lax.conv_general_dilated(
        x[None], weights, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels
    )
    return jnp.clip(jnp.round(out[0]), 0, 255).astype(jnp.uint8)
