"""cnn_jax.models.summary through real models: receptive field and jump, per-layer shapes, parameters and FLOPs,
geometry errors before any compute, the text table, and the `summary` command."""

from __future__ import annotations

import pytest

from cnn_jax import cli
from cnn_jax.config import apply_overrides, default_config
from cnn_jax.errors import UserError
from cnn_jax.models import build_model
from cnn_jax.models.summary import Summary, summarize


def ablation_model(input_shape=(28, 28, 1), **options):
    overrides = {"model.name": "ablation_net", **{f"model.{k}": v for k, v in options.items()}}
    return build_model(apply_overrides(default_config(), overrides).model, num_classes=10)


def ablation_summary(input_shape=(28, 28, 1), **options) -> Summary:
    return summarize(ablation_model(input_shape, **options), input_shape, "ablation_net")


def conv_rows(summary: Summary):
    return [r for r in summary.rows if r.kind == "Conv"]


@pytest.mark.parametrize(
    "scheme, receptive_fields",
    [
        ("5x5", [5]),
        ("3x3x2", [3, 5]),  # one 5x5 and two stacked 3x3 both see 5x5 pixels
        ("7x7", [7]),
        ("3x3x3", [3, 5, 7]),  # one 7x7 and three stacked 3x3 both see 7x7
    ],
)
def test_receptive_field_of_a_kernel_scheme(scheme, receptive_fields):
    summary = ablation_summary(stages=1, width=4, kernel_scheme=scheme, downsample="none")
    assert [r.receptive_field for r in conv_rows(summary)] == receptive_fields
    assert all(r.jump == 1 for r in conv_rows(summary))


@pytest.mark.parametrize("downsample", ["max", "avg", "l2", "stride"])
def test_jump_doubles_after_each_stride_2_layer(downsample):
    summary = ablation_summary(stages=3, width=4, downsample=downsample)
    downsamplers = [r for r in summary.rows if "Downsample" in r.path]
    assert [r.jump for r in downsamplers] == [2, 4, 8]
    stage_convs = [r for r in conv_rows(summary) if "ConvStack" in r.path]
    assert [r.jump for r in stage_convs] == [1, 2, 4]
    # r_out = r_in + (k - 1) * j_in, stage by stage: conv 3x3, then a 2x2 pool or a 3x3 stride-2 conv
    pool = [3, 4, 8, 10, 18, 22]
    expected = {"max": pool, "avg": pool, "l2": pool, "stride": [3, 5, 9, 13, 21, 29]}
    assert [r.receptive_field for r in summary.rows if r.jump is not None] == expected[downsample]
    if downsample == "l2":
        assert [r.kind for r in downsamplers] == ["L2Pool"] * 3 and all(r.flops == 0 for r in downsamplers)


def test_strided_conv_doubles_the_jump_at_each_stage_conv_itself():
    summary = ablation_summary(stages=3, width=4, downsample="strided_conv")
    assert not [r for r in summary.rows if "Downsample" in r.path]  # no layer of its own
    convs = conv_rows(summary)
    assert [r.path for r in convs] == [f"stage{i}/ConvStack_0/ConvUnit_0/Conv_0" for i in (1, 2, 3)]
    # r_out = r_in + (k - 1) * j_in with the jump doubled by each 3x3 stride-2 conv: 3, 3 + 2 * 2, 7 + 2 * 4
    assert [(r.receptive_field, r.jump) for r in convs] == [(3, 2), (7, 4), (15, 8)]
    assert [r.output_shape[:2] for r in convs] == [(14, 14), (7, 7), (3, 3)]  # as the pools: 28 -> 14 -> 7 -> 3


def test_downsample_none_keeps_the_jump_at_1():
    assert {r.jump for r in conv_rows(ablation_summary(stages=3, width=4, downsample="none"))} == {1}


def test_seed_cnn_rows_shapes_and_parameters():
    summary = summarize(build_model("seed_cnn", num_classes=10), (28, 28, 1), "seed_cnn")
    assert [r.output_shape for r in summary.rows] == [
        (26, 26, 64),
        (13, 13, 64),
        (11, 11, 128),
        (5, 5, 128),
        (3, 3, 256),
        (256,),
        (10,),
    ]
    assert [r.params for r in summary.rows] == [640, 0, 73_856, 0, 295_168, 0, 2_570]
    assert summary.total_params == summary.trainable_params == 372_234
    assert [r.receptive_field for r in summary.rows] == [3, 4, 8, 10, 18, None, None]


@pytest.mark.parametrize(
    "build, shape, layer, where",
    [
        (
            lambda: build_model("seed_cnn", num_classes=10),
            (14, 14, 1),
            "conv3/Conv_0",
            "2x2 input (shape (2, 2, 128))",
        ),  # VALID 3x3 on 2x2: 14 -> 12 -> 6 -> 4 -> 2
        (
            lambda: ablation_model(stages=5, width=4),
            (28, 28, 1),
            "stage5/Downsample_0/Pool_0",
            "1x1 input (shape (1, 1, 64))",
        ),  # 28 -> 14 -> 7 -> 3 -> 1, no 2x2 window
    ],
)
def test_impossible_geometry_is_a_user_error_naming_layer_and_shape(build, shape, layer, where):
    with pytest.raises(UserError) as error:
        summarize(build(), shape)
    assert f"layer '{layer}'" in str(error.value) and where in str(error.value)


def test_geometry_error_comes_before_any_compute():
    # ~26 G parameters (stage 5 has 65,536 channels): only an abstract trace can get to stage 5's pool.
    with pytest.raises(UserError, match="stage5/Downsample_0/Pool_0"):
        summarize(ablation_model(stages=5, width=4096), (28, 28, 1))


def test_conv_flops_are_two_times_output_pixels_times_weights():
    seed = summarize(build_model("seed_cnn", num_classes=10), (28, 28, 1))
    conv1, _, conv2, _, conv3, _, dense = seed.rows
    assert conv1.flops == 2 * 26 * 26 * 64 * 3 * 3 * 1
    assert conv2.flops == 2 * 11 * 11 * 128 * 3 * 3 * 64
    assert conv3.flops == 2 * 3 * 3 * 256 * 3 * 3 * 128
    assert dense.flops == 2 * 256 * 10
    assert seed.flops == sum(r.flops for r in seed.rows)
    strided = conv_rows(ablation_summary((32, 32, 3), stages=1, width=8, kernel_scheme="5x5", downsample="stride"))
    assert [r.flops for r in strided] == [2 * 32 * 32 * 8 * 5 * 5 * 3, 2 * 16 * 16 * 8 * 3 * 3 * 8]


def conv_flops(size: int, c_in: int, c_out: int, kernel: int = 3) -> int:
    """A conv with a size x size x c_out output: 2 FLOPs per multiply-add, k * k * c_in of them per output."""
    return 2 * size * size * c_out * kernel * kernel * c_in


def test_flops_of_each_downsample_kind_for_ablation_net_on_fashion_mnist():
    """ablation_net(stages=3, width=32) on 28x28x1: maps 28 -> 14 -> 7 -> 3 with every kind but 'stride'
    (whose SAME stride-2 conv makes 7 -> 4) and 'none'; pools count no FLOPs."""
    head = 2 * 128 * 10
    convs_then_pool = conv_flops(28, 1, 32) + conv_flops(14, 32, 64) + conv_flops(7, 64, 128)
    expected = {
        "max": convs_then_pool + head,
        "avg": convs_then_pool + head,
        "l2": convs_then_pool + head,
        "stride": convs_then_pool + conv_flops(14, 32, 32) + conv_flops(7, 64, 64) + conv_flops(4, 128, 128) + head,
        "strided_conv": conv_flops(14, 1, 32) + conv_flops(7, 32, 64) + conv_flops(3, 64, 128) + head,
        "none": conv_flops(28, 1, 32) + conv_flops(28, 32, 64) + conv_flops(28, 64, 128) + head,
    }
    summaries = {kind: ablation_summary((28, 28, 1), stages=3, width=32, downsample=kind) for kind in expected}
    assert {kind: s.flops for kind, s in summaries.items()} == expected
    assert expected == {
        "max": 14_904_832,
        "avg": 14_904_832,
        "l2": 14_904_832,
        "stride": 26_848_768,
        "strided_conv": 3_248_896,
        "none": 144_961_024,
    }
    conv = {kind: sum(r.flops for r in conv_rows(s)) for kind, s in summaries.items()}
    assert conv["strided_conv"] < conv["max"] / 4  # each conv computes at its stage's output resolution


def test_table_has_every_layer_and_the_totals():
    summary = ablation_summary(stages=2, width=8, batch_norm=True)
    table = summary.table()
    assert all(r.path in table for r in summary.rows)
    assert f"total params: {summary.total_params:,}" in table
    assert f"trainable: {summary.trainable_params:,}" in table
    assert f"non-trainable: {summary.non_trainable_params:,}" in table and summary.non_trainable_params == 2 * (8 + 16)
    assert f"FLOPs per image: {summary.flops:,}" in table


def test_cli_summary_prints_the_table(capsys):
    assert cli.main(["summary", "ablation_net", "--input", "32x32x3", "--config.model.downsample=stride"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ablation_net on 32x32x3")
    assert "stage3/Downsample_0/ConvUnit_0/Conv_0" in out and "total params:" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["summary", "ablation_net", "--input", "32x32"], "--input '32x32'"),
        (["summary", "ablation_net", "--input", "28x28x1", "--config.model.stages=5"], "stage5/Downsample_0/Pool_0"),
    ],
)
def test_cli_summary_user_errors_exit_2(capsys, argv, message):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
