"""Key tables: which array of a torchvision or Keras weights file fills which variable of a zoo model.

A table maps every variable of the model ('params/stage1/ConvUnit_0/Conv_0/kernel') to one key of the
file ('features.0.weight') and the transform between the two layouts:
- 'conv': OIHW -> HWIO; 'conv_bgr': the same, and the input channels reversed (Keras' caffe-style
  VGG weights take BGR images; reversed, they take RGB);
- 'dense': (out, in) -> (in, out); 'dense_chw:C': the same for the first dense layer after a
  flatten of a C-channel map, whose inputs torch orders (C, H, W) and flax (H, W, C);
- 'same': as stored (biases, batch-norm vectors, and every Keras array but the first conv).
Keys a file has and no model variable needs are allowed only where `ignored` lists them (batch
norm's step counter; GoogLeNet's auxiliary heads when the model is built without them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from flax import linen as nn

from cnn_jax.errors import UserError
from cnn_jax.models import alexnet, googlenet, resnet, vgg

TORCH_LEAVES = {"kernel": "weight", "bias": "bias", "scale": "weight", "mean": "running_mean", "var": "running_var"}
KERAS_LEAVES = {"kernel": "0", "bias": "1"}
GOOGLENET_BRANCHES = {
    "branch1": "branch1",
    "branch2_reduce": "branch2.0",
    "branch2": "branch2.1",
    "branch3_reduce": "branch3.0",
    "branch3": "branch3.1",
    "branch4": "branch4.1",
}
ALEXNET_FEATURES = {1: 0, 2: 3, 3: 6, 4: 8, 5: 10}  # conv number -> index in torchvision's features
ALEXNET_CLASSIFIER = {"fc6": "classifier.1", "fc7": "classifier.4", "fc8": "classifier.6"}


@dataclass(frozen=True)
class Entry:
    target: str  # 'params/...' or 'batch_stats/...', '/'-joined
    source: str  # the file's key
    transform: str  # conv | conv_bgr | dense | dense_chw:C | same


@dataclass(frozen=True)
class Table:
    entries: tuple[Entry, ...]
    ignored: tuple[str, ...]  # regexes of file keys deliberately left unused
    head: str  # the file key of the classifier's weight, whose class axis gives the class count


def _vgg_torch(model: vgg.VGG) -> Callable[[str], str | None]:
    modules, index = {}, 0
    for stage, convs in enumerate(model.stage_convs, start=1):
        for k in range(convs):
            modules[f"stage{stage}/ConvUnit_{k}/Conv_0"] = f"features.{index}"
            modules[f"stage{stage}/ConvUnit_{k}/BatchNorm_0"] = f"features.{index + 1}"
            index += 3 if model.batch_norm else 2
        index += 1  # the max-pool
    modules.update({f"classifier/Dense_{i}": f"classifier.{j}" for i, j in enumerate((0, 3, 6))})
    return modules.get


def _resnet_torch(model: resnet.ResNet) -> Callable[[str], str | None]:
    def name(module: str) -> str | None:
        fixed = {"stem/Conv_0": "conv1", "stem/BatchNorm_0": "bn1", "fc": "fc"}
        if module in fixed:
            return fixed[module]
        m = re.fullmatch(r"stage(\d)/block(\d+)/(conv(\d)|shortcut/projection)/(Conv_0|BatchNorm_0)", module)
        if not m:
            return None
        block = f"layer{m[1]}.{int(m[2]) - 1}"
        conv = m[5] == "Conv_0"
        if m[4]:
            return f"{block}.{'conv' if conv else 'bn'}{m[4]}"
        return f"{block}.downsample.{0 if conv else 1}"

    return name


def _alexnet_torch(model: alexnet.AlexNetTorchvision) -> Callable[[str], str | None]:
    def name(module: str) -> str | None:
        m = re.fullmatch(r"features/conv(\d)/Conv_0", module)
        return f"features.{ALEXNET_FEATURES[int(m[1])]}" if m else ALEXNET_CLASSIFIER.get(module)

    return name


def _googlenet_torch(model: googlenet.GoogLeNet) -> Callable[[str], str | None]:
    def name(module: str) -> str | None:
        layer = {"Conv_0": "conv", "BatchNorm_0": "bn"}
        if module == "fc" or re.fullmatch(r"aux\d/fc\d", module):
            return module.replace("/", ".")
        m = re.fullmatch(r"(conv\d|aux\d/conv)/(Conv_0|BatchNorm_0)", module)
        if m:
            return f"{m[1].replace('/', '.')}.{layer[m[2]]}"
        m = re.fullmatch(r"(inception\d\w)/(\w+)/(Conv_0|BatchNorm_0)", module)
        if m and m[2] in GOOGLENET_BRANCHES:
            return f"{m[1]}.{GOOGLENET_BRANCHES[m[2]]}.{layer[m[3]]}"
        return None

    return name


def keras_layer_names(model: vgg.VGG) -> dict[str, list[str]]:
    """The names of Keras' VGG layers with weights, by Keras layer class, in the model's order."""
    convs = [f"block{s}_conv{k}" for s, n in enumerate(model.stage_convs, start=1) for k in range(1, n + 1)]
    return {"conv2d": convs, "dense": ["fc1", "fc2", "predictions"]}


def rename_keras3(arrays: dict[str, np.ndarray], model: nn.Module) -> dict[str, np.ndarray]:
    """A Keras 3 `.weights.h5` names layers by class and creation order ('conv2d', 'conv2d_1', ..., 'dense');
    these become the Keras applications' layer names, so one table serves both layouts."""
    if not isinstance(model, vgg.VGG) or not any(k.startswith("conv2d/") for k in arrays):
        return arrays
    renamed = {}
    for key, value in arrays.items():
        layer, index = key.rsplit("/", 1)
        stem, _, suffix = layer.rpartition("_")
        kind, ordinal = (stem, int(suffix)) if suffix.isdigit() else (layer, 0)
        names = keras_layer_names(model).get(kind, [])
        renamed[f"{names[ordinal]}/{index}" if ordinal < len(names) else key] = value
    return renamed


def _vgg_keras(model: vgg.VGG) -> Callable[[str], str | None]:
    def name(module: str) -> str | None:
        m = re.fullmatch(r"stage(\d)/ConvUnit_(\d)/Conv_0", module)
        if m:
            return f"block{m[1]}_conv{int(m[2]) + 1}"
        return {f"classifier/Dense_{i}": n for i, n in enumerate(("fc1", "fc2", "predictions"))}.get(module)

    return name


# layout -> model family -> (module namer, dense layers after a flatten: module -> channels, head module)
FAMILIES = {
    "torchvision": {
        vgg.VGG: (_vgg_torch, {"classifier/Dense_0": 512}, "classifier/Dense_2"),
        resnet.ResNet: (_resnet_torch, {}, "fc"),
        alexnet.AlexNetTorchvision: (_alexnet_torch, {"fc6": 256}, "fc8"),
        googlenet.GoogLeNet: (_googlenet_torch, {"aux1/fc1": 128, "aux2/fc1": 128}, "fc"),
    },
    "keras": {vgg.VGG: (_vgg_keras, {}, "classifier/Dense_2")},
}
KERAS_FIRST_CONV = "stage1/ConvUnit_0/Conv_0"


def supported(layout: str) -> str:
    """The models whose weights a layout can fill, for error messages."""
    if layout == "keras":
        return "vgg16 and vgg19 (Keras applications; their other models differ from the zoo's)"
    return "vgg11/13/16/19 (+_bn), resnet18/34/50/101/152, alexnet_torchvision, googlenet"


def key_table(model: nn.Module, layout: str, targets: list[str], model_name: str) -> Table:
    """The table for a zoo model (a built module) whose variables are `targets` ('/'-joined)."""
    family = FAMILIES[layout].get(type(model))
    if family is None or getattr(model, "cifar_head", False):
        raise UserError(f"model '{model_name}' cannot take {layout} weights; supported: {supported(layout)}.")
    namer, flattens, head = family[0](model), family[1], family[2]
    leaves = TORCH_LEAVES if layout == "torchvision" else KERAS_LEAVES
    join = "." if layout == "torchvision" else "/"
    entries = []
    for target in targets:
        module, leaf = target.split("/", 1)[1].rsplit("/", 1)
        source_module = namer(module)
        if source_module is None or leaf not in leaves:
            raise UserError(
                f"model '{model_name}' has a layer the {layout} layout does not have ('{target}'); "
                f"a model with non-default fields (e.g. model.downsample, model.kernel_scheme) cannot take "
                "pretrained weights of the original architecture."
            )
        entries.append(
            Entry(target, f"{source_module}{join}{leaves[leaf]}", _transform(layout, module, leaf, flattens))
        )
    head_key = f"{namer(head)}{join}{leaves['kernel']}"
    ignored = (r".*\.num_batches_tracked",) if layout == "torchvision" else ()
    if isinstance(model, googlenet.GoogLeNet) and not model.aux_heads:
        ignored += (r"aux[12]\..*",)
    return Table(tuple(entries), ignored, head_key)


def _transform(layout: str, module: str, leaf: str, flattens: dict[str, int]) -> str:
    if leaf != "kernel":
        return "same"
    if layout == "keras":
        return "conv_bgr" if module == KERAS_FIRST_CONV else "same"
    if module in flattens:
        return f"dense_chw:{flattens[module]}"
    return "conv" if module.split("/")[-1] == "Conv_0" else "dense"


def convert(array: np.ndarray, transform: str) -> np.ndarray:
    """A file's array in the zoo model's layout (see the module docstring)."""
    if transform == "same":
        return array
    if transform == "conv":
        return array.transpose(2, 3, 1, 0)
    if transform == "conv_bgr":
        return array[:, :, ::-1, :]
    if transform == "dense":
        return array.T
    channels = int(transform.split(":")[1])
    out, inputs = array.shape
    side = int(round((inputs // channels) ** 0.5))
    if channels * side * side != inputs:
        return array.T  # not a square C x H x W map: the shape check reports it
    return array.reshape(out, channels, side, side).transpose(2, 3, 1, 0).reshape(inputs, out)
