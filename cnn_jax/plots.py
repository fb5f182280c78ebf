"""PNG figures for people: before/after of a filtered image, learning curves and confidence intervals of a sweep."""

from __future__ import annotations

import io
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


def learning_curves(accuracy: dict[str, Band], train_loss: dict[str, Band], title: str, path: Path) -> None:
    """Test accuracy (%) and train loss against epoch: per variant a mean line over a band over seeds."""
    colors = {name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys([*accuracy, *train_loss]))}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7.5), sharex=True)
    for ax, bands in ((top, accuracy), (bottom, train_loss)):
        for name, (x, mean, low, high) in bands.items():
            ax.plot(x, mean, color=colors[name], label=name, marker="o" if ax is top else None, markersize=3)
            ax.fill_between(x, low, high, color=colors[name], alpha=0.2, linewidth=0)
        ax.grid(alpha=0.3)
    top.set_ylabel("test accuracy (%)")
    bottom.set_ylabel("train loss")
    bottom.set_xlabel("epoch")
    top.set_title(title, fontsize=10)
    if accuracy:
        top.legend(fontsize=8, title="mean over seeds, band min..max", title_fontsize=8)
    _write_png(fig, path)


def intervals(rows: Sequence[tuple[str, float | None, tuple[float, float] | None, Sequence[float]]],
              reference: float | None, xlabel: str, title: str, path: Path) -> None:
    """Per row (name, mean, 95% CI, per-seed values): a dot with its interval and the seeds as small dots."""
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.5 * len(rows)))
    for y, (name, mean, ci, values) in enumerate(rows):
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
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    _write_png(fig, path)


def _write_png(fig: plt.Figure, path: Path) -> None:
    """Lay out, render and close `fig`, then write it atomically as a PNG."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(Path(path), buffer.getvalue())
