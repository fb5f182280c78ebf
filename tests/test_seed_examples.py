"""The worked examples of the course slides (seeds 000-003), computed by the project's own layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from cnn_jax import cli
from cnn_jax.analysis.kernels import CLASSIC_KERNELS, apply_kernel
from cnn_jax.models.layers import ConvUnit, Downsample, identity


def run(module, x, params=None):
    variables = module.init(jax.random.PRNGKey(0), x)
    if params is not None:
        variables = {"params": params}
    return np.asarray(module.apply(variables, x))


def test_seed_000_max_and_average_pooling_2x2():
    x = jnp.array([[1, 2, 0, 2], [1, 4, 2, 0], [4, 3, 1, 0], [1, 2, 2, 1]], jnp.float32).reshape(1, 4, 4, 1)
    assert run(Downsample("max"), x)[0, :, :, 0].tolist() == [[4, 2], [4, 2]]
    assert run(Downsample("avg"), x)[0, :, :, 0].tolist() == [[2, 1], [2.5, 1]]


def test_seed_002_three_channel_convolution_with_bias():
    red = [
        [156, 155, 156, 158, 158],
        [153, 154, 157, 159, 159],
        [149, 151, 155, 158, 159],
        [146, 146, 149, 153, 158],
        [145, 143, 143, 148, 158],
    ]
    green = [
        [167, 166, 167, 169, 169],
        [164, 165, 168, 170, 170],
        [160, 162, 166, 169, 170],
        [156, 156, 159, 163, 168],
        [155, 153, 153, 158, 168],
    ]
    blue = [
        [163, 162, 163, 165, 165],
        [160, 161, 164, 166, 166],
        [156, 158, 162, 165, 166],
        [155, 155, 158, 162, 167],
        [154, 152, 152, 157, 167],
    ]
    kernels = [
        [[-1, -1, 1], [0, 1, -1], [0, 1, 1]],
        [[1, 0, 0], [1, -1, -1], [1, 0, -1]],
        [[0, 1, 1], [0, 1, 0], [1, -1, 1]],
    ]
    image = jnp.stack([jnp.array(c, jnp.float32) for c in (red, green, blue)], -1)[None]
    kernel = jnp.stack([jnp.array(k, jnp.float32) for k in kernels], -1)[..., None]  # (3, 3, 3 in, 1 out)
    per_channel = [
        float(jnp.sum(jnp.pad(image[0, :2, :2, c], ((1, 0), (1, 0))) * kernel[:, :, c, 0])) for c in range(3)
    ]
    assert per_channel == [308, -498, 164]
    conv = ConvUnit(1, 3, padding=1, act=identity)  # zero padding of one pixel, as on the slide
    out = run(conv, image, {"Conv_0": {"kernel": kernel, "bias": jnp.ones(1)}})
    assert out[0, 0, 0, 0] == 308 - 498 + 164 + 1 == -25


@pytest.mark.parametrize(
    "size, kernel, stride, padding", [(227, 11, 4, 0), (27, 5, 1, 2), (13, 3, 1, 1), (28, 3, 1, 0)]
)
def test_seed_002_output_size_formula_for_conv(size, kernel, stride, padding):
    expected = (size - kernel + 2 * padding) // stride + 1
    x = jnp.zeros((1, size, size, 1))
    assert run(ConvUnit(2, kernel=kernel, stride=stride, padding=padding), x).shape == (1, expected, expected, 2)


@pytest.mark.parametrize("size, window, stride", [(55, 3, 2), (27, 3, 2), (26, 2, 2), (11, 2, 2)])
def test_seed_002_output_size_formula_for_pooling(size, window, stride):
    expected = (size - window) // stride + 1
    x = jnp.zeros((1, size, size, 1))
    assert run(Downsample("max", window=window, stride=stride), x).shape == (1, expected, expected, 1)


def test_seed_003_binary_image_valid_convolution():
    image = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 1, 1, 1, 0],
            [1, 1, 0, 0, 1, 0, 0],
            [0, 1, 0, 1, 0, 0, 0],
            [0, 1, 1, 0, 0, 0, 0],
            [0, 1, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0],
        ],
        np.float32,
    )
    kernel = np.array([[0, 0, 0], [0, 1, 1], [0, 1, 0]], np.float32)
    conv = ConvUnit(1, 3, padding="VALID", act=identity, use_bias=False)
    out = run(conv, jnp.asarray(image)[None, :, :, None], {"Conv_0": {"kernel": jnp.asarray(kernel)[:, :, None, None]}})
    assert out[0, :, :, 0].astype(int).tolist() == [
        [3, 2, 2, 3, 1],
        [2, 0, 2, 1, 0],
        [2, 2, 1, 0, 0],
        [3, 1, 0, 0, 0],
        [1, 0, 0, 0, 0],
    ]


def test_seed_003_per_channel_2x2_example_sums_to_475():
    red, green, blue = [[7, 91], [87, 221]], [[99, 15], [51, 114]], [[187, 234], [88, 29]]
    filters = [[[0, 1], [1, 0]], [[0, 1], [1, 1]], [[0, 0], [1, 1]]]  # the blue filter is implied: 475-178-180
    image = jnp.stack([jnp.array(c, jnp.float32) for c in (red, green, blue)], -1)[None]
    kernel = jnp.stack([jnp.array(f, jnp.float32) for f in filters], -1)[..., None]
    conv = ConvUnit(1, 2, padding="VALID", act=identity, use_bias=False)
    out = run(conv, image, {"Conv_0": {"kernel": kernel}})
    assert [float(jnp.sum(image[0, :, :, c] * kernel[:, :, c, 0])) for c in range(3)] == [178, 180, 117]
    assert out[0, 0, 0, 0] == 475


def test_seed_003_same_padded_conv_then_pool_gives_320x320x32():
    x = jnp.zeros((1, 640, 640, 1))
    features = jax.eval_shape(lambda v: ConvUnit(32, kernel=3).init_with_output(jax.random.PRNGKey(0), v)[0], x)
    assert features.shape == (1, 640, 640, 32)
    pooled = jax.eval_shape(lambda v: Downsample("max").init_with_output(jax.random.PRNGKey(0), v)[0], features)
    assert pooled.shape == (1, 320, 320, 32)


def test_seed_001_classic_kernels_keep_flat_regions_and_act_as_expected():
    flat = jnp.full((6, 6, 1), 100, jnp.uint8)
    for kernel in CLASSIC_KERNELS.values():
        assert jnp.array_equal(apply_kernel(flat, jnp.asarray(kernel)), flat)
    step = jnp.zeros((6, 6, 1), jnp.uint8).at[:, 3:].set(200)
    blurred = np.asarray(apply_kernel(step, jnp.asarray(CLASSIC_KERNELS["box_blur"])))[0, :, 0]
    assert blurred.tolist() == [0, 0, 67, 133, 200, 200]
    sharpened = np.asarray(apply_kernel(step, jnp.asarray(CLASSIC_KERNELS["sharpen"])))[0, :, 0]
    assert sharpened.tolist() == [0, 0, 0, 255, 200, 200]  # the edge is exaggerated, clipped to 0..255


def test_filter_command_writes_a_before_after_png(tmp_path, capsys):
    source = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(source)
    assert cli.main(["convolve", "gaussian_blur", str(source)]) == 0
    out = tmp_path / "photo_gaussian_blur.png"
    assert out.exists() and Image.open(out).size[0] > 0
    assert cli.main(["convolve", "blur", str(source)]) == 2
    assert "Did you mean 'box_blur'" in capsys.readouterr().err
