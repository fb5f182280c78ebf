"""Import a weights file into a zoo model: every variable filled, every key of the file accounted for.

`import_weights(file, model_section)` reads the file (files.py), builds the model of the section with
the file's class count, fills each of its variables through the key table (tables.py) and returns
them with the preprocessing the weights were trained with. Anything that does not fit (a key
missing, a key left over, a shape that differs) is one UserError naming the first few of each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from flax import linen as nn
from flax import traverse_util

from cnn_jax.errors import UserError, problem_list
from cnn_jax.loading import expected_variables
from cnn_jax.models import build_model, googlenet
from cnn_jax.models.registry import check_model_config, model_entry
from cnn_jax.weights import files, tables

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision.transforms.Normalize values of every torchvision model page
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)  # keras.applications.imagenet_utils, mode 'caffe' (there in BGR order)


@dataclass(frozen=True)
class Preprocessing:
    """What the weights expect: x = (pixels / 255 - mean) / std per RGB channel, at input_size x input_size."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int
    description: str

    def record(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "input_size": self.input_size, "how": self.description}


TORCHVISION = Preprocessing(
    IMAGENET_MEAN,
    IMAGENET_STD,
    224,
    "torchvision: RGB pixels / 255, minus the ImageNet mean, divided by its std",
)
# torchvision builds its pretrained GoogLeNet with transform_input=True, which turns ImageNet-normalized
# inputs into (pixels / 255 - 0.5) / 0.5 before the first conv (the weights were ported from TensorFlow);
# the zoo's GoogLeNet has no such step, so the import normalizes that way directly.
TORCHVISION_GOOGLENET = Preprocessing(
    (0.5, 0.5, 0.5),
    (0.5, 0.5, 0.5),
    224,
    "torchvision GoogLeNet (transform_input): RGB pixels / 255, minus 0.5, divided by 0.5",
)
KERAS_CAFFE = Preprocessing(
    tuple(m / 255 for m in CAFFE_MEAN_RGB),
    (1 / 255,) * 3,
    224,
    "Keras 'caffe' mode: pixels 0..255 minus the ImageNet mean (123.68, 116.779, 103.939 for R, G, B); the "
    "weights' BGR channel order is reversed at import, so images stay RGB",
)


@dataclass(frozen=True)
class ImportedWeights:
    model: nn.Module  # built with the file's class count
    variables: dict[str, Any]  # {"params": ..., "batch_stats": ...} as float32 numpy arrays
    preprocessing: Preprocessing
    record: dict  # file, format, sha256, model, classes, ignored keys, preprocessing


def import_weights(spec: str, model_section: Any) -> ImportedWeights:
    """Read the weights file `spec` (a path, or a file name in the download caches) into the zoo model
    `model_section` (a model name or a config's model section)."""
    weights = files.read(spec)
    section = check_model_config(model_section)
    name = section["name"]
    probe = build_model(section, num_classes=model_entry(name).num_classes)
    table = tables.key_table(probe, weights.layout, list(_shapes(probe, name)), name)
    if weights.layout == "keras":
        weights = replace(weights, arrays=tables.rename_keras3(weights.arrays, probe))
    num_classes = _class_count(weights, table, name)
    model = build_model(section, num_classes=num_classes)
    expected = _shapes(model, name)
    variables = _fill(weights, table, expected, name)
    preprocessing = _preprocessing(weights.layout, model)
    ignored = sorted(k for k in weights.arrays if k not in {e.source for e in table.entries})
    record = {
        **weights.record(),
        "model": section,
        "num_classes": num_classes,
        "arrays_used": len(table.entries),
        "ignored": {"count": len(ignored), "patterns": list(table.ignored)},
        "preprocessing": preprocessing.record(),
    }
    return ImportedWeights(model, variables, preprocessing, record)


def _shapes(model: nn.Module, name: str) -> dict[str, tuple[int, ...]]:
    """'/'-joined variable paths -> shapes, at the model's published input size (no compute)."""
    expected = expected_variables(model, model_entry(name).input_shape)
    return {path: tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(expected, sep="/").items()}


def _class_count(weights: files.WeightsFile, table: tables.Table, name: str) -> int:
    head = weights.arrays.get(table.head)
    if head is None or head.ndim != 2:
        raise _mismatch(weights, name, [f"no 2-d classifier weight '{table.head}'"])
    return int(head.shape[0] if weights.layout == "torchvision" else head.shape[-1])


def _fill(
    weights: files.WeightsFile, table: tables.Table, expected: dict[str, tuple[int, ...]], name: str
) -> dict[str, Any]:
    arrays = weights.arrays
    used = {e.source for e in table.entries}
    missing = [e.source for e in table.entries if e.source not in arrays]
    unexpected = [k for k in arrays if k not in used and not any(re.fullmatch(p, k) for p in table.ignored)]
    flat, shapes = {}, []
    for entry in table.entries:
        if entry.source not in arrays:
            continue
        value = tables.convert(np.asarray(arrays[entry.source]), entry.transform)
        if value.shape != expected[entry.target]:
            shapes.append(f"{entry.source} {arrays[entry.source].shape} for {entry.target} {expected[entry.target]}")
        flat[entry.target] = np.ascontiguousarray(value, dtype=np.float32)
    problems = problem_list(
        (("missing in the file", missing), ("in the file but not in the model", unexpected), ("shapes differ", shapes))
    )
    if problems:
        raise _mismatch(weights, name, problems)
    return traverse_util.unflatten_dict(flat, sep="/")


def _mismatch(weights: files.WeightsFile, name: str, problems: list[str]) -> UserError:
    return UserError(
        f"weights file '{weights.path}' does not fit model '{name}' ({weights.layout} layout): {'; '.join(problems)}. "
        f"Is it a file of another architecture, or does model.* differ from the original (e.g. "
        f"{'model.aux_heads' if name == 'googlenet' else 'model.batch_norm'})?"
    )


def _preprocessing(layout: str, model: nn.Module) -> Preprocessing:
    if layout == "keras":
        return KERAS_CAFFE
    return TORCHVISION_GOOGLENET if isinstance(model, googlenet.GoogLeNet) else TORCHVISION
