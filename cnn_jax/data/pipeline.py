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


class PixelMoments:
    """Exact per-channel sums of uint8 pixel values and of their squares (integers: the result does not
    depend on how the images are chunked, so a streamed split gets the statistics a resident one gets)."""

    def __init__(self, channels: int):
        self.count, self.sum, self.sum_sq = 0, np.zeros(channels, np.int64), np.zeros(channels, np.int64)

    def add(self, images: np.ndarray) -> None:
        pixels = images.reshape(-1, images.shape[-1]).astype(np.int64)
        self.count += len(pixels)
        self.sum += pixels.sum(0)
        self.sum_sq += (pixels**2).sum(0)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the pixel values scaled to [0, 1]."""
        mean = self.sum / self.count / 255.0
        std = np.sqrt(self.sum_sq / self.count / 255.0**2 - mean**2)
        return mean.astype(np.float32), std.astype(np.float32)


def channel_stats(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of pixel values scaled to [0, 1] (computed once, on the train split)."""
    moments = PixelMoments(split.images.shape[-1])
    for start in range(0, len(split), 10_000):  # chunks keep int64 memory small
        moments.add(split.images[start : start + 10_000])
    return moments.mean_std()


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
