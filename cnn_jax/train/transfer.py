"""Transfer learning: start from another run's weights or a pretrained weights file (cnn_jax/weights/),
choose what trains (seeds 000 and 004).

Parameters and batch statistics are addressed by '/'-joined paths ('conv1/Conv_0/kernel') matched with
shell-style patterns (`fnmatch`): `transfer.load` and `transfer.skip` pick what is copied from the source,
`transfer.trainable` what the optimizer may change. Everything else stays bitwise as it was.
"""

from __future__ import annotations

import contextlib
import fnmatch
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn
from flax import traverse_util

from cnn_jax.errors import UserError
from cnn_jax.weights import files as weights_files

ADAPT_INPUT = ("none", "grey_to_rgb", "rgb_to_grey")


def is_active(config: ml_collections.ConfigDict) -> bool:
    return bool(config.transfer.source) or tuple(config.transfer.trainable) != ("*",)


def _matches(path: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(path, p) for p in patterns)


def _flat(tree: Any) -> dict[str, Any]:
    return traverse_util.flatten_dict(tree, sep="/") if tree else {}


def check_patterns(variables: dict[str, Any], config: ml_collections.ConfigDict) -> None:
    """Every pattern of `transfer.load`, `transfer.skip` and `transfer.trainable` must match a path of the
    model's variables: a pattern that matches nothing (a typo, another model's layer name) would silently
    freeze, copy or re-initialize the wrong layers."""
    paths = sorted({path for collection in ("params", "batch_stats") for path in _flat(variables.get(collection))})
    for field in ("load", "skip", "trainable"):
        for pattern in config.transfer[field]:
            if not any(fnmatch.fnmatchcase(path, pattern) for path in paths):
                raise UserError(
                    f"config field 'transfer.{field}': pattern {pattern!r} matches no parameter or batch-norm "
                    f"statistic of model '{config.model.name}'; its paths look like {', '.join(paths[:4])}, ... "
                    f"(last: {paths[-1]})."
                )


def trainable_mask(tree: Any, config: ml_collections.ConfigDict) -> Any:
    """A tree of Python bools: True where `transfer.trainable` matches the leaf's path."""
    flat = {k: _matches(k, config.transfer.trainable) for k in _flat(tree)}
    return traverse_util.unflatten_dict(flat, sep="/") if flat else tree


def optimizer_labels(params: Any, config: ml_collections.ConfigDict) -> Any:
    """'frozen', 'backbone' (trainable and copied from the source) or 'new', per parameter."""

    def label(path: str) -> str:
        if not _matches(path, config.transfer.trainable):
            return "frozen"
        return "backbone" if config.transfer.source and _copied(path, config) else "new"

    return traverse_util.unflatten_dict({k: label(k) for k in _flat(params)}, sep="/")


def frozen_batch_norms(trainable: dict) -> frozenset[str]:
    """Module paths ('stage1/ConvUnit_0/BatchNorm_0') of the batch-norm layers whose scale and bias the
    masks of `trainable` ({"params": ..., "batch_stats": ...}) leave frozen."""
    params = _flat(trainable["params"])
    layers = {path.rsplit("/", 1)[0] for path in _flat(trainable["batch_stats"]) if path.endswith("/mean")}
    return frozenset(
        layer for layer in layers if not any(params.get(f"{layer}/{name}", False) for name in ("scale", "bias"))
    )


def stored_statistics(layers: frozenset[str]):
    """A context in which the batch-norm layers at `layers` normalize with their stored statistics (and leave
    them unchanged) also in training mode: `transfer.frozen_batch_norm = 'inference'`."""
    if not layers:
        return contextlib.nullcontext()

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and isinstance(module, nn.BatchNorm) and "/".join(module.path) in layers:
            kwargs = {**kwargs, "use_running_average": True}
        return next_fun(*args, **kwargs)

    return nn.intercept_methods(interceptor)


def keep_frozen(mask: Any, old: Any, new: Any) -> Any:
    """`new` where the mask is True, `old` (bit for bit) where it is False."""
    return jax.tree_util.tree_map(lambda trainable, a, b: b if trainable else a, mask, old, new)


def _copied(path: str, config: ml_collections.ConfigDict) -> bool:
    return _matches(path, config.transfer.load) and not _matches(path, config.transfer.skip)


def transplant(
    target: dict[str, Any], source: dict[str, Any], config: ml_collections.ConfigDict, source_name: str
) -> tuple[dict[str, Any], list[str]]:
    """Copy the selected source arrays into the target variables; returns (variables, copied paths).

    Every selected path must exist in both with the same shape (after `transfer.adapt_input` for the
    first layer); otherwise a UserError names the path, both shapes and the fix.
    """
    out, copied = {}, []
    for collection in ("params", "batch_stats"):
        tgt, src = _flat(target.get(collection, {})), _flat(source.get(collection, {}))
        for path, value in tgt.items():
            if not _copied(path, config):
                continue
            if path not in src:
                raise UserError(
                    f"transfer: '{collection}/{path}' is not in the source run {source_name} "
                    f"(it has {', '.join(sorted(src)[:6])}...); add the path to transfer.skip to train "
                    "it from scratch, or narrow transfer.load."
                )
            array = _adapt(np.asarray(src[path]), value.shape, path, config, source_name)
            tgt[path] = jnp.asarray(array, dtype=value.dtype)
            copied.append(f"{collection}/{path}")
        if tgt:
            out[collection] = traverse_util.unflatten_dict(tgt, sep="/")
    if not copied:
        raise UserError(
            f"transfer: transfer.load {tuple(config.transfer.load)} minus transfer.skip "
            f"{tuple(config.transfer.skip)} selects nothing of the model; check the patterns."
        )
    return {**target, **out}, copied


def _adapt(
    array: np.ndarray, shape: tuple[int, ...], path: str, config: ml_collections.ConfigDict, source_name: str
) -> np.ndarray:
    """The source array, with a first conv's input channels adapted when `transfer.adapt_input` says so."""
    if array.shape == shape:
        return array
    adapt = config.transfer.adapt_input
    if array.ndim == 4 and array.shape[:2] == shape[:2] and array.shape[3] == shape[3]:
        if adapt == "grey_to_rgb" and array.shape[2] == 1:
            return np.repeat(array, shape[2], axis=2) / shape[2]  # on an RGB image, the grey kernel of its mean
        if adapt == "rgb_to_grey" and shape[2] == 1:
            return array.sum(axis=2, keepdims=True)  # a grey image as R = G = B
        raise UserError(
            f"transfer: '{path}' takes {array.shape[2]} input channels in the source run {source_name} "
            f"and {shape[2]} here; set transfer.adapt_input to 'grey_to_rgb' or 'rgb_to_grey'."
        )
    raise UserError(
        f"transfer: '{path}' has shape {array.shape} in the source run {source_name} but {shape} here "
        "(a different width, number of classes or input resolution before a dense layer); add it to "
        "transfer.skip to train it from scratch."
    )


def resolve_source(config: ml_collections.ConfigDict, runs_root: Path) -> Path:
    """The source: a pretrained weights file (a path, or a file name found in the download caches), a run
    directory (finished, or made by `cnn-jax import-weights`), or an experiment `FILE.py[:preset]` resolved
    under `runs_root` (the runs root of the run being trained: runs/<experiment>/<run id> -> runs)."""
    from cnn_jax import config as config_lib
    from cnn_jax import rundir

    source = config.transfer.source
    if weights_files.is_weights_file(source):
        return weights_files.locate(source)[0]
    if source.split(":")[0].endswith(".py"):
        source_config = config_lib.load_experiment(source)
        run_dir = rundir.default_run_dir(source_config, runs_root)
        hint = f"train it first: cnn-jax train {source} --runs-root {runs_root}"
    else:
        run_dir, hint = Path(source), "give a finished run directory"
    if not (run_dir / rundir.RESULT).exists() and not rundir.is_imported(run_dir):
        raise UserError(f"transfer.source '{source}': the run {run_dir} is not finished; {hint}.")
    return run_dir
