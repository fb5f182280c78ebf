"""LeNet-5, AlexNet and VGG: exact parameter counts against their sources, shape chains, LeNet-5's
fixed RBF centres, the common model checks, and VGG's downsampling switch."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from cnn_jax import config as config_lib
from cnn_jax.models import build_model
from cnn_jax.models.lenet import C3_INPUTS, PartialConv, RBFOutput
from cnn_jax.models.summary import summarize

from model_checks import check_model, count_params

IMAGENET = (224, 224, 3)
CIFAR = (32, 32, 3)

# torchvision docs, models/generated/torchvision.models.<name>.html: num_params of IMAGENET1K_V1.
TORCHVISION_VGG = {
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
}
IMAGENET_HEAD = (25_088 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)

# Table I of LeCun et al. 1998: row = S2 map, column = C3 map, X = connected.
TABLE_I = (
    "X...XXX..XXXX.XX",
    "XX...XXX..XXXX.X",
    "XXX...XXX..X.XXX",
    ".XXX..XXXX..X.XX",
    "..XXX..XXXX.XX.X",
    "...XXX..XXXX.XXX",
)


def build(name: str, input_shape, num_classes: int = 10, **options) -> nn.Module:
    overrides = {"model.name": name, **{f"model.{k}": v for k, v in options.items()}}
    config = config_lib.apply_overrides(config_lib.default_config(), overrides)
    return build_model(config.model, num_classes=num_classes)


def abstract_variables(model: nn.Module, input_shape) -> dict:
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *input_shape))))


def sizes(tree: dict) -> dict[str, int]:
    return {name: sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(sub)) for name, sub in tree.items()}


def shape_chain(model: nn.Module, input_shape, kinds=("Conv", "MaxPool", "Flatten", "Dense")) -> list[tuple]:
    return [
        (row.path.split("/")[-2 if row.kind in ("Conv", "MaxPool") else -1], row.output_shape)
        for row in summarize(model, input_shape).rows
        if row.kind in kinds
    ]


# ----------------------------------------------------------------------------- LeNet-5


def test_lenet5_has_the_61706_parameters_of_the_pytorch_tutorial_on_32x32_and_padded_28x28():
    # PyTorch "Neural Networks" tutorial: 156 + 2,416 + 48,120 + 10,164 + 850.
    assert count_params("lenet5", (32, 32, 1), 10) == (61_706, 0)
    assert count_params("lenet5", (28, 28, 1), 10) == (61_706, 0)
    chain = shape_chain(build("lenet5", (28, 28, 1)), (28, 28, 1))
    assert chain[0] == ("conv1", (28, 28, 6)) and ("flatten", (400,)) in chain


@pytest.mark.parametrize("shape", [(32, 32, 1), (28, 28, 1)])
def test_lenet5_strided_conv_keeps_the_parameters_and_the_14x14_and_5x5_maps(shape):
    assert count_params("lenet5", shape, 10, downsample="strided_conv") == (61_706, 0)
    chain = shape_chain(build("lenet5", shape, downsample="strided_conv"), shape)
    assert chain[:3] == [("conv1", (14, 14, 6)), ("conv2", (5, 5, 16)), ("flatten", (400,))]


def test_lenet5_1998_has_the_papers_layer_counts_and_840_fixed_rbf_parameters():
    # LeCun et al. 1998, Section II.B: C1 156, S2 12, C3 1,516 (Table I), S4 32, C5 48,120, F6 10,164.
    for shape in [(32, 32, 1), (28, 28, 1)]:
        variables = abstract_variables(build("lenet5_1998", shape), shape)
        assert sizes(variables["params"]) == {"c1": 156, "s2": 12, "c3": 1_516, "s4": 32, "c5": 48_120, "f6": 10_164}
        assert sizes(variables["batch_stats"]) == {"output": 840}
        assert count_params("lenet5_1998", shape, 10) == (60_000, 840)


def test_lenet5_1998_c5_sees_the_whole_32x32_input():
    rows = {row.path: row for row in summarize(build("lenet5_1998", (32, 32, 1)), (32, 32, 1)).rows}
    assert {rows[f"c3/from{fan_in}"].receptive_field for fan_in in (3, 4, 6)} == {14}
    assert rows["c5"].output_shape == (1, 1, 120) and rows["c5"].receptive_field == 32


def test_lenet5_1998_c3_connects_exactly_as_table_i():
    c3 = PartialConv(C3_INPUTS, 5)
    one_map_each = jnp.broadcast_to(jnp.eye(6)[:, None, None, :], (6, 5, 5, 6))  # image i: S2 map i all ones
    shapes = jax.eval_shape(c3.init, jax.random.PRNGKey(0), one_map_each)
    out = c3.apply(jax.tree_util.tree_map(lambda s: jnp.ones(s.shape), shapes), one_map_each)  # weights, biases 1
    connected = np.asarray(out[:, 0, 0, :] > 1)
    np.testing.assert_array_equal(connected, np.array([[mark == "X" for mark in row] for row in TABLE_I]))


def test_lenet5_1998_rbf_output_has_fixed_centres_and_returns_minus_squared_distances():
    features = np.random.default_rng(0).normal(size=(3, 84)).astype(np.float32)
    rbf = RBFOutput(10)
    variables = rbf.init(jax.random.PRNGKey(1), features)
    assert list(variables) == ["batch_stats"]  # nothing trainable
    centres = variables["batch_stats"]["centres"]
    np.testing.assert_array_equal(centres, rbf.init(jax.random.PRNGKey(2), features)["batch_stats"]["centres"])
    assert centres.shape == (84, 10) and set(np.unique(centres)) == {-1.0, 1.0}

    logits, state = rbf.apply(variables, features, train=True, mutable=["batch_stats"])
    np.testing.assert_array_equal(state["batch_stats"]["centres"], centres)
    np.testing.assert_allclose(logits, -((features[:, :, None] - centres[None]) ** 2).sum(axis=1), rtol=1e-5)


# ----------------------------------------------------------------------------- AlexNet


def test_alexnet_has_62378344_parameters_as_the_single_gpu_paper_layout():
    # Krizhevsky et al. 2012, Section 3 / Fig. 2, ungrouped: 34,944 + 614,656 + 885,120 + 1,327,488
    # + 884,992 convs, 37,752,832 + 16,781,312 + 4,097,000 fc.
    assert count_params("alexnet", (227, 227, 3), 1000) == (62_378_344, 0)


def test_alexnet_shape_chain_on_227x227_follows_the_paper():
    assert shape_chain(build("alexnet", (227, 227, 3), 1000), (227, 227, 3)) == [
        ("conv1", (55, 55, 96)),
        ("pool1", (27, 27, 96)),
        ("conv2", (27, 27, 256)),
        ("pool2", (13, 13, 256)),
        ("conv3", (13, 13, 384)),
        ("conv4", (13, 13, 384)),
        ("conv5", (13, 13, 256)),
        ("pool5", (6, 6, 256)),
        ("flatten", (9216,)),
        ("Dense_0", (4096,)),
        ("Dense_1", (4096,)),
        ("Dense_2", (1000,)),
    ]


def test_alexnet_non_overlapping_pooling_keeps_the_shapes_and_the_count():
    assert count_params("alexnet", (227, 227, 3), 1000, pool_window=2) == (62_378_344, 0)


def test_alexnet_torchvision_has_the_documented_61100840_parameters_on_any_input_size():
    # torchvision docs, torchvision.models.alexnet: num_params 61,100,840.
    assert count_params("alexnet_torchvision", IMAGENET, 1000) == (61_100_840, 0)
    assert count_params("alexnet_torchvision", (63, 63, 3), 1000) == (61_100_840, 0)  # 1x1 map, pooled up to 6x6
    chain = shape_chain(build("alexnet_torchvision", IMAGENET, 1000), IMAGENET, kinds=("Conv", "MaxPool"))
    assert chain[0] == ("conv1", (55, 55, 64)) and chain[-1] == ("pool5", (6, 6, 256))


# ----------------------------------------------------------------------------- VGG


@pytest.mark.parametrize("name", sorted(TORCHVISION_VGG))
def test_vgg_imagenet_heads_match_torchvision_and_running_statistics_are_not_parameters(name):
    trainable, non_trainable = count_params(name, IMAGENET, 1000)
    assert trainable == TORCHVISION_VGG[name]
    plain = name.removesuffix("_bn")
    assert non_trainable == TORCHVISION_VGG[name] - TORCHVISION_VGG[plain]  # running mean + var = scale + bias


@pytest.mark.parametrize(
    "name, expected",
    [
        ("vgg11_cifar", 9_225_610),
        ("vgg13_cifar", 9_410_122),
        ("vgg16_cifar", 14_719_818),
        ("vgg19_cifar", 20_029_514),
        ("vgg11_bn_cifar", 9_231_114),
        ("vgg13_bn_cifar", 9_416_010),
        ("vgg16_bn_cifar", 14_728_266),
        ("vgg19_bn_cifar", 20_040_522),
    ],
)
def test_vgg_cifar_heads_match_kuangliu_pytorch_cifar(name, expected):
    # kuangliu/pytorch-cifar models/vgg.py: torchvision's features (convs with bias, BN scale + bias)
    # and one fc 512 -> 10 instead of torchvision's ImageNet head.
    torchvision_name = name.removesuffix("_cifar")
    assert expected == TORCHVISION_VGG[torchvision_name] - IMAGENET_HEAD + 512 * 10 + 10
    trainable, non_trainable = count_params(name, CIFAR, 10)
    assert trainable == expected
    assert non_trainable == TORCHVISION_VGG[torchvision_name] - TORCHVISION_VGG[torchvision_name.removesuffix("_bn")]


def test_vgg_downsample_switch_reaches_every_pooling_layer():
    def pooling_rows(**options):
        model = build("vgg11_cifar", CIFAR, **options)
        return [(r.path, r.kind, r.output_shape) for r in summarize(model, CIFAR).rows if "Downsample" in r.path]

    assert [kind for _, kind, _ in pooling_rows()] == ["MaxPool"] * 5
    assert [kind for _, kind, _ in pooling_rows(downsample="avg")] == ["AvgPool"] * 5
    assert [kind for _, kind, _ in pooling_rows(downsample="l2")] == ["L2Pool"] * 5
    strided = pooling_rows(downsample="stride")
    assert [kind for _, kind, _ in strided] == ["Conv"] * 5
    assert [shape for *_, shape in strided] == [shape for *_, shape in pooling_rows()]


def test_vgg_strided_conv_moves_each_stage_stride_into_its_last_conv():
    rows = summarize(build("vgg11_cifar", CIFAR, downsample="strided_conv"), CIFAR).rows
    assert not [r for r in rows if "Downsample" in r.path]
    last_convs = [[r for r in rows if r.path.startswith(f"stage{i}/")][-1] for i in range(1, 6)]
    assert [r.output_shape for r in last_convs] == [(16, 16, 64), (8, 8, 128), (4, 4, 256), (2, 2, 512), (1, 1, 512)]
    assert count_params("vgg11_cifar", CIFAR, 10, downsample="strided_conv") == count_params("vgg11_cifar", CIFAR, 10)


# ----------------------------------------------------------------------------- common checks


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, input_shape, options",
    [
        ("lenet5", (32, 32, 1), {}),
        ("lenet5", (28, 28, 1), {"downsample": "avg"}),
        ("lenet5", (28, 28, 1), {"downsample": "l2"}),
        ("lenet5", (32, 32, 1), {"downsample": "strided_conv"}),
        ("lenet5_1998", (28, 28, 1), {}),
        ("vgg11_bn_cifar", CIFAR, {}),
    ],
)
def test_classic_models_pass_the_common_checks(name, input_shape, options):
    check_model(name, input_shape, **options)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, input_shape",
    [
        ("alexnet", (67, 67, 3)),  # the smallest input that leaves a 1x1 map after pool5
        ("alexnet_torchvision", (63, 63, 3)),  # likewise; adaptive pooling restores the 6x6 head
    ],
)
def test_alexnets_pass_the_common_checks(name, input_shape):
    check_model(name, input_shape)  # 22M and 61M parameters: over 10 s each on 2 CPU cores
