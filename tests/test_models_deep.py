"""GoogLeNet and the ResNets: parameter counts against their sources, the options of their blocks,
and the common model checks on small inputs."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import config as config_lib
from cnn_jax.errors import UserError
from cnn_jax.models import build_model
from cnn_jax.models.blocks import AdaptiveAvgPool, BasicBlock, Bottleneck, InceptionV1, Shortcut
from cnn_jax.models.googlenet import INCEPTIONS, GoogLeNet
from cnn_jax.models.resnet import CifarResNet
from cnn_jax.models.summary import summarize

from model_checks import check_model, count_params

# torchvision.models documentation, "num_params" of the IMAGENET1K_V1 weights (1000 classes).
TORCHVISION_COUNTS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "googlenet": 6_624_904,
}
# He et al. 2015, Table 6 (CIFAR-10, option A shortcuts): exact counts and the paper's rounding.
CIFAR_COUNTS = {
    "resnet20": (269_722, "0.27M"),
    "resnet32": (464_154, "0.46M"),
    "resnet44": (658_586, "0.66M"),
    "resnet56": (853_018, "0.85M"),
    "resnet110": (1_727_962, "1.7M"),
}


def _abstract(module, input_shape) -> tuple[tuple[int, ...], int]:
    """(output shape, trainable parameters) of `module` on one input, without compute."""
    out, variables = jax.eval_shape(
        lambda: module.init_with_output(jax.random.PRNGKey(0), jnp.zeros((1, *input_shape)))
    )
    return out.shape[1:], sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(variables.get("params", {})))


# ----------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("name, count", TORCHVISION_COUNTS.items())
def test_imagenet_models_have_torchvisions_parameter_counts(name, count):
    assert count_params(name, (224, 224, 3), 1000)[0] == count


def test_googlenet_with_aux_heads_has_torchvisions_count():
    # torchvision.models.googlenet(aux_logits=True, init_weights=False): the two InceptionAux heads.
    assert count_params("googlenet", (224, 224, 3), 1000, aux_heads=True)[0] == 13_004_888


@pytest.mark.parametrize("name, count, paper", [(n, c, p) for n, (c, p) in CIFAR_COUNTS.items()])
def test_cifar_resnets_have_option_a_counts_that_round_to_table_6(name, count, paper):
    assert count_params(name, (32, 32, 3), 10)[0] == count
    decimals = len(paper.split(".")[1]) - 1
    assert f"{count / 1e6:.{decimals}f}M" == paper


def test_cifar_resnets_with_projection_shortcuts_add_the_two_1x1_convs_with_batch_norm():
    # He et al. 2015, Sec. 4.2 uses option A; option B projects at the 16->32 and 32->64 transitions.
    extra = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert extra == 2_752
    for n, option_a in ((3, 269_722), (18, 1_727_962)):
        assert summarize(CifarResNet(n, 10, shortcut="projection"), (32, 32, 3)).trainable_params == option_a + extra


def test_googlenet_kernel_scheme_5x5_builds_the_papers_5x5_branches():
    pairs = sum(ch5x5red * ch5x5 for _, _, _, ch5x5red, ch5x5, _ in INCEPTIONS.values())
    assert count_params("googlenet", (64, 64, 3), 1000, kernel_scheme="5x5")[0] == 6_624_904 + (25 - 9) * pairs
    with pytest.raises(UserError, match="kernel_scheme"):
        count_params("googlenet", (64, 64, 3), 1000, kernel_scheme="7x7")


def test_googlenet_dropout_switch_replaces_torchvisions_rate():
    def dropout_of(**options) -> float:
        overrides = {"model.name": "googlenet", **{f"model.{k}": v for k, v in options.items()}}
        model_options = config_lib.apply_overrides(config_lib.default_config(), overrides).model
        return build_model(model_options, num_classes=10).dropout

    assert dropout_of() == 0.2  # torchvision
    assert dropout_of(dropout=0.4) == 0.4  # the paper


def test_resnet_stem_pool_follows_the_downsample_switch():
    base = TORCHVISION_COUNTS["resnet18"]
    assert count_params("resnet18", (64, 64, 3), 1000, downsample="avg")[0] == base
    assert count_params("resnet18", (64, 64, 3), 1000, downsample="none")[0] == base
    assert count_params("resnet18", (64, 64, 3), 1000, downsample="stride")[0] == base + 3 * 3 * 64 * 64 + 2 * 64
    with pytest.raises(UserError, match="has no field 'model.downsample'"):
        count_params("resnet20", (32, 32, 3), 10, downsample="max")


# ----------------------------------------------------------------------------- blocks


@pytest.mark.parametrize("block, expansion", [(BasicBlock, 1), (Bottleneck, 4)])
def test_shortcut_options_a_and_b_give_equal_shapes_and_only_b_has_parameters(block, expansion):
    out_features = 32 * expansion
    shape_a, params_a = _abstract(block(32, 2, "zero_pad"), (8, 8, 16))
    shape_b, params_b = _abstract(block(32, 2, "projection"), (8, 8, 16))
    assert shape_a == shape_b == (4, 4, out_features)
    assert params_b - params_a == 16 * out_features + 2 * out_features
    assert _abstract(Shortcut(out_features, 2, "zero_pad"), (8, 8, 16)) == ((4, 4, out_features), 0)


def test_zero_pad_shortcut_subsamples_by_the_stride_and_appends_zero_channels():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 5, 5, 3))
    y = Shortcut(8, 2, "zero_pad").apply({}, x)
    np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2])
    np.testing.assert_array_equal(y[..., 3:], 0)
    np.testing.assert_array_equal(Shortcut(3, 1, "projection").apply({}, x), x)  # same shape: identity


def test_bottleneck_downsamples_on_its_3x3_conv_as_torchvision_v1_5():
    shapes = {row.path: row.output_shape for row in summarize(Bottleneck(16, 2), (8, 8, 64)).rows}
    assert shapes["conv1/Conv_0"] == (8, 8, 16)
    assert shapes["conv2/Conv_0"] == (4, 4, 16)
    assert shapes["conv3/Conv_0"] == (4, 4, 64)


def test_inception_concatenates_its_branches_and_a_true_5x5_adds_16_weights_per_channel_pair():
    ch1x1, _, ch3x3, ch5x5red, ch5x5, pool_proj = channels = INCEPTIONS["3a"]
    shape3, params3 = _abstract(InceptionV1(*channels), (7, 7, 192))
    shape5, params5 = _abstract(InceptionV1(*channels, ch5x5_kernel=5), (7, 7, 192))
    assert shape3 == shape5 == (7, 7, ch1x1 + ch3x3 + ch5x5 + pool_proj)
    assert params5 - params3 == (25 - 9) * ch5x5red * ch5x5


def test_adaptive_avg_pool_uses_torchvisions_overlapping_windows():
    x = jnp.broadcast_to(jnp.arange(14.0)[None, :, None, None], (1, 14, 14, 1))
    y = AdaptiveAvgPool(4).apply({}, x)
    assert y.shape == (1, 4, 4, 1)
    np.testing.assert_allclose(y[0, :, 0, 0], [1.5, 4.5, 8.5, 11.5])  # rows 0-3, 3-6, 7-10, 10-13


def test_googlenet_returns_main_logits_and_sows_aux_logits_only_in_training():
    model = GoogLeNet(num_classes=10, aux_heads=True)
    x = jnp.zeros((2, 32, 32, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))

    def run(train: bool):
        return jax.eval_shape(
            lambda v: model.apply(
                v, x, train=train, mutable=["batch_stats", "intermediates"], rngs={"dropout": jax.random.PRNGKey(1)}
            ),
            variables,
        )

    logits, state = run(True)
    assert logits.shape == (2, 10)
    assert [a.shape for a in state["intermediates"]["aux_logits"]] == [(2, 10), (2, 10)]
    logits, state = run(False)
    assert logits.shape == (2, 10)
    assert not state.get("intermediates")


# ----------------------------------------------------------------------------- common model checks


@pytest.mark.slow
def test_resnet20_passes_the_common_model_checks():
    check_model("resnet20", (32, 32, 3))


@pytest.mark.slow
def test_resnet18_passes_the_common_model_checks():
    check_model("resnet18", (32, 32, 3))


@pytest.mark.slow
def test_resnet50_passes_the_common_model_checks():
    check_model("resnet50", (32, 32, 3))


@pytest.mark.slow
def test_googlenet_passes_the_common_model_checks():
    check_model("googlenet", (32, 32, 3))
