"""PNG figures for people: before/after of a filtered image, learning curves and confidence intervals of a sweep,
a trained model's filters and feature maps."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cnn_jax.files import write_bytes_atomic  # noqa: E402


def before_after(before: np.ndarray, after: np.ndarray, title: str, path: Path) -> None:
    """Two panels side by side, written atomically as a PNG."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    for ax, image, label in zip(axes, (before, after), ("before", f"after: {title}")):
        grey = image.shape[-1] == 1
        ax.imshow(image[..., 0] if grey else image, cmap="gray" if grey else None, vmin=0, vmax=255)
        ax.set_title(label)
        ax.axis("off")
    _write_png(fig, path)


Band = tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float]]  # x, mean, low, high


def learning_curves(accuracy: dict[str, dict[str, Band]], train_loss: dict[str, Band], title: str, path: Path) -> None:
    """Accuracy (%) per evaluated split ('val' solid, 'test' dashed) and train loss against epoch: per variant
    a mean line over a band over seeds."""
    colors = {name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys([*accuracy, *train_loss]))}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7.5), sharex=True)
    for name, splits in accuracy.items():
        for split, (x, mean, low, high) in splits.items():
            style = "-" if split == "val" else "--"
            top.plot(x, mean, style, color=colors[name], label=f"{name} ({split})", marker="o", markersize=3)
            top.fill_between(x, low, high, color=colors[name], alpha=0.15, linewidth=0)
    for name, (x, mean, low, high) in train_loss.items():
        bottom.plot(x, mean, color=colors[name], label=name)
        bottom.fill_between(x, low, high, color=colors[name], alpha=0.2, linewidth=0)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.set_ylabel("accuracy (%): validation solid, test dashed")
    bottom.set_ylabel("train loss (mean over each log interval)")
    bottom.set_xlabel("epoch")
    top.set_title(textwrap.fill(title, 90), fontsize=10)
    if accuracy:
        top.legend(fontsize=8, title="mean over seeds, band min..max", title_fontsize=8)
    _write_png(fig, path)


def intervals(
    rows: Sequence[tuple[str, float | None, tuple[float, float] | None, Sequence[float]]],
    reference: float | None,
    xlabel: str,
    title: str,
    path: Path,
) -> None:
    """Per row (name, mean, 95% CI, per-seed values): a dot with its interval and the seeds as small dots."""
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.5 * len(rows)))
    for y, (_, mean, ci, values) in enumerate(rows):
        ax.scatter(values, [y + 0.18] * len(values), s=12, color="grey", alpha=0.8, zorder=2)
        if mean is not None:
            ax.scatter([mean], [y], s=36, color="C0", zorder=3)
        if ci is not None:
            ax.hlines(y, ci[0], ci[1], color="C0", linewidth=2, zorder=3)
    if reference is not None:
        ax.axvline(reference, color="black", linestyle="--", linewidth=0.8, alpha=0.6)
    ax.set_yticks(range(len(rows)), [row[0] for row in rows])
    ax.set_ylim(max(len(rows), 1) - 0.5, -0.5)
    ax.set_xlabel(xlabel)
    ax.set_title(textwrap.fill(title, 90), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    _write_png(fig, path)


def _write_png(fig: plt.Figure, path: Path) -> None:
    """Lay out, render and close `fig`, then write it atomically as a PNG."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(Path(path), buffer.getvalue())


GAP_COLOR = (0.55, 0.7, 0.9)  # between tiles: a light blue, never a value of a grey or viridis tile


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) of a near-square grid holding n tiles."""
    cols = max(1, int(np.ceil(np.sqrt(n))))
    return int(np.ceil(n / cols)), cols


def mosaic(tiles: np.ndarray, cols: int, cmap: str | None = None) -> np.ndarray:
    """Tiles (N, h, w, 1|3) with values in [0, 1] -> one RGB image, row by row, 1-pixel gaps between tiles.

    Single-channel tiles are grey, or colored by the matplotlib colormap `cmap`.
    """
    n, h, w, c = tiles.shape
    rgb = plt.get_cmap(cmap)(tiles[..., 0])[..., :3] if cmap and c == 1 else np.broadcast_to(tiles, (n, h, w, 3))
    rows = -(-n // cols)
    out = np.empty((rows * (h + 1) + 1, cols * (w + 1) + 1, 3))
    out[:] = GAP_COLOR
    for i in range(n):
        r, k = divmod(i, cols)
        out[1 + r * (h + 1) : (r + 1) * (h + 1), 1 + k * (w + 1) : (k + 1) * (w + 1)] = rgb[i]
    return out


def filter_grid(tiles: np.ndarray, title: str, note: str, path: Path) -> tuple[int, int]:
    """One tile per filter (N, h, w, 1|3 in [0, 1]) in a near-square grid; returns (rows, cols)."""
    rows, cols = grid_shape(len(tiles))
    image = mosaic(tiles, cols)
    fig, ax = plt.subplots(figsize=(6, 6 * image.shape[0] / image.shape[1] + 0.9))
    ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    fig.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=7, wrap=True)
    _write_png(fig, path)
    return rows, cols


def feature_maps(
    image: np.ndarray, panels: Sequence[tuple[str, np.ndarray]], title: str, note: str, path: Path
) -> None:
    """The input image, then per layer its channel maps (N, h, w, 1 in [0, 1]) as a viridis mosaic."""
    images = [mosaic(maps, grid_shape(len(maps))[1], cmap="viridis") for _, maps in panels]
    ratios = [0.35] + [min(m.shape[0] / m.shape[1], 1.5) for m in images]
    fig, axes = plt.subplots(len(ratios), 1, figsize=(7, 7 * sum(ratios) + 0.8), height_ratios=ratios, squeeze=False)
    grey = image.shape[-1] == 1
    axes[0, 0].imshow(image[..., 0] if grey else image, cmap="gray" if grey else None, vmin=0, vmax=255)
    axes[0, 0].set_title(title, fontsize=9)
    for ax, (label, _), picture in zip(axes[1:, 0], panels, images):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(label, fontsize=9)
    for ax in axes[:, 0]:
        ax.axis("off")
    fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=7, wrap=True)
    _write_png(fig, path)
