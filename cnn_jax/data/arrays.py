"""In-memory dataset: uint8 NHWC images and integer labels per split, with a content fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


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
