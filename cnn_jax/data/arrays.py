"""In-memory dataset: uint8 NHWC images and integer labels per split, with a content fingerprint.

`balanced_subset` and `hold_out` read only labels and call `take`, so they also divide a streamed split
(data/streamed.py) exactly as they divide one held in memory."""

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

    def take(self, indices: np.ndarray) -> Split:
        """The examples at `indices` (a sorted index array or a boolean mask), in that order."""
        return Split(self.images[indices], self.labels[indices])


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


def balanced_subset(split: Split, n: int, field: str = "dataset.train_subset") -> Split:
    """`n` examples with classes as equal as possible (the first `n % k` classes get one more), drawn in a
    fixed random order and kept in stored order; stored order alone may be sorted by class."""
    order = np.random.default_rng(SUBSET_SEED).permutation(len(split))
    classes = np.unique(split.labels)
    quota = {c: n // len(classes) + (i < n % len(classes)) for i, c in enumerate(classes)}
    chosen = np.sort(np.concatenate([order[split.labels[order] == c][: quota[c]] for c in classes]))
    if len(chosen) != n:
        raise UserError(
            f"config field '{field}' = {n}: cannot draw that many class-balanced examples "
            f"from class counts {np.bincount(split.labels).tolist()}; use fewer, or 0 for the whole split."
        )
    return split.take(chosen)


@dataclass(frozen=True)
class HeldOut:
    """A train split divided into what trains and the validation examples held out of it."""

    train: Split
    validation: Split
    record: dict  # fraction, seed, examples, per-class counts and a fingerprint of the held-out indices


def hold_out(split: Split, fraction: float, seed: int, num_classes: int) -> HeldOut:
    """Hold out round(`fraction` x class count) examples of every class, drawn by `seed` alone, so every run
    and seed of a sweep validates on the same examples; both parts keep stored order."""
    order = np.random.default_rng(seed).permutation(len(split))
    counts = class_counts(split, num_classes)
    quota = [round(fraction * n) for n in counts]
    starved = [c for c, (n, q) in enumerate(zip(counts, quota)) if n and not 0 < q < n]
    if starved:
        c = starved[0]
        raise UserError(
            f"config field 'dataset.validation_fraction' = {fraction} leaves class {c} with "
            f"{quota[c]} validation and {counts[c] - quota[c]} training examples (of {counts[c]}); "
            "choose a fraction that keeps both non-empty, or 0 to turn validation off."
        )
    chosen = np.sort(np.concatenate([order[split.labels[order] == c][:q] for c, q in enumerate(quota)]))
    keep = np.ones(len(split), bool)
    keep[chosen] = False
    record = {
        "fraction": fraction,
        "seed": seed,
        "examples": len(chosen),
        "class_counts": [int(q) for q in quota],
        "indices_sha256": hashlib.sha256(chosen.astype(np.int64).tobytes()).hexdigest(),
    }
    return HeldOut(split.take(keep), split.take(chosen), record)
