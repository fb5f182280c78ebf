"""TFDS storage without TensorFlow: write an ArrayDataset as array_record, read datasets back."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from cnn_jax.data.arrays import ArrayDataset, Split, fingerprint
from cnn_jax.files import write_bytes_atomic, write_json_atomic

IMPORT_VERSION = "1.0.0"
IMPORTS_SUBDIR = "cnn_jax_imported"  # a TFDS data dir of its own: imports never shadow stock TFDS builders
PROVENANCE_FILE = "cnn_jax_import.json"
ARRAYS_DIR = "cnn_jax_arrays"  # an import's splits decoded once, as .npz: a run reads them in well under a second

tfds.disable_progress_bar()
logging.getLogger("absl").setLevel(logging.ERROR)


def imported_dir(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / IMPORTS_SUBDIR / name / IMPORT_VERSION


def list_imported(data_dir: Path) -> list[str]:
    root = Path(data_dir) / IMPORTS_SUBDIR
    return (
        sorted(p.name for p in root.iterdir() if (p / IMPORT_VERSION / "dataset_info.json").exists())
        if root.is_dir()
        else []
    )


def write_imported(dataset: ArrayDataset, data_dir: Path, provenance: dict) -> Path:
    """Prepare `dataset` as a TFDS array_record dataset; TFDS writes to a temporary dir and renames."""
    builder = _builder_class(dataset)(data_dir=str(Path(data_dir) / IMPORTS_SUBDIR), file_format="array_record")
    with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints "Downloading and preparing"; callers log
        builder.download_and_prepare()
    target = Path(builder.data_dir)
    write_json_atomic(target / PROVENANCE_FILE, provenance)
    write_arrays(target, dataset)
    return target


def read_tfds_dir(builder_dir: Path, name: str) -> ArrayDataset:
    """Read every split of a prepared dataset, in its original order when an `index` feature exists."""
    builder = tfds.builder_from_directory(str(builder_dir))
    splits = {split: _read_split(builder, split) for split in builder.info.splits}
    names = tuple(builder.info.features["label"].names)
    return ArrayDataset(name, splits, names)


def read_imported_arrays(builder_dir: Path, name: str, fingerprints: dict[str, str]) -> ArrayDataset:
    """An imported dataset from its decoded arrays when they match `fingerprints` (those recorded at import),
    else from the array_record files, then decoded for the next run. Same examples either way: the cache is
    used only when every split's fingerprint matches."""
    folder = Path(builder_dir) / ARRAYS_DIR
    try:
        names = tuple(json.loads((folder / "classes.json").read_text()))
        splits = {split: _load_npz(folder / f"{split}.npz") for split in fingerprints}
        if {s: fingerprint(d) for s, d in splits.items()} == fingerprints:
            return ArrayDataset(name, splits, names)
    except (OSError, ValueError, KeyError):
        pass  # absent, partly written by an older version, or unreadable: decode again
    dataset = read_tfds_dir(builder_dir, name)
    write_arrays(builder_dir, dataset)
    return dataset


def write_arrays(builder_dir: Path, dataset: ArrayDataset) -> None:
    """Store the decoded splits beside the records (skipped where the data dir is read-only)."""
    folder = Path(builder_dir) / ARRAYS_DIR
    try:
        for split, data in dataset.splits.items():
            buffer = io.BytesIO()
            np.savez(buffer, images=data.images, labels=data.labels)
            write_bytes_atomic(folder / f"{split}.npz", buffer.getvalue())
        write_json_atomic(folder / "classes.json", list(dataset.class_names))
    except OSError:
        pass  # every run decodes the records, as without the cache


def _load_npz(path: Path) -> Split:
    with np.load(path) as arrays:
        return Split(arrays["images"], arrays["labels"])


def read_provenance(builder_dir: Path) -> dict:
    path = Path(builder_dir) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def stock_dir(data_dir: Path, name: str) -> Path | None:
    """The newest prepared array_record version of a stock TFDS dataset in `data_dir`, if any."""
    root = Path(data_dir) / name
    if not root.is_dir():
        return None
    versions = [p for p in root.iterdir() if (p / "dataset_info.json").exists() and any(p.glob("*.array_record*"))]
    return max(versions, key=lambda p: tfds.core.Version(p.name)) if versions else None


def _read_split(builder, split: str, chunk: int = 10_000) -> Split:
    source = builder.as_data_source(split=split)
    records = []
    for start in range(0, len(source), chunk):
        records.extend(source.__getitems__(list(range(start, min(start + chunk, len(source))))))
    images = np.stack([np.asarray(r["image"], dtype=np.uint8) for r in records])
    labels = np.asarray([r["label"] for r in records], dtype=np.int32)
    if images.ndim == 3:
        images = images[..., None]
    if "index" in records[0]:
        order = np.argsort(np.asarray([r["index"] for r in records]), kind="stable")
        images, labels = images[order], labels[order]
    return Split(images, labels)


def _builder_class(dataset: ArrayDataset):
    """A GeneratorBasedBuilder for one in-memory dataset (never registered by name)."""

    class ImportedDataset(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(IMPORT_VERSION)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description=f"{dataset.name}, imported from local files by cnn_jax.",
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Tensor(shape=dataset.image_shape, dtype=np.uint8),
                        "label": tfds.features.ClassLabel(names=list(dataset.class_names)),
                        "index": tfds.features.Scalar(dtype=np.int64),
                    }
                ),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in dataset.splits}

        def _generate_examples(self, split):
            data = dataset.splits[split]
            for i in range(len(data)):
                yield i, {"image": data.images[i], "label": int(data.labels[i]), "index": i}

    ImportedDataset.name = dataset.name
    return ImportedDataset


def split_fingerprints(dataset: ArrayDataset) -> dict[str, str]:
    return {split: fingerprint(data) for split, data in dataset.splits.items()}


def split_names(builder_dir: Path) -> list[str]:
    return list(tfds.builder_from_directory(str(builder_dir)).info.splits)


def class_names(builder_dir: Path) -> tuple[str, ...]:
    return tuple(tfds.builder_from_directory(str(builder_dir)).info.features["label"].names)


def stored_size(builder_dir: Path) -> tuple[tuple[int, int, int] | None, int]:
    """The image shape (None when it varies) and the example count of a prepared dataset, from its info."""
    info = tfds.builder_from_directory(str(builder_dir)).info
    shape = tuple(info.features["image"].shape)
    examples = sum(split.num_examples for split in info.splits.values())
    return (None if None in shape else shape), examples
