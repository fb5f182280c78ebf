"""Every registered model passes the common checks; family test files cover some of them already."""

from __future__ import annotations

import pytest
from model_checks import check_model

from cnn_jax.models import available_models, model_entry

CHECKED_IN_FAMILY_FILES = {
    "seed_cnn", "lenet5", "lenet5_1998", "alexnet", "alexnet_torchvision", "vgg11_bn_cifar", "resnet18",
    "resnet20", "resnet50", "googlenet", "allcnn_model_c", "allcnn_strided_c", "allcnn_convpool_c",
    "allcnn_all_c", "ablation_net",
}
SLOW = ("vgg11", "vgg13", "vgg16", "vgg19", "resnet101", "resnet152")  # 100M+ parameters or very deep


def small_input(name: str) -> tuple[int, int, int]:
    return (32, 32, 1) if name.startswith("lenet") else (32, 32, 3)


def test_every_model_has_a_one_line_description():
    for name in available_models():
        description = model_entry(name).description
        assert description and "\n" not in description, name


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n.removesuffix("_bn") in SLOW else n
    for n in available_models() if n not in CHECKED_IN_FAMILY_FILES
])
def test_model_passes_the_common_checks(name):
    check_model(name, small_input(name))
