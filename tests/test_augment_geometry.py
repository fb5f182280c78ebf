"""Rotation and grey-scale augmentations: exact cases, randomness per key, and their place in `augment`."""

import jax
import jax.numpy as jnp
import numpy as np

from cnn_jax.data.augment import (
    augment,
    random_greyscale,
    random_horizontal_flip,
    random_rotation,
    random_shift,
    rotate,
)


def _images(shape, seed=1):
    return jax.random.randint(jax.random.PRNGKey(seed), shape, 0, 256).astype(jnp.uint8)


def test_off_is_the_input_itself_and_augment_computes_what_it_did_before():
    images = _images((6, 5, 7, 3))
    key = jax.random.PRNGKey(3)
    assert random_rotation(images, key, 0.0) is images
    assert random_greyscale(images, key, 0.0) is images
    crop_key, shift_key, flip_key = jax.random.split(key, 3)
    before = random_shift(images, crop_key, 2, "constant")
    before = random_shift(before, shift_key, 1, "reflect")
    before = random_horizontal_flip(before, flip_key)
    after = augment(images, key, crop_padding=2, translate=1, horizontal_flip=True, rotation=0.0, greyscale=0.0)
    assert after.dtype == images.dtype and np.array_equal(after, before)


def test_quarter_and_half_turns_are_exact():
    image = _images((6, 6, 3))
    # positive degrees turn counter-clockwise, as np.rot90 with k=1
    assert np.array_equal(rotate(image, 90.0), np.rot90(image, 1, axes=(0, 1)))
    assert np.array_equal(rotate(image, -90.0), np.rot90(image, -1, axes=(0, 1)))
    wide = _images((4, 7, 2))
    assert np.array_equal(rotate(wide, 180.0), np.asarray(wide)[::-1, ::-1])


def test_rotation_keeps_centre_pixel_shape_and_dtype():
    image = _images((7, 9, 3))
    for dtype in (jnp.uint8, jnp.float32):
        out = rotate(image.astype(dtype), 7.5)
        assert out.shape == image.shape and out.dtype == dtype
        assert np.array_equal(out[3, 4], image[3, 4].astype(dtype))
    batch = _images((4, 5, 8, 1))
    out = random_rotation(batch, jax.random.PRNGKey(0), 20.0)
    assert out.shape == batch.shape and out.dtype == jnp.uint8


def test_rotation_reflects_where_the_source_is_outside():
    # a left-right ramp turned by 90 degrees becomes a top-bottom ramp; at 45 degrees the corners read
    # reflected pixels, so no zero fill appears in an image with no zeros
    ramp = jnp.broadcast_to(jnp.arange(1, 10, dtype=jnp.float32), (9, 9))[..., None]
    out = rotate(ramp, 45.0)
    assert float(out.min()) >= 1.0 and float(out.max()) <= 9.0


def _bright_pixel_angles(out, centre):
    """Angle (degrees, counter-clockwise) of each image's intensity centroid about `centre`."""
    out = np.asarray(out, np.float64)[..., 0]
    rows, cols = np.mgrid[: out.shape[1], : out.shape[2]]
    total = out.sum(axis=(1, 2))
    r = (out * rows).sum(axis=(1, 2)) / total - centre
    c = (out * cols).sum(axis=(1, 2)) / total - centre
    return np.degrees(np.arctan2(-r, c))


def test_each_image_draws_its_own_angle_within_bounds_fixed_per_key():
    size, centre = 33, 16
    image = np.zeros((size, size, 1), np.float32)
    image[centre, centre + 12] = 1.0  # at angle 0, 12 pixels right of the centre
    batch = jnp.asarray(np.repeat(image[None], 64, axis=0))
    out = random_rotation(batch, jax.random.PRNGKey(7), 30.0)
    angles = _bright_pixel_angles(out, centre)
    assert np.all(np.abs(angles) <= 31.0)
    assert angles.min() < -15.0 and angles.max() > 15.0 and len(np.unique(np.round(angles, 2))) > 50
    assert np.array_equal(out, random_rotation(batch, jax.random.PRNGKey(7), 30.0))
    other = _bright_pixel_angles(random_rotation(batch, jax.random.PRNGKey(8), 30.0), centre)
    assert not np.allclose(angles, other, atol=0.5)
    # the centroid of a bilinearly sampled point follows the rotation closely
    assert abs(_bright_pixel_angles(rotate(jnp.asarray(image), 20.0)[None], centre)[0] - 20.0) < 1.0


def test_greyscale_is_rounded_bt601_luminance_on_three_channels():
    images = _images((4, 5, 6, 3))
    out = np.asarray(random_greyscale(images, jax.random.PRNGKey(0), 1.0))
    assert out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    rgb = np.asarray(images, np.float64)
    luminance = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    expected = np.round(luminance)
    tie = np.abs(luminance - np.floor(luminance) - 0.5) < 1e-3  # float32 may round an exact .5 either way
    assert np.array_equal(out[..., 0][~tie], expected[~tie]) and np.all(np.abs(out[..., 0] - expected) <= 1)


def test_greyscale_converts_about_the_given_fraction_and_leaves_the_rest():
    images = _images((200, 3, 3, 3))
    out = np.asarray(random_greyscale(images, jax.random.PRNGKey(4), 0.5))
    grey = np.asarray(random_greyscale(images, jax.random.PRNGKey(4), 1.0))
    converted = [np.array_equal(o, g) for o, g in zip(out, grey)]
    kept = [np.array_equal(o, i) for o, i in zip(out, np.asarray(images))]
    assert all(c or k for c, k in zip(converted, kept)) and 70 < sum(converted) < 130
    single = _images((5, 4, 4, 1))
    assert np.array_equal(random_greyscale(single, jax.random.PRNGKey(0), 1.0), single)


def test_augment_with_rotation_and_greyscale_runs_under_jit():
    images = _images((8, 32, 32, 3))
    on = jax.jit(
        lambda x, k: augment(x, k, crop_padding=0, translate=0, horizontal_flip=True, rotation=10.0, greyscale=0.2)
    )
    out = on(images, jax.random.PRNGKey(0))
    assert out.shape == images.shape and out.dtype == jnp.uint8
    assert np.array_equal(out, on(images, jax.random.PRNGKey(0)))
    assert not np.array_equal(out, on(images, jax.random.PRNGKey(1)))
