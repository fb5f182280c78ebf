"""Every registered model passes the common checks; family test files cover some of them already."""

from __future__ import annotations

import pytest

from cnn_jax.models import available_models, build_model, model_entry
from cnn_jax.models.summary import summarize

from model_checks import check_model

CHECKED_IN_FAMILY_FILES = {
    "seed_cnn",
    "lenet5",
    "lenet5_1998",
    "alexnet",
    "alexnet_torchvision",
    "vgg11_bn_cifar",
    "resnet18",
    "resnet20",
    "resnet50",
    "googlenet",
    "allcnn_model_c",
    "allcnn_strided_c",
    "allcnn_convpool_c",
    "allcnn_all_c",
    "ablation_net",
}
# Deeper copies of a builder already checked here or in the family files (same code, another depth
# tuple): their exact parameter counts are checked by the summary test below, their train step is not.
DEPTH_VARIANTS = {
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg19",
    "vgg19_bn",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet101",
    "resnet152",
}


def small_input(name: str) -> tuple[int, int, int]:
    return (32, 32, 1) if name.startswith("lenet") else (32, 32, 3)


def test_every_model_has_a_one_line_description():
    for name in available_models():
        description = model_entry(name).description
        assert description and "\n" not in description, name


@pytest.mark.slow  # a compiled train step per model; tests/test_models.py keeps seed_cnn's in the fast tier
@pytest.mark.parametrize("name", [n for n in available_models() if n not in CHECKED_IN_FAMILY_FILES | DEPTH_VARIANTS])
def test_model_passes_the_common_checks(name):
    check_model(name, small_input(name))


def published_size(name: str) -> str:
    """Fast tier: the models published for small inputs; the ImageNet-size ones are slow to trace."""
    return "small" if model_entry(name).input_shape[0] <= 32 else "imagenet"


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if published_size(n) == "imagenet" else n for n in available_models()],
)
def test_summary_table_of_every_model_accounts_for_every_parameter(name, capsys):
    from cnn_jax import cli

    shape, classes = model_entry(name).input_shape, model_entry(name).num_classes
    args = ["summary", name, "--input", "x".join(map(str, shape)), "--num-classes", str(classes)]
    assert cli.main(args) == 0
    table = capsys.readouterr().out
    print(table)
    summary = summarize(build_model(name, num_classes=classes), shape, name)
    assert sum(r.params for r in summary.rows) == summary.trainable_params
    assert sum(r.non_trainable for r in summary.rows) == summary.non_trainable_params
    assert f"total params: {summary.total_params:,}" in table and summary.flops > 0
