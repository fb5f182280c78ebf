"""Splits read example by example from disk, for data too large to hold (or of varying image size).

A split is a random-access source (an image folder, or a TFDS array_record dataset) and the rows of it
the split uses, with all labels in memory; images are read and decoded one at a time, on the host.
`hold_out` and `balanced_subset` (data/arrays.py) divide a `StreamedSplit` exactly as a `Split`.

Nothing here imports JAX: grain's worker processes unpickle these objects to decode the images.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import UnidentifiedImageError

from cnn_jax.data.local_files import IMAGE_SUFFIXES, image_array
from cnn_jax.errors import UserError
from cnn_jax.files import write_json_atomic

# ImageNet's public 'val' folder (its test labels are not public) is the split results are reported on;
# the validation split that selects is held out of train, as for every dataset (data/arrays.py hold_out)
TEST_SPLIT_NAMES = ("test", "val", "validation")


def test_split_name(names) -> str | None:
    """The split that plays 'test': 'test', else ImageNet's 'val' / TFDS's 'validation'."""
    return next((n for n in TEST_SPLIT_NAMES if n in names), None)


class BadImage(Exception):
    """An example that cannot be decoded: (name of the file or record, why); picklable, so it crosses from
    a worker process unchanged."""

    def __init__(self, name: str, reason: str):
        super().__init__(name, reason)
        self.name, self.reason = name, reason

    def __str__(self) -> str:
        return f"'{self.name}' is not a readable image ({self.reason})"


@dataclass(frozen=True)
class FolderSource:
    """The images of one split of `root/<split>/<class>/<file>`, listed in sorted order (as the in-memory
    reader lists them, so both give the same rows)."""

    root: str
    split: str
    files: np.ndarray  # bytes: '<class>/<file>' relative to root/split
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.files)

    def name(self, row: int) -> str:
        return f"{self.split}/{self.files[row].decode()}"

    def read(self, row: int) -> np.ndarray:
        try:
            return image_array(os.path.join(self.root, self.name(row)))  # PIL reads the file itself: fastest
        except (UnidentifiedImageError, OSError) as exc:
            raise BadImage(self.name(row), str(exc)) from None

    def fingerprint(self, labels: np.ndarray, cache_dir: Path | None) -> str:
        """sha256 over every file's bytes and label, in order; cached in `cache_dir` under a key of the
        files' names, sizes and modification times, so the files are hashed once."""
        stats = [os.stat(Path(self.root) / self.name(r)) for r in range(len(self))]
        listing = hashlib.sha256()
        for r, st in enumerate(stats):
            listing.update(f"{self.files[r].decode()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        key = listing.hexdigest()[:24]
        cache = Path(cache_dir) / f"{key}.json" if cache_dir else None
        if cache is not None and cache.exists():
            return json.loads(cache.read_text())["sha256"]
        h = hashlib.sha256()
        for r in range(len(self)):
            h.update((Path(self.root) / self.name(r)).read_bytes())
        h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
        digest = h.hexdigest()
        if cache is not None:
            try:
                write_json_atomic(cache, {"root": self.root, "split": self.split, "sha256": digest})
            except OSError:
                pass  # a read-only data dir: hashed again next time
        return digest


def list_folder(root: Path, split: str, class_names: tuple[str, ...]) -> tuple[FolderSource, np.ndarray]:
    """The source and labels of `root/split`; every class of `class_names` must have images there."""
    base = Path(root) / split
    files, labels = [], []
    for label, name in enumerate(class_names):
        folder = base / name
        entries = sorted(e.name for e in os.scandir(folder) if e.is_file()) if folder.is_dir() else []
        if not entries:
            raise UserError(
                f"image folder '{root}': class folder '{split}/{name}' is empty or missing; "
                "every class needs images in every split (remove the class, or add images)."
            )
        bad = [e for e in entries if not e.lower().endswith(IMAGE_SUFFIXES)]
        if bad:
            raise UserError(
                f"image folder '{root}' holds non-image files, e.g. '{split}/{name}/{bad[0]}' ({len(bad)} there); "
                f"only {', '.join(IMAGE_SUFFIXES)} are allowed. Remove them."
            )
        files += [f"{name}/{e}".encode() for e in entries]
        labels += [label] * len(entries)
    return FolderSource(str(root), split, np.asarray(files), class_names), np.asarray(labels, np.int32)


def folder_classes(root: Path) -> tuple[str, ...]:
    """Class names of an image folder: the sorted sub-folders of its splits."""
    names = {d.name for split in Path(root).iterdir() if split.is_dir() for d in split.iterdir() if d.is_dir()}
    if not names:
        raise UserError(f"image folder '{root}' has no folders of the form <split>/<class>/.")
    return tuple(sorted(names))


@dataclass
class RecordSource:
    """One split of a prepared TFDS dataset in array_record files, read through TFDS's data source
    (opened lazily in each process that reads it)."""

    builder_dir: str
    split: str
    _source: object = field(default=None, repr=False, compare=False)

    def __getstate__(self):
        return {"builder_dir": self.builder_dir, "split": self.split, "_source": None}

    def _open(self):
        if self._source is None:
            import tensorflow_datasets as tfds

            self._source = tfds.builder_from_directory(self.builder_dir).as_data_source(split=self.split)
        return self._source

    def __len__(self) -> int:
        return len(self._open())

    def name(self, row: int) -> str:
        return f"{self.split}[{row}] of {self.builder_dir}"

    def read(self, row: int) -> np.ndarray:
        try:
            image = np.asarray(self._open()[int(row)]["image"], dtype=np.uint8)
        except Exception as exc:  # a damaged record or an undecodable encoded image
            raise BadImage(self.name(row), f"{type(exc).__name__}: {exc}") from None
        return image[..., None] if image.ndim == 2 else image

    def labels_and_order(self) -> tuple[np.ndarray, np.ndarray]:
        """Every record's label, and the rows in stored order (by the 'index' feature an import stores)."""
        source = self._open()
        labels, index = [], []
        for start in range(0, len(source), 10_000):
            for record in source.__getitems__(list(range(start, min(start + 10_000, len(source))))):
                labels.append(int(record["label"]))
                index.append(int(record.get("index", len(index))))
        return np.asarray(labels, np.int32), np.argsort(np.asarray(index), kind="stable")


@dataclass(frozen=True)
class StreamedSplit:
    """`rows` of `source` (in stored order) and their labels."""

    source: FolderSource | RecordSource
    rows: np.ndarray  # int64
    labels: np.ndarray  # int32

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def size(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> StreamedSplit:
        return StreamedSplit(self.source, self.rows[indices], self.labels[indices])

    def read(self, position: int) -> np.ndarray:
        """The decoded uint8 (H, W, C) image at `position` of this split."""
        return self.source.read(int(self.rows[position]))

    def name(self, position: int) -> str:
        return self.source.name(int(self.rows[position]))


@dataclass(frozen=True)
class StreamedDataset:
    """The streamed counterpart of `ArrayDataset`: `image_shape` is None when image sizes vary."""

    name: str
    splits: dict[str, StreamedSplit]
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int] | None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def probe_shape(split: StreamedSplit, count: int = 16) -> tuple[int, int, int] | None:
    """The image shape when the first `count` images share one, else None (sizes vary)."""
    shapes = {split.read(p).shape for p in range(min(count, len(split)))}
    return shapes.pop() if len(shapes) == 1 else None
