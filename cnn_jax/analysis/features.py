"""Pictures of a trained model: its first conv layer's filters, and the feature maps of one input image.

Module outputs are captured by path ('stage1', 'stage1/ConvStack_0/ConvUnit_0/Conv_0', ...) with a
flax method interceptor, so any layer of any registered model can be shown without changing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from cnn_jax.analysis import plots
from cnn_jax.errors import UserError, did_you_mean
from cnn_jax.loading import LoadedRun, load_run

LISTED = 40  # layer paths named in an error before "... N in all"


@dataclass(frozen=True)
class Picture:
    path: Path
    step: int
    layers: tuple[str, ...]
    grid: tuple[int, int] | None = None  # (rows, cols) of the filter grid
    prediction: str | None = None  # of the feature-map input


def module_outputs(model: nn.Module, variables: dict[str, Any], x: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """(logits, {path: (module, output)}) of every submodule call, in the order the calls finished."""
    outputs: dict[str, Any] = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and context.module.scope.path:
            outputs["/".join(context.module.scope.path)] = (context.module, out)
        return out

    with nn.intercept_methods(record):
        logits = model.apply(variables, x, train=False)
    return logits, outputs


def conv_layers(loaded: LoadedRun) -> list[str]:
    """Paths of the conv layers (4-D kernels) in the order the model calls them; no compute."""
    found: list[str] = []

    def trace():
        _, outputs = module_outputs(loaded.model, loaded.variables, jnp.zeros((1, *loaded.info.model_input_shape)))
        found.extend(path for path, (module, _) in outputs.items() if isinstance(module, (nn.Conv, nn.ConvTranspose)))

    jax.eval_shape(trace)
    return found


def filter_tiles(kernel: np.ndarray) -> tuple[np.ndarray, str]:
    """Kernel (kh, kw, c_in, c_out) -> tiles (c_out, kh, kw, 1|3) each min-max scaled to [0, 1], and how."""
    kernel = np.asarray(kernel, np.float64)
    c_in = kernel.shape[2]
    tiles = np.moveaxis(kernel, 3, 0)
    if c_in not in (1, 3):
        tiles = tiles.mean(axis=3, keepdims=True)
    how = {1: "grey", 3: "RGB"}.get(c_in, f"grey, mean over the {c_in} input channels")
    return np.stack([_minmax(t) for t in tiles]), how


def _minmax(x: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1] (a constant array becomes 0)."""
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def plot_filters(
    run_dir: Path, layer: str | None = None, step: str | int | None = None, out: Path | None = None
) -> Picture:
    """A PNG grid of a conv layer's kernels (default: the first conv layer), one tile per output channel."""
    loaded = load_run(run_dir, step)
    convs = conv_layers(loaded)
    if not convs:
        raise UserError(f"the {loaded.config.model.name} model of '{loaded.run_dir}' has no conv layer.")
    layer = layer or convs[0]
    if layer not in convs:
        raise _unknown_layer("--layer", layer, convs, "conv layers")
    kernel = _subtree(loaded.variables["params"], layer)["kernel"]
    tiles, how = filter_tiles(kernel)
    kh, kw, c_in, c_out = kernel.shape
    note = (
        f"{c_out} filters of {kh}x{kw}x{c_in}, {how}; each tile min-max scaled on its own (dark = its min, "
        f"bright = its max); kernel values span [{float(np.min(kernel)):.3g}, {float(np.max(kernel)):.3g}]"
    )
    out = Path(out) if out else loaded.run_dir / f"filters_step{loaded.step}.png"
    grid = plots.filter_grid(tiles, f"{loaded.config.model.name} step {loaded.step}: {layer}", note, out)
    return Picture(out, loaded.step, (layer,), grid=grid)


def _subtree(tree: dict[str, Any], path: str) -> dict[str, Any]:
    for key in path.split("/"):
        tree = tree[key]
    return tree


def read_image(path: Path, image_shape: tuple[int, int, int]) -> tuple[np.ndarray, str]:
    """An image file as uint8 (H, W, C) of the run's shape (grey or RGB, resized if needed), and what was done."""
    from PIL import Image, UnidentifiedImageError

    height, width, channels = image_shape
    if channels not in (1, 3):
        raise UserError(
            f"the run's images have {channels} channels; only grey (1) or RGB (3) runs can read an "
            "image file. Use --test-index instead."
        )
    try:
        with Image.open(path) as img:
            done = (
                []
                if img.mode == ("L" if channels == 1 else "RGB")
                else [f"converted {img.mode} to {'grey' if channels == 1 else 'RGB'}"]
            )
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (width, height):
                done.append(f"resized {img.size[0]}x{img.size[1]} to {width}x{height}")
                img = img.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, np.uint8)
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise UserError(f"cannot read image '{path}': {exc}") from None
    return pixels.reshape(height, width, channels), "; ".join(done)


def dataset_image(loaded: LoadedRun, paths, index: int) -> tuple[np.ndarray, str]:
    """Image `index` of the run's test split (read through the data catalog) and its label's name."""
    from cnn_jax.data import catalog

    test = catalog.load(loaded.info.name, paths.data_dir, list(paths.search_roots), log=lambda *_: None)
    split = test.dataset.splits["test"]
    if not 0 <= index < len(split):
        raise UserError(
            f"--test-index {index}: the test split of '{loaded.info.name}' has {len(split)} images "
            f"(0..{len(split) - 1})."
        )
    return split.images[index], loaded.info.classes[int(split.labels[index])]


def plot_features(
    run_dir: Path,
    image: Path | None = None,
    layers: list[str] | None = None,
    step: str | int | None = None,
    out: Path | None = None,
    test_index: int | None = None,
    paths=None,
    max_channels: int = 32,
) -> Picture:
    """A PNG of the feature maps of `layers` (default: the model's top-level layers) for one image.

    The image is a file (`image`) or test image `test_index` of the run's dataset (`paths`: DataPaths).
    """
    if (image is None) == (test_index is None):
        raise UserError("give either an image file or --test-index N (one of the two).")
    if max_channels < 1:
        raise UserError(f"--max-channels {max_channels}: must be >= 1.")
    loaded = load_run(run_dir, step)
    if image is not None:
        pixels, done = read_image(image, loaded.info.image_shape)
        source, name = f"{Path(image).name}{f' ({done})' if done else ''}", Path(image).stem
    else:
        pixels, label = dataset_image(loaded, paths, test_index)
        source, name = f"test image {test_index} (label '{label}')", f"test{test_index}"
    x = jnp.asarray(loaded.info.preprocess(pixels[None]))
    logits, outputs = module_outputs(loaded.model, loaded.variables, x)
    available = [path for path, (_, y) in outputs.items() if getattr(y, "ndim", 0) == 4]
    chosen = layers or [path for path in available if "/" not in path]
    for layer in chosen:
        if layer not in available:
            raise _unknown_layer("--layers", layer, available, "layers with feature maps")
    panels = [_panel(layer, np.asarray(outputs[layer][1][0]), max_channels) for layer in chosen]
    probabilities = np.asarray(jax.nn.softmax(logits[0]))
    top = int(np.argmax(probabilities))
    prediction = f"{loaded.info.classes[top]} (p={probabilities[top]:.2f})"
    out = Path(out) if out else loaded.run_dir / f"features_{name}_step{loaded.step}.png"
    plots.feature_maps(
        pixels,
        panels,
        f"{loaded.config.model.name} step {loaded.step}: {source}; predicted {prediction}",
        "each channel min-max scaled on its own (dark = its min, bright = its max)",
        out,
    )
    return Picture(out, loaded.step, tuple(chosen), prediction=prediction)


def _panel(layer: str, maps: np.ndarray, max_channels: int) -> tuple[str, np.ndarray]:
    """(title, tiles (N, h, w, 1)) of one layer's output (h, w, C), at most `max_channels` channels."""
    h, w, c = maps.shape
    shown = min(c, max_channels)
    title = f"{layer}: {h}x{w}x{c}" + (f", first {shown} channels" if shown < c else "")
    tiles = np.stack([_minmax(np.asarray(maps[..., i], np.float64)) for i in range(shown)])
    return title, tiles[..., None]


def _unknown_layer(option: str, name: str, available: list[str], what: str) -> UserError:
    more = f", ... ({len(available)} in all)" if len(available) > LISTED else ""
    return UserError(
        f"{option}: no layer '{name}' in this model.{did_you_mean(name, available)} "
        f"{what.capitalize()}: {', '.join(available[:LISTED])}{more}."
    )
