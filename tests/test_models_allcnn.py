"""The All-CNN family (Springenberg et al. 2014, arXiv:1412.6806) and ablation_net: exact parameter
counts, the paper's geometry, and the common model checks."""

from __future__ import annotations

import pytest

from cnn_jax.config import apply_overrides, default_config
from cnn_jax.errors import UserError
from cnn_jax.models import build_model
from cnn_jax.models.summary import summarize

from model_checks import check_model, count_params

CIFAR = (32, 32, 3)

# Per-layer counts (weights + biases) for 10 classes, from the layers of the paper's Tables 1 and 2.
CONV_3_96 = 3 * 9 * 96 + 96  # 2,688
CONV_96_96 = 96 * 9 * 96 + 96  # 83,040
CONV_96_192 = 96 * 9 * 192 + 192  # 166,080
CONV_192_192 = 192 * 9 * 192 + 192  # 331,968
CONV1X1_192 = 192 * 192 + 192  # 37,056
CONV1X1_10 = 192 * 10 + 10  # 1,930
MODEL_C = CONV_3_96 + CONV_96_96 + CONV_96_192 + 2 * CONV_192_192 + CONV1X1_192 + CONV1X1_10
EXTRA_CONVS = CONV_96_96 + CONV_192_192  # one more 3x3 conv per stage (ConvPool) or instead of each pool (All)


@pytest.mark.parametrize(
    "name, expected, paper_table_3",
    [
        ("allcnn_model_c", 954_730, "~1.3M"),  # the paper's rounding is off here: Table 1's layers give 0.95M
        ("allcnn_strided_c", 954_730, "~1.3M"),  # stride moves, no weights change
        ("allcnn_convpool_c", 1_369_738, "~1.4M"),
        ("allcnn_all_c", 1_369_738, "~1.4M"),
    ],
)
def test_allcnn_parameter_counts_are_exact(name, expected, paper_table_3):
    assert MODEL_C == 954_730 and MODEL_C + EXTRA_CONVS == 1_369_738
    assert count_params(name, CIFAR, 10) == (expected, 0)


@pytest.mark.parametrize("name", ["allcnn_model_c", "allcnn_strided_c", "allcnn_convpool_c", "allcnn_all_c"])
def test_allcnn_geometry_matches_the_paper_32_16_8_then_global_average_over_6x6(name):
    rows = summarize(build_model(name, num_classes=10), CIFAR).rows
    spatial = [r.output_shape[:2] for r in rows if len(r.output_shape) == 3]
    assert spatial[0] == (32, 32) and (16, 16) in spatial and (8, 8) in spatial
    assert rows[-2].output_shape == (6, 6, 10) and rows[-1].output_shape == (10,)


def test_allcnn_dropout_is_the_papers_unless_overridden():
    default = build_model("allcnn_all_c", num_classes=10)
    assert default.dropout == 0.5
    config = apply_overrides(default_config(), {"model.name": "allcnn_all_c", "model.dropout": 0.3})
    assert build_model(config.model, num_classes=10).dropout == 0.3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["allcnn_model_c", "allcnn_strided_c", "allcnn_convpool_c", "allcnn_all_c"])
def test_allcnn_passes_the_common_model_checks(name):
    check_model(name, CIFAR)


# ablation_net: counts written out layer by layer (conv k*k*c_in*c_out + c_out; dense in*out + out).
SMALL = dict(width=8, stages=2)


def build_model_with(**options):
    overrides = {"model.name": "ablation_net", **{f"model.{k}": v for k, v in {**SMALL, **options}.items()}}
    return build_model(apply_overrides(default_config(), overrides).model, num_classes=10)


@pytest.mark.parametrize(
    "options, expected",
    [
        ({}, (9 * 1 * 8 + 8) + (9 * 8 * 16 + 16) + (16 * 10 + 10)),
        ({"downsample": "avg"}, (9 * 1 * 8 + 8) + (9 * 8 * 16 + 16) + (16 * 10 + 10)),
        ({"downsample": "l2"}, (9 * 1 * 8 + 8) + (9 * 8 * 16 + 16) + (16 * 10 + 10)),
        ({"downsample": "strided_conv"}, (9 * 1 * 8 + 8) + (9 * 8 * 16 + 16) + (16 * 10 + 10)),  # the stride moves
        (
            {"downsample": "stride"},  # plus a 3x3 conv keeping the channels after each stage
            (9 * 1 * 8 + 8) + (9 * 8 * 8 + 8) + (9 * 8 * 16 + 16) + (9 * 16 * 16 + 16) + (16 * 10 + 10),
        ),
        ({"kernel_scheme": "5x5"}, (25 * 1 * 8 + 8) + (25 * 8 * 16 + 16) + (16 * 10 + 10)),
        (
            {"kernel_scheme": "3x3x2", "convs_per_stage": 2},
            (9 * 1 * 8 + 8) + 3 * (9 * 8 * 8 + 8) + (9 * 8 * 16 + 16) + 3 * (9 * 16 * 16 + 16) + (16 * 10 + 10),
        ),
        ({"head": "mlp"}, (9 * 1 * 8 + 8) + (9 * 8 * 16 + 16) + (7 * 7 * 16 * 256 + 256) + (256 * 10 + 10)),
    ],
)
def test_ablation_net_counts_follow_the_formula(options, expected):
    assert count_params("ablation_net", (28, 28, 1), 10, **SMALL, **options) == (expected, 0)


FASHION_MNIST = (28, 28, 1)


def test_ablation_net_downsample_kinds_without_a_layer_of_weights_have_equal_parameter_counts():
    """stages=3, width=32 on Fashion-MNIST: max, avg and L2 pooling have no weights and 'strided_conv' moves
    the stride into the stage's conv (Springenberg et al.'s Strided-CNN); 'stride' adds a 3x3 conv per stage."""
    convs = (9 * 1 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 128 + 128)
    head = 128 * 10 + 10
    extra_convs = sum(9 * c * c + c for c in (32, 64, 128))  # 3x3, channels kept
    counts = {
        kind: count_params("ablation_net", FASHION_MNIST, 10, stages=3, width=32, downsample=kind)
        for kind in ("max", "avg", "l2", "strided_conv", "stride")
    }
    assert convs + head == 93_962 and extra_convs == 193_760
    assert counts == {
        "max": (93_962, 0),
        "avg": (93_962, 0),
        "l2": (93_962, 0),
        "strided_conv": (93_962, 0),
        "stride": (93_962 + 193_760, 0),
    }


def stage_shapes(rows, stages):
    """The output shape of each stage: that of its last layer."""
    return [[r.output_shape for r in rows if r.path.startswith(f"stage{i}/")][-1] for i in range(1, stages + 1)]


@pytest.mark.parametrize("size", [28, 27, 13, 9])
@pytest.mark.parametrize(
    "options",
    [{}, {"kernel_scheme": "5x5"}, {"kernel_scheme": "7x7"}, {"kernel_scheme": "3x3x2", "convs_per_stage": 2}],
)
def test_ablation_net_strided_conv_gives_the_pools_shapes_on_even_and_odd_sizes(size, options):
    """floor(H / 2) at every stage, as the 2x2 pools (SAME 'stride' gives ceil(H / 2)); with the MLP head the
    flatten size, and so the parameter count, is the same as max pooling's."""
    shape, common = (size, size, 1), dict(width=4, stages=3, head="mlp", **options)
    pooled = summarize(build_model_with(**common, downsample="max"), shape)
    strided = summarize(build_model_with(**common, downsample="strided_conv"), shape)
    assert stage_shapes(strided.rows, 3) == stage_shapes(pooled.rows, 3)
    assert [s[0] for s in stage_shapes(strided.rows, 3)] == [size // 2, size // 4, size // 8]
    assert strided.trainable_params == pooled.trainable_params
    assert strided.flops < pooled.flops


def test_ablation_net_batch_norm_drops_conv_biases_and_adds_scale_shift_and_statistics():
    trainable = (9 * 1 * 8 + 2 * 8) + (9 * 8 * 16 + 2 * 16) + (16 * 10 + 10)
    assert count_params("ablation_net", (28, 28, 1), 10, **SMALL, batch_norm=True) == (trainable, 2 * 8 + 2 * 16)


@pytest.mark.parametrize("big, k, stacked, n", [("5x5", 5, "3x3x2", 2), ("7x7", 7, "3x3x3", 3)])
def test_stacked_3x3_convs_have_fewer_weights_than_one_big_kernel_of_equal_receptive_field(big, k, stacked, n):
    c = 16  # equal width in and out: a c-channel image, one stage of width c
    head = c * 10 + 10
    big_count, _ = count_params("ablation_net", (8, 8, c), 10, width=c, stages=1, kernel_scheme=big)
    stacked_count, _ = count_params("ablation_net", (8, 8, c), 10, width=c, stages=1, kernel_scheme=stacked)
    assert big_count == (k * k * c * c + c) + head  # 5x5: 25 c^2; 7x7: 49 c^2
    assert stacked_count == n * (9 * c * c + c) + head  # 3x3x2: 2*9 c^2 = 18 c^2; 3x3x3: 27 c^2
    assert stacked_count < big_count


@pytest.mark.parametrize(
    "options",
    [  # each downsample kind and each kernel scheme once; one stage keeps it fast; the fast tier runs the last
        pytest.param({"downsample": "max", "kernel_scheme": "5x5", "stages": 1}, marks=pytest.mark.slow),
        pytest.param({"downsample": "avg", "kernel_scheme": "3x3x2", "stages": 1}, marks=pytest.mark.slow),
        pytest.param({"downsample": "stride", "kernel_scheme": "7x7", "stages": 1}, marks=pytest.mark.slow),
        pytest.param({"downsample": "none", "kernel_scheme": "3x3x3", "stages": 1}, marks=pytest.mark.slow),
        pytest.param({"downsample": "l2", "pool_window": 3, "stages": 1}, marks=pytest.mark.slow),
        {"downsample": "strided_conv", "kernel_scheme": "3x3x2", "stages": 2, "batch_norm": True},
        {"stages": 2, "pool_window": 3, "batch_norm": True, "head": "mlp", "dropout": 0.5},
    ],
)
def test_ablation_net_passes_the_common_model_checks(options):
    check_model("ablation_net", (12, 12, 1), width=4, **options)


def test_ablation_net_overlapping_pool_window_3_gives_floor_half_minus_one():
    rows = summarize(build_model_with(pool_window=3), (28, 28, 1)).rows
    pools = [r for r in rows if r.kind == "MaxPool"]
    assert [p.output_shape[:2] for p in pools] == [(13, 13), (6, 6)]


@pytest.mark.parametrize("downsample", ["stride", "strided_conv", "none"])
def test_ablation_net_rejects_a_pool_window_without_pooling(downsample):
    with pytest.raises(UserError, match="pool_window.*use max, avg or l2"):
        build_model_with(pool_window=3, downsample=downsample)


def test_ablation_net_l2_pool_takes_the_pool_window():
    rows = summarize(build_model_with(pool_window=3, downsample="l2"), (28, 28, 1)).rows
    assert [r.output_shape[:2] for r in rows if r.kind == "L2Pool"] == [(13, 13), (6, 6)]
