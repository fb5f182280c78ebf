"""The model section of a config is the chosen model's keyword arguments: checked against the
module's own fields, normalized, and the same switch name means the same thing in every model."""

from __future__ import annotations

import pytest

from cnn_jax import cli, validation
from cnn_jax import config as config_lib
from cnn_jax.errors import UserError
from cnn_jax.models import available_models, build_model, model_entry, model_fields
from cnn_jax.models.summary import summarize


def validated(**fields):
    config = config_lib.apply_overrides(config_lib.default_config(), {f"model.{k}": v for k, v in fields.items()})
    validation.validate(config)
    return config


def test_a_misspelt_field_names_the_model_its_fields_and_the_closest():
    with pytest.raises(
        UserError,
        match=r"model 'ablation_net' has no field 'model.widht'. Did you mean 'width'\? "
        r"Its fields: activation, batch_norm, .*width\.",
    ):
        validated(name="ablation_net", widht="64")


def test_values_from_the_command_line_take_the_models_types_and_equal_configs_get_equal_run_ids():
    from_text = validated(name="ablation_net", dropout="0", width="16", kernel_scheme="3x3x2", batch_norm="True")
    typed = validated(name="ablation_net", dropout=0.0, width=16, kernel_scheme="3x3x2", batch_norm=True)
    assert from_text.model.dropout == 0.0 and type(from_text.model.dropout) is float
    assert validated(name="ablation_net", batch_norm="yes").model.batch_norm is True
    assert config_lib.run_id(from_text) == config_lib.run_id(typed)
    assert config_lib.run_id(config_lib.from_json(config_lib.to_json(typed))) == config_lib.run_id(typed)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": "ablation_net", "width": "1.5"}, "'model.width' = 1.5 has type float; expected int"),
        ({"name": "ablation_net", "dropout": "1.0"}, r"'model.dropout' = 1.0: must be in \[0, 1\)"),
        ({"name": "ablation_net", "stages": "0"}, "'model.stages' = 0: must be > 0"),
        ({"name": "ablation_net", "head": "mpl"}, "unknown value 'mpl'. Did you mean 'mlp'"),
        ({"name": "vgg13", "kernel_scheme": "3x3x2"}, r"unknown value '3x3x2'.*Allowed: 3x3, 5x5"),
        ({"name": "seed_cnn", "num_classes": "3"}, "the dataset's class count"),
        ({"name": "ablation_net", "pool_window": "3", "downsample": "stride"}, "needs pooling"),
        ({"name": "seed_cnn", "conv1.features": "3"}, "model fields are not nested"),
        ({"name": "resnet18", "stage_sizes": "('a', 1)"}, r"'model.stage_sizes\[0\]' = 'a' has type str; expected int"),
    ],
)
def test_impossible_model_fields_fail_validation_by_name(fields, message):
    with pytest.raises(UserError, match=message):
        validated(**fields)


SWITCHES = ("downsample", "kernel_scheme", "batch_norm", "dropout", "pool_window")


def test_each_switch_keeps_one_name_and_type_in_every_model_that_has_it():
    for switch in SWITCHES:
        kinds = {type(model_fields(name)[switch]) for name in available_models() if switch in model_fields(name)}
        assert len(kinds) == 1, (switch, kinds)


@pytest.mark.parametrize("name", ["seed_cnn", "lenet5", "ablation_net", "vgg11_cifar", "alexnet", "resnet18"])
def test_one_downsample_axis_applies_to_every_model_with_the_switch(name):
    assert validated(name=name, downsample="avg").model.downsample == "avg"


@pytest.mark.parametrize(
    "name, kind",
    [(name, kind) for name in ("ablation_net", "seed_cnn", "lenet5", "vgg11_cifar") for kind in ("l2", "strided_conv")]
    + [("alexnet", "l2"), ("alexnet_torchvision", "l2")],
)
def test_the_new_downsample_kinds_apply_where_the_model_has_them(name, kind):
    assert validated(name=name, downsample=kind).model.downsample == kind


@pytest.mark.parametrize(
    "name, allowed",
    [
        ("alexnet", "avg, l2, max, none, stride"),  # conv1 has stride 4 before an overlapping pool
        ("alexnet_torchvision", "avg, l2, max, none, stride"),
        ("resnet18", "avg, max, none, stride"),  # the stem pool
    ],
)
def test_a_model_that_cannot_apply_strided_conv_refuses_it_with_its_allowed_kinds(name, allowed):
    with pytest.raises(UserError, match=f"unknown value 'strided_conv'.*Allowed: {allowed}\\."):
        validated(name=name, downsample="strided_conv")


@pytest.mark.parametrize("name", ["lenet5_1998", "resnet20", "allcnn_all_c", "googlenet"])
def test_a_model_without_the_switch_refuses_it_by_name(name):
    with pytest.raises(UserError, match=f"model '{name}' has no field 'model.downsample'"):
        validated(name=name, downsample="avg")


def test_vgg_5x5_replaces_each_pair_of_3x3_convs_with_the_same_receptive_field():
    """Simonyan & Zisserman Sec. 4.1: net B with one 5x5 conv in place of each pair of 3x3 convs."""
    shape = (32, 32, 3)
    stacked = summarize(build_model("vgg13_cifar", num_classes=10), shape)
    single = summarize(build_model({"name": "vgg13_cifar", "kernel_scheme": "5x5"}, num_classes=10), shape)
    widths = (3, 64, 128, 256, 512, 512)
    five_by_five = sum(25 * c_in * c_out + c_out for c_in, c_out in zip(widths, widths[1:]))
    assert single.trainable_params == five_by_five + 512 * 10 + 10
    conv_rf = lambda s: [r.receptive_field for r in s.rows if r.kind == "Conv"]  # noqa: E731
    assert conv_rf(single) == conv_rf(stacked)[1::2]  # each 5x5 sees what its pair of 3x3 saw
    vgg16 = summarize(build_model({"name": "vgg16_cifar", "kernel_scheme": "5x5"}, num_classes=10), shape)
    assert [r.path.split("/")[-2] for r in vgg16.rows if r.kind == "Conv"].count("ConvUnit_1") == 3  # 3 odd stages


def test_summary_uses_the_models_own_input_and_classes(capsys):
    assert cli.main(["summary", "alexnet"]) == 0
    out = capsys.readouterr().out
    assert "alexnet on 227x227x3" in out and "total params: 62,378,344" in out


def test_models_command_lists_a_models_fields_with_their_values(capsys):
    assert cli.main(["models", "vgg16"]) == 0
    out = capsys.readouterr().out
    assert "input 224x224x3, 1000 classes" in out and "kernel_scheme" in out and "'3x3'" in out
    assert model_entry("vgg16").input_shape == (224, 224, 3)
