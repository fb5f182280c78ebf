"""Device pipeline: epoch orders, batches, eval padding, augmentation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax.data.arrays import Split
from cnn_jax.data.augment import augment, random_horizontal_flip, random_shift
from cnn_jax.data.pipeline import channel_stats, epoch_permutation, slice_batch, take_batch, to_device
from cnn_jax.errors import UserError


def _split(n=10, hw=4):
    images = np.arange(n * hw * hw, dtype=np.int64).reshape(n, hw, hw, 1) % 251
    return Split(images.astype(np.uint8), np.arange(n, dtype=np.int32))


def test_each_epoch_is_a_permutation_fixed_by_seed_and_epoch():
    key = jax.random.PRNGKey(3)
    first, again, second = (np.asarray(epoch_permutation(key, e, 100)) for e in (0, 0, 1))
    assert sorted(first) == list(range(100))
    assert np.array_equal(first, again) and not np.array_equal(first, second)


def test_train_batches_follow_the_epoch_order_and_drop_the_remainder():
    split = to_device(_split(10))
    order = jnp.asarray([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    batch = take_batch(split, order, 1, 4)
    assert batch["label"].tolist() == [5, 4, 3, 2]
    assert split.num_batches(4) == 2


def test_eval_padding_counts_every_example_exactly_once():
    split = to_device(_split(10), pad_to_multiple=4)
    assert len(split.labels) == 12 and split.size == 10
    masks = [slice_batch(split, i, 4)["mask"] for i in range(split.num_batches(4))]
    labels = [slice_batch(split, i, 4)["label"] for i in range(split.num_batches(4))]
    counted = np.concatenate([np.asarray(y)[np.asarray(m)] for y, m in zip(labels, masks)])
    assert counted.tolist() == list(range(10))


def test_channel_stats_match_numpy():
    split = _split(10)
    mean, std = channel_stats(split)
    pixels = split.images.astype(np.float64) / 255
    assert np.allclose(mean, pixels.mean()) and np.allclose(std, pixels.std(), rtol=1e-5)


def test_zero_padded_crop_shifts_content_and_fills_zeros():
    image = jnp.arange(1, 17, dtype=jnp.uint8).reshape(1, 4, 4, 1)
    images = jnp.repeat(image, 64, axis=0)
    out = np.asarray(random_shift(images, jax.random.PRNGKey(0), 1, "constant"))
    assert out.shape == images.shape
    for shifted in out:  # every result is the image moved by at most one pixel, zeros shifted in
        matches = [
            np.array_equal(shifted, np.roll(np.pad(image[0], ((1, 1), (1, 1), (0, 0))), (dy, dx), (0, 1))[1:5, 1:5])
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        ]
        assert any(matches)
    assert len({arr.tobytes() for arr in out}) > 1


def test_flip_mirrors_about_half_the_batch_exactly():
    images = jax.random.randint(jax.random.PRNGKey(1), (200, 5, 5, 1), 0, 255).astype(jnp.uint8)
    out = random_horizontal_flip(images, jax.random.PRNGKey(2))
    flipped = [bool(jnp.array_equal(o, i[:, ::-1])) for o, i in zip(out, images)]
    kept = [bool(jnp.array_equal(o, i)) for o, i in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept)) and 70 < sum(flipped) < 130


def test_augmentation_off_is_identity_and_on_is_deterministic_per_key():
    images = jax.random.randint(jax.random.PRNGKey(1), (8, 6, 6, 3), 0, 255).astype(jnp.uint8)
    off = augment(images, jax.random.PRNGKey(0), crop_padding=0, translate=0, horizontal_flip=False)
    assert jnp.array_equal(off, images)
    on = jax.jit(lambda x, k: augment(x, k, crop_padding=2, translate=1, horizontal_flip=True))
    assert jnp.array_equal(on(images, jax.random.PRNGKey(5)), on(images, jax.random.PRNGKey(5)))
    assert not jnp.array_equal(on(images, jax.random.PRNGKey(5)), on(images, jax.random.PRNGKey(6)))


def test_a_train_subset_is_class_balanced_fixed_and_in_stored_order():
    from cnn_jax.data.arrays import Split, balanced_subset

    labels = np.repeat(np.arange(10), 100).astype(np.int32)  # sorted by class, as image folders often are
    images = np.arange(1000, dtype=np.uint8).reshape(1000, 1, 1, 1)
    split = Split(images, labels)
    subset = balanced_subset(split, 95)
    assert np.bincount(subset.labels, minlength=10).tolist() == [10] * 5 + [9] * 5
    assert np.array_equal(subset.images, balanced_subset(split, 95).images)
    positions = np.flatnonzero(np.isin(images.ravel(), subset.images.ravel()))
    assert np.all(np.diff(positions) > 0) and positions.max() > 900  # spread over the split, order kept
    with pytest.raises(UserError, match="cannot draw that many class-balanced examples"):
        balanced_subset(Split(images[:105], labels[:105]), 100)
