"""PNG figures for people: before/after of a filtered image (more plots join as reports land)."""

from __future__ import annotations

import io
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
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(Path(path), buffer.getvalue())
