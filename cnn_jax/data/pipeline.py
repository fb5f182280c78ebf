"""Device-resident splits: uint8 arrays on the accelerator, batches gathered inside jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from cnn_jax.data.arrays import Split


@struct.dataclass
class DeviceSplit:
    """A split on device; `mask` marks real examples (eval pads to whole batches)."""

    images: jax.Array  # uint8 (N, H, W, C)
    labels: jax.Array  # int32 (N,)
    mask: jax.Array  # bool (N,)
    size: int = struct.field(pytree_node=False)  # real examples

    def num_batches(self, batch_size: int) -> int:
        return len(self.labels) // batch_size


def to_device(split: Split, pad_to_multiple: int = 1) -> DeviceSplit:
    """Copy a split to the default device, zero-padding it to a multiple of `pad_to_multiple`."""
    n = len(split)
    pad = -n % pad_to_multiple
    images = np.concatenate([split.images, np.zeros((pad, *split.images.shape[1:]), np.uint8)])
    labels = np.concatenate([split.labels, np.zeros(pad, np.int32)])
    mask = np.arange(n + pad) < n
    return DeviceSplit(jnp.asarray(images), jnp.asarray(labels), jnp.asarray(mask), n)


def channel_stats(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of pixel values scaled to [0, 1] (computed once, on the train split)."""
    pixels = split.images.reshape(-1, split.images.shape[-1])
    mean = np.zeros(pixels.shape[1])
    sq = np.zeros(pixels.shape[1])
    for start in range(0, len(pixels), 1 << 22):  # chunks keep float64 memory small
        chunk = pixels[start : start + (1 << 22)].astype(np.float64) / 255.0
        mean += chunk.sum(0)
        sq += (chunk**2).sum(0)
    mean /= len(pixels)
    std = np.sqrt(sq / len(pixels) - mean**2)
    return mean.astype(np.float32), std.astype(np.float32)


def epoch_permutation(data_key: jax.Array, epoch: int | jax.Array, n: int) -> jax.Array:
    """The order of epoch `epoch`: a permutation drawn from fold_in(data_key, epoch)."""
    return jax.random.permutation(jax.random.fold_in(data_key, epoch), n)


def take_batch(split: DeviceSplit, order: jax.Array, index: jax.Array, batch_size: int) -> dict[str, jax.Array]:
    """Batch `index` of the shuffled `order` (traceable: use inside jit)."""
    idx = jax.lax.dynamic_slice_in_dim(order, index * batch_size, batch_size)
    return {"image": split.images[idx], "label": split.labels[idx], "mask": split.mask[idx]}


def slice_batch(split: DeviceSplit, index: jax.Array, batch_size: int) -> dict[str, jax.Array]:
    """Batch `index` in stored order (traceable: use inside jit)."""

    def cut(x):
        return jax.lax.dynamic_slice_in_dim(x, index * batch_size, batch_size)

    return {"image": cut(split.images), "label": cut(split.labels), "mask": cut(split.mask)}
