"""Load a trained model from its run directory: the flax module, its variables, the input preprocessing.

No training code runs: no optimizer is built and no dataset is read (the manifest holds the image
shape, class names and normalization that training used).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from cnn_jax import checkpoints, rundir
from cnn_jax.data.preprocess import InputTransform
from cnn_jax.errors import UserError, problem_list
from cnn_jax.models import build_model


@dataclass(frozen=True)
class DataInfo:
    """What a run was trained on, as its manifest records it."""

    name: str
    image_shape: tuple[int, int, int]  # of the stored images
    classes: tuple[str, ...]
    mean: np.ndarray  # float32 per channel, of pixels scaled to [0, 1]
    std: np.ndarray
    input: InputTransform  # stored images -> the model's input, as training made it
    pretrained: bool  # the run holds imported pretrained weights (`cnn-jax import-weights`)

    @property
    def model_input_shape(self) -> tuple[int, int, int]:
        return self.input.output_shape(self.image_shape)

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, H, W, C) or (H, W, C) -> float32 model input, made exactly as training and
        evaluation made it (normalized; resized, cropped or turned RGB where the run did)."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise UserError(
                f"images must be uint8 pixels 0..255 (got {images.dtype}); the normalization divides by 255 itself."
            )
        if tuple(images.shape[-3:]) != self.image_shape:
            raise UserError(
                f"images of shape {tuple(images.shape[-3:])} do not match the run's stored images "
                f"{self.image_shape} (H, W, C)."
            )
        batch = images.reshape(-1, *self.image_shape)
        out = np.asarray(_compiled(self.input)(batch))  # compiled, as in the eval step: the same float rounding
        return out.reshape(*images.shape[:-3], *out.shape[1:])


@functools.lru_cache(maxsize=8)
def _compiled(transform: InputTransform):
    """The jitted transform, made once per transform (a new jit wrapper per call would compile again)."""
    return jax.jit(transform)


def data_info(run_dir: Path) -> DataInfo:
    """The dataset name, image shape, class names and input preprocessing from `run_dir/manifest.json`
    (runs written before the input transform was recorded used normalization only)."""
    path = Path(run_dir) / rundir.MANIFEST
    if not path.exists():
        raise UserError(
            f"'{run_dir}' has no {rundir.MANIFEST}; it records the image shape, classes and "
            "normalization a model needs. Give the run directory training wrote."
        )
    manifest = json.loads(path.read_text())
    data = manifest["data"]
    norm, given = data["normalization"], data.get("input", {})
    transform = InputTransform(
        tuple(norm["mean"]),
        tuple(norm["std"]),
        given.get("resize", 0),
        given.get("center_crop", 0),
        given.get("grey_to_rgb", False),
    )
    return DataInfo(
        data["name"],
        tuple(data["image_shape"]),
        tuple(data["classes"]),
        np.asarray(norm["mean"], np.float32),
        np.asarray(norm["std"], np.float32),
        transform,
        "weights" in manifest,
    )


@dataclass(frozen=True)
class LoadedRun:
    """A run's model with the variables of one checkpoint, and what it was trained on."""

    run_dir: Path
    config: ml_collections.ConfigDict
    info: DataInfo
    model: nn.Module
    step: int
    variables: dict[str, Any]  # {"params": ..., "batch_stats": ... (models with batch norm)}


def load_model(run_dir: Path, step: str | int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(model, variables) of a run's checkpoint, for `model.apply(variables, x, train=False)`.

    `step`: 'best' (the default for a run directory), 'latest' or a step number; a step folder
    given as `run_dir` is that step. Raises a UserError naming every key or shape that differs
    when the checkpoint does not fit the model its config builds.
    """
    loaded = load_run(run_dir, step)
    return loaded.model, loaded.variables


def load_run(path: Path, step: str | int | None = None) -> LoadedRun:
    """Like `load_model`, keeping the config, the data info and the step that was loaded."""
    source = checkpoints.locate(path)
    run_dir = _run_dir_of(source)
    config = rundir.load_config(run_dir)
    info = data_info(run_dir)
    model = build_model(config.model, num_classes=len(info.classes))
    manager = source.manager()
    chosen = source.pick(manager, step, "best")
    saved = checkpoints.model_variables(checkpoints.read_checkpoint(source, manager, chosen))
    check_fits(
        saved,
        expected_variables(model, info.model_input_shape),
        f"checkpoint {chosen} of '{run_dir}' does not fit the {config.model.name} model its {rundir.CONFIG} builds",
    )
    return LoadedRun(run_dir, config, info, model, chosen, jax.tree_util.tree_map(jnp.asarray, saved))


def _run_dir_of(source: checkpoints.Source) -> Path:
    if source.run_dir is None:
        raise UserError(
            f"'{source.path}' is not inside a run directory (no {rundir.CONFIG} beside checkpoints/); "
            "loading a model needs the run's config and manifest."
        )
    return source.run_dir


def expected_variables(model: nn.Module, image_shape: tuple[int, int, int]) -> dict[str, Any]:
    """Shapes and dtypes of the model's variables (no compute), without collections that are empty."""
    shapes = jax.eval_shape(
        lambda: model.init(
            {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
            jnp.zeros((1, *image_shape), jnp.float32),
            train=False,
        )
    )
    return {name: shapes[name] for name in checkpoints.COLLECTIONS if shapes.get(name)}


def check_fits(saved: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    """Raise a one-line UserError listing missing and unexpected keys and differing shapes."""
    have, want = checkpoints.flatten(saved), checkpoints.flatten(expected)
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    shapes = [
        f"{k}: saved {tuple(have[k].shape)} vs model {tuple(want[k].shape)}"
        for k in want
        if k in have and tuple(have[k].shape) != tuple(want[k].shape)
    ]
    problems = problem_list(
        (
            ("missing in the checkpoint", missing),
            ("unexpected in the checkpoint", unexpected),
            ("shapes differ", shapes),
        )
    )
    if problems:
        raise UserError(
            f"{what}: {'; '.join(problems)}. Was {rundir.CONFIG} edited, or is this another run's checkpoint?"
        )
