"""In-memory dataset: uint8 NHWC images and integer labels per split, with a content fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from cnn_jax.errors import UserError


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8, (N, H, W, C)
    labels: np.ndarray  # int32, (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ArrayDataset:
    name: str
    splits: dict[str, Split]
    class_names: tuple[str, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(next(iter(self.splits.values())).images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def fingerprint(split: Split) -> str:
    """sha256 over shape, pixels and labels, in stored order."""
    h = hashlib.sha256()
    h.update(repr(split.images.shape).encode())
    h.update(np.ascontiguousarray(split.images, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(split.labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def class_counts(split: Split, num_classes: int) -> list[int]:
    return np.bincount(split.labels, minlength=num_classes).tolist()


SUBSET_SEED = 0  # one fixed choice for every run: paired seeds train on the same examples


def balanced_subset(split: Split, n: int) -> Split:
    """`n` examples with classes as equal as possible (the first `n % k` classes get one more), drawn in a
    fixed random order and kept in stored order; stored order alone may be sorted by class."""
    order = np.random.default_rng(SUBSET_SEED).permutation(len(split))
    classes = np.unique(split.labels)
    quota = {c: n // len(classes) + (i < n % len(classes)) for i, c in enumerate(classes)}
    chosen = np.sort(np.concatenate([order[split.labels[order] == c][: quota[c]] for c in classes]))
    if len(chosen) != n:
        raise UserError(
            f"config field 'dataset.train_subset' = {n}: cannot draw that many class-balanced examples "
            f"from class counts {np.bincount(split.labels).tolist()}; use fewer, or 0 for the whole split."
        )
    return Split(split.images[chosen], split.labels[chosen])
