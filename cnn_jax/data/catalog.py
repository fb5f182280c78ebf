"""Find a dataset by name: prepared TFDS data, an earlier import, local files, or a TFDS download."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnn_jax.data import streamed as streamed_lib
from cnn_jax.data import tfds_store
from cnn_jax.data.arrays import ArrayDataset, class_counts
from cnn_jax.data.local_files import read_local
from cnn_jax.errors import UserError, did_you_mean
from cnn_jax.files import locked

LOCAL_DATA_ENV = "CNN_JAX_LOCAL_DATA"
SYSTEM_DATA_ROOT = Path("/usr/share/datasets")  # Debian's dataset-* packages install here


@dataclass(frozen=True)
class KnownDataset:
    """What a correct copy of a classic dataset looks like, and where copies usually live."""

    image_shape: tuple[int, int, int]
    class_counts: dict[str, tuple[int, ...]]
    class_names: tuple[str, ...] = ()
    local_dirnames: tuple[str, ...] = field(default=())


KNOWN = {
    "mnist": KnownDataset(
        (28, 28, 1),
        {
            "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
            "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
        },
        tuple(str(d) for d in range(10)),
        ("mnist",),
    ),
    "fashion_mnist": KnownDataset(
        (28, 28, 1),
        {"train": (6000,) * 10, "test": (1000,) * 10},
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        ("fashion-mnist", "fashion_mnist"),
    ),
    "cifar10": KnownDataset(
        (32, 32, 3),
        {"train": (5000,) * 10, "test": (1000,) * 10},
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        ("cifar10", "cifar-10", "cifar10-jpeg", "cifar-10-batches-py", "cifar-10-batches-bin"),
    ),
    "cifar100": KnownDataset(
        (32, 32, 3),
        {"train": (500,) * 100, "test": (100,) * 100},
        (),
        ("cifar100", "cifar-100", "cifar-100-python", "cifar-100-binary"),
    ),
}


# Datasets of varied image sizes, always streamed: an ImageNet-layout folder (train/<class>/*.JPEG,
# val/<class>/*.JPEG) under one of these names, or the TFDS-prepared dataset of the same name
KNOWN_FOLDERS = {
    "imagenette": (10, ("imagenette", "imagenette2", "imagenette2-320", "imagenette2-160")),
    "imagenet2012": (1000, ("imagenet2012", "imagenet", "ILSVRC2012")),
}


@dataclass(frozen=True)
class LoadedDataset:
    dataset: ArrayDataset
    source: str  # where the arrays came from, for the manifest
    fingerprints: dict[str, str]


def default_data_dir() -> Path:
    return Path(os.environ.get("TFDS_DATA_DIR", Path.home() / "tensorflow_datasets"))


def default_search_roots() -> list[Path]:
    """Folders holding local copies: $CNN_JAX_LOCAL_DATA (path list), then /usr/share/datasets."""
    roots = [Path(p) for p in os.environ.get(LOCAL_DATA_ENV, "").split(os.pathsep) if p]
    return roots + [SYSTEM_DATA_ROOT]


def find_local(name: str, roots: list[Path]) -> Path | None:
    """The first folder under `roots` named like dataset `name` (or `roots` entries that are it)."""
    if name in KNOWN:
        dirnames = KNOWN[name].local_dirnames
    else:
        dirnames = KNOWN_FOLDERS[name][1] if name in KNOWN_FOLDERS else (name,)
    for root in roots:
        if Path(root).name in dirnames and Path(root).exists():
            return Path(root)
        for dirname in dirnames:
            if (Path(root) / dirname).exists():
                return Path(root) / dirname
    return None


def verify(dataset: ArrayDataset) -> None:
    """A known dataset must have its published shape, splits and class counts."""
    known = KNOWN.get(dataset.name)
    if known is None:
        return
    if dataset.image_shape != known.image_shape:
        raise UserError(f"dataset '{dataset.name}': images are {dataset.image_shape}, expected {known.image_shape}.")
    for split, expected in known.class_counts.items():
        if split not in dataset.splits:
            raise UserError(f"dataset '{dataset.name}': split '{split}' is missing (found {sorted(dataset.splits)}).")
        got = class_counts(dataset.splits[split], len(expected))
        if tuple(got) != expected:
            raise UserError(
                f"dataset '{dataset.name}', split '{split}': class counts {got} differ from the published "
                f"{list(expected)} ({len(dataset.splits[split])} vs {sum(expected)} examples). "
                "The files are incomplete or not this dataset."
            )


def import_dataset(name: str, source: Path, data_dir: Path, force: bool = False) -> Path:
    """Read local files, verify them, and store them as a TFDS dataset in `data_dir`."""
    target = tfds_store.imported_dir(data_dir, name)
    if target.exists() and not force:
        raise UserError(f"dataset '{name}' is already imported in '{target}'; pass --force to replace it.")
    known = KNOWN.get(name)
    dataset = read_local(name, Path(source), known.class_names if known else ())
    verify(dataset)
    if force and target.exists():
        shutil.rmtree(target)
    provenance = {
        "name": name,
        "source": str(Path(source).resolve()),
        "fingerprints": tfds_store.split_fingerprints(dataset),
        "class_counts": {s: class_counts(d, dataset.num_classes) for s, d in dataset.splits.items()},
        "image_shape": list(dataset.image_shape),
    }
    return tfds_store.write_imported(dataset, data_dir, provenance)


def available_datasets(data_dir: Path) -> list[str]:
    return sorted(set(KNOWN) | set(tfds_store.list_imported(data_dir)))


def load(name: str, data_dir: Path, search_roots: list[Path], log=print) -> LoadedDataset:
    """The dataset `name` as arrays, from the first place that has it (see module docstring)."""
    stock = tfds_store.stock_dir(data_dir, name)
    if stock is not None:
        dataset = tfds_store.read_tfds_dir(stock, name)
        return LoadedDataset(dataset, f"tfds:{name}/{stock.name} in {data_dir}", tfds_store.split_fingerprints(dataset))
    imported = tfds_store.imported_dir(data_dir, name)
    if not imported.exists():
        with locked(imported.parent.parent / f".{name}.lock"):  # runs started together import once
            if not imported.exists():
                local = find_local(name, search_roots)
                if local is not None:
                    log(
                        f"Importing '{name}' from {local} into {imported.parent.parent} "
                        "(once; later runs read it from there)."
                    )
                    import_dataset(name, local, data_dir)
                elif name in KNOWN and _tensorflow_installed():
                    return _download_stock(name, data_dir)
                else:
                    raise _not_found(name, data_dir, search_roots)
    return _read_imported(name, imported)


def _read_imported(name: str, builder_dir: Path) -> LoadedDataset:
    provenance = tfds_store.read_provenance(builder_dir)
    recorded = provenance.get("fingerprints")
    if recorded:
        dataset = tfds_store.read_imported_arrays(builder_dir, name, recorded)
    else:
        dataset = tfds_store.read_tfds_dir(builder_dir, name)
    fingerprints = tfds_store.split_fingerprints(dataset)
    if recorded and recorded != fingerprints:
        raise UserError(
            f"dataset '{name}' in '{builder_dir}' no longer matches the fingerprint recorded at import; "
            f"re-import it: cnn-jax data import {name} --from {provenance.get('source', 'DIR')} --force"
        )
    return LoadedDataset(dataset, f"imported from {provenance.get('source', '?')} into {builder_dir}", fingerprints)


def _tensorflow_installed() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _download_stock(name: str, data_dir: Path) -> LoadedDataset:
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=str(data_dir), file_format="array_record")
        builder.download_and_prepare()
    except Exception as exc:  # network, quota, checksum: report, do not substitute data
        raise UserError(
            f"TFDS could not download '{name}' ({type(exc).__name__}: {exc}). "
            f"Import local files instead: cnn-jax data import {name} --from DIR"
        ) from exc
    stock = tfds_store.stock_dir(data_dir, name)
    dataset = tfds_store.read_tfds_dir(stock, name)
    return LoadedDataset(dataset, f"tfds:{name}/{stock.name} in {data_dir}", tfds_store.split_fingerprints(dataset))


def _not_found(name: str, data_dir: Path, roots: list[Path]) -> UserError:
    if name in KNOWN_FOLDERS:
        looked = ", ".join(str(r) for r in roots)
        return UserError(
            f"dataset '{name}' is neither prepared by TFDS in '{data_dir}' nor an ImageNet-layout folder "
            f"(train/<class>/*.JPEG, val/<class>/*.JPEG) named {' or '.join(KNOWN_FOLDERS[name][1])} under [{looked}]. "
            f"Prepare it with TFDS where it can download (tfds build {name} --file_format=array_record) and copy "
            f"the data dir here, or set {LOCAL_DATA_ENV}=DIR (the folder holding it)."
        )
    if name not in KNOWN:
        return UserError(
            f"dataset '{name}' is neither a known dataset nor imported in '{data_dir}'."
            f"{did_you_mean(name, available_datasets(data_dir))} Known: {', '.join(sorted(KNOWN))}; "
            f"import an image folder with: cnn-jax data import {name} --from DIR"
        )
    looked = ", ".join(str(r) for r in roots)
    return UserError(
        f"dataset '{name}' is not prepared in '{data_dir}' and no local copy was found under [{looked}] "
        f"(folder names {', '.join(KNOWN[name].local_dirnames)}). Fix: set {LOCAL_DATA_ENV}=DIR (a folder holding "
        f"one of those), or run: cnn-jax data import {name} --from DIR, or install tensorflow-cpu (extra "
        "'tfds-download') to let TFDS download it."
    )


# ----------------------------------------------------------------------------- streamed data

SOURCES = ("auto", "device", "stream")
STREAM_CACHE_SUBDIR = "cnn_jax_streams"  # labels and fingerprints of streamed datasets, computed once
EXTRACTED_SUBDIR = "cnn_jax_extracted"  # image folders unpacked from archives, for streaming


@dataclass(frozen=True)
class StreamChoice:
    streamed: bool
    reason: str  # for the manifest and the log


def choose_source(name: str, data_dir: Path, roots: list[Path], mode: str, budget_mb: float) -> StreamChoice:
    """Device-resident or streamed: `mode` decides, or (auto) whether the dataset has one image size and its
    uint8 arrays fit in `budget_mb` (judged from what is known without decoding it)."""
    if mode != "auto":
        return StreamChoice(mode == "stream", f"dataset.source = {mode}")
    known = _known_size(name, data_dir, roots)
    if known is None:
        return StreamChoice(False, "auto: a local layout other than an image folder is imported and held on the device")
    shape, examples = known
    if shape is None:
        return StreamChoice(True, "auto: image sizes vary")
    megabytes = examples * int(np.prod(shape)) / 2**20
    streamed = megabytes > budget_mb
    relation = "exceed" if streamed else "fit in"
    return StreamChoice(
        streamed, f"auto: {examples} images of {shape} ({megabytes:.0f} MB) {relation} dataset.device_budget_mb"
    )


def _known_size(name: str, data_dir: Path, roots: list[Path]) -> tuple[tuple | None, int] | None:
    """(image shape or None when sizes vary, example count) from what says so without decoding; None when
    nothing does (an unknown local layout)."""
    stock = tfds_store.stock_dir(data_dir, name)
    if stock is not None:
        return tfds_store.stored_size(stock)
    imported = tfds_store.imported_dir(data_dir, name)
    if imported.exists():
        provenance = tfds_store.read_provenance(imported)
        counts = provenance.get("class_counts", {})
        return tuple(provenance["image_shape"]), sum(sum(c) for c in counts.values())
    local = find_local(name, roots)
    if local is not None and _is_image_folder(local):
        classes = streamed_lib.folder_classes(local)
        split, _ = _folder_split(local, "train", classes)
        shape = streamed_lib.probe_shape(split)
        files = sum(1 for _ in local.glob("*/*/*"))
        return shape, files
    if name in KNOWN:
        known = KNOWN[name]
        return known.image_shape, sum(sum(c) for c in known.class_counts.values())
    return None


def _image_folder_archive(local: Path | None) -> Path | None:
    """The tar archive of an image folder that `local` is (or holds alone), if any."""
    if local is None:
        return None
    if local.is_dir():
        if (local / "train").exists():
            return None
        tars = sorted(p for p in local.iterdir() if p.is_file() and tarfile.is_tarfile(p))
        local = tars[0] if len(tars) == 1 else None
    return local if local is not None and local.is_file() and tarfile.is_tarfile(local) else None


def _extracted(name: str, archive: Path, data_dir: Path, log) -> Path:
    """The image folder in `archive`, unpacked once into the data dir (streamed images stay encoded)."""
    target = Path(data_dir) / EXTRACTED_SUBDIR / name
    with locked(target.parent / f".{name}.lock"):
        if not target.exists():
            log(f"Unpacking {archive} into {target} (once; streamed runs read the images from there).")
            partial = target.with_name(f".{name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            with tarfile.open(archive) as tar:
                tar.extractall(partial, filter="data")
            roots = [p.parent.parent for p in partial.glob("**/train/*") if p.is_dir()]
            if not roots:
                shutil.rmtree(partial)
                raise UserError(f"'{archive}' holds no image folder <split>/<class>/<image>; it cannot be streamed.")
            shutil.move(str(roots[0]), str(target))
            shutil.rmtree(partial, ignore_errors=True)
    return target


def _is_image_folder(path: Path) -> bool:
    return path.is_dir() and (path / "train").is_dir()


def _folder_split(root: Path, split: str, classes: tuple[str, ...]) -> tuple[streamed_lib.StreamedSplit, np.ndarray]:
    source, labels = streamed_lib.list_folder(root, split, classes)
    return streamed_lib.StreamedSplit(source, np.arange(len(labels)), labels), labels


def load_streamed(name: str, data_dir: Path, roots: list[Path], log=print) -> LoadedDataset:
    """The dataset `name` as streamed splits, from the first place that has it: a prepared TFDS dataset, a
    local image folder (read in place; an archive of one is unpacked once), else the import of the local
    files (made now if needed), read record by record."""
    cache = Path(data_dir) / STREAM_CACHE_SUBDIR
    stock = tfds_store.stock_dir(data_dir, name)
    if stock is not None:
        splits, fingerprints = _record_splits(stock, cache / name / stock.name)
        classes = tfds_store.class_names(stock)
        return _streamed(name, splits, classes, f"tfds:{name}/{stock.name} in {data_dir} (streamed)", fingerprints)
    local = find_local(name, roots)
    archive = _image_folder_archive(local)
    if archive is not None:
        local = _extracted(name, archive, data_dir, log)
    if local is not None and _is_image_folder(local):
        classes = streamed_lib.folder_classes(local)
        folders = sorted(p.name for p in local.iterdir() if p.is_dir())
        test_name = streamed_lib.test_split_name(folders)
        splits, fingerprints = {}, {}
        for folder in folders:
            role = "test" if folder == test_name else folder
            splits[role], labels = _folder_split(local, folder, classes)
            fingerprints[role] = splits[role].source.fingerprint(labels, cache / "fingerprints")
        return _streamed(name, splits, classes, f"image folder {local} (streamed; encoded files hashed)", fingerprints)
    imported = tfds_store.imported_dir(data_dir, name)
    if not imported.exists():
        load(name, data_dir, roots, log)  # imports it (the way a device-resident run would)
    provenance = tfds_store.read_provenance(imported)
    splits, _ = _record_splits(imported, None)
    classes = tfds_store.class_names(imported)
    source = f"imported from {provenance.get('source', '?')} into {imported} (streamed)"
    return _streamed(name, splits, classes, source, provenance.get("fingerprints", {}))


def _record_splits(builder_dir: Path, cache: Path | None) -> tuple[dict, dict]:
    """Every split of a prepared TFDS dataset as streamed splits (labels read once, cached in `cache`), and
    fingerprints of their labels and the dataset's description (the records are not hashed)."""
    splits, fingerprints = {}, {}
    info = (builder_dir / "dataset_info.json").read_bytes()
    for split in tfds_store.split_names(builder_dir):
        source = streamed_lib.RecordSource(str(builder_dir), split)
        labels_file = cache / f"{split}.labels.npz" if cache else None
        if labels_file is not None and labels_file.exists():
            with np.load(labels_file) as stored:
                labels, rows = stored["labels"], stored["rows"]
        else:
            labels, rows = source.labels_and_order()
            labels = labels[rows]
            if labels_file is not None:
                labels_file.parent.mkdir(parents=True, exist_ok=True)
                np.savez(labels_file, labels=labels, rows=rows)
        role = "test" if split == streamed_lib.test_split_name(tfds_store.split_names(builder_dir)) else split
        splits[role] = streamed_lib.StreamedSplit(source, rows.astype(np.int64), labels.astype(np.int32))
        fingerprints[role] = hashlib.sha256(info + labels.astype(np.int64).tobytes()).hexdigest()
    return splits, fingerprints


def _streamed(name: str, splits: dict, classes: tuple[str, ...], source: str, fingerprints: dict) -> LoadedDataset:
    for needed in ("train", "test"):
        if needed not in splits:
            raise UserError(
                f"dataset '{name}' ({source}) has no '{needed}' split (found {sorted(splits)}); a test split may "
                f"be named {' or '.join(streamed_lib.TEST_SPLIT_NAMES)}."
            )
    shape = streamed_lib.probe_shape(splits["train"])
    known = KNOWN.get(name)
    if known is not None:  # what `verify` checks of a resident copy
        counts = {s: tuple(np.bincount(d.labels, minlength=len(classes)).tolist()) for s, d in splits.items()}
        if shape != known.image_shape or any(counts.get(s) != c for s, c in known.class_counts.items()):
            raise UserError(
                f"dataset '{name}' ({source}): images {shape} and class counts {counts} differ from the published "
                f"{known.image_shape} and {dict(known.class_counts)}. The files are incomplete or not this dataset."
            )
    dataset = streamed_lib.StreamedDataset(name, splits, classes, shape)
    return LoadedDataset(dataset, source, fingerprints)
