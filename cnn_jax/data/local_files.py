"""Readers for datasets as distributed on disk: IDX (MNIST family), CIFAR batches, image folders."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnn_jax.data.arrays import ArrayDataset, Split
from cnn_jax.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_local(name: str, path: Path, class_names: tuple[str, ...] = ()) -> ArrayDataset:
    """Read any supported layout at `path`, detected from its contents."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"data source '{path}' does not exist.")
    if path.is_file() and tarfile.is_tarfile(path):
        return read_image_folder(name, path)
    if path.is_dir():
        if _find(path, IDX_FILES["train"][0]):
            return read_idx_dir(name, path, class_names)
        if (path / "data_batch_1").exists() or (path / "train").is_file():
            return read_cifar_python(name, path)
        if (path / "data_batch_1.bin").exists() or (path / "train.bin").exists():
            return read_cifar_binary(name, path)
        if (path / "train").is_dir():
            return read_image_folder(name, path)
        tars = sorted(p for p in path.iterdir() if p.is_file() and tarfile.is_tarfile(p))
        if len(tars) == 1:
            return read_image_folder(name, tars[0])
    raise UserError(
        f"'{path}' holds no dataset layout I know: expected IDX files (train-images-idx3-ubyte[.gz], ...), "
        "CIFAR python or binary batches, or an image folder <root>/<split>/<class>/*.png|jpg (or a .tar/.tgz of one)."
    )


# ----------------------------------------------------------------------------- IDX


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (optionally gzip): a uint8 array with the header's dimensions."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(
            f"IDX file '{path}' has a wrong magic number ({raw[:4].hex()}); expected 0x000008NN for uint8 data."
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"IDX file '{path}' is truncated inside its header.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise UserError(
            f"IDX file '{path}' is truncated or padded: header says {shape} = {expected} bytes, "
            f"payload has {len(raw) - header}. Re-download the file."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_dir(name: str, directory: Path, class_names: tuple[str, ...] = ()) -> ArrayDataset:
    splits = {}
    for split, (image_stem, label_stem) in IDX_FILES.items():
        image_file, label_file = _find(directory, image_stem), _find(directory, label_stem)
        if image_file is None or label_file is None:
            raise UserError(f"IDX directory '{directory}' lacks {image_stem}[.gz] or {label_stem}[.gz].")
        images, labels = read_idx(image_file), read_idx(label_file)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(
                f"IDX files in '{directory}' for split '{split}' disagree: images {images.shape}, "
                f"labels {labels.shape}."
            )
        splits[split] = Split(images[..., None], labels.astype(np.int32))
    num_classes = int(max(s.labels.max() for s in splits.values())) + 1
    return ArrayDataset(name, splits, class_names or tuple(str(i) for i in range(num_classes)))


# ----------------------------------------------------------------------------- CIFAR


# What CIFAR's python batches hold besides dicts, lists, bytes and numbers: numpy arrays (rebuilt by these,
# under numpy 1 and 2 names, for the original protocol-2 files and for newer pickles), and the bytes of a
# protocol-2 pickle written by Python 3 (`_codecs.encode`, also on PyTorch's weights_only allow-list).
CIFAR_PICKLE_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain data and numpy arrays: a pickle naming any other global (a
    function to call, a class to build) is refused, so a crafted dataset file cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it names '{module}.{name}'")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return _CifarUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"'{path}' is not a CIFAR python batch ({exc}; such files hold only dicts, lists, bytes and numpy "
            "arrays); refusing to unpickle it, since a pickle can run code. Use the original dataset files."
        ) from None


def _chw_rows_to_nhwc(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def read_cifar_python(name: str, directory: Path) -> ArrayDataset:
    """cifar-10-batches-py (data_batch_1..5, test_batch) or cifar-100-python (train, test)."""
    if (directory / "data_batch_1").exists():
        files = {"train": [directory / f"data_batch_{i}" for i in range(1, 6)], "test": [directory / "test_batch"]}
        label_key, meta, names_key = b"labels", directory / "batches.meta", b"label_names"
    else:
        files = {"train": [directory / "train"], "test": [directory / "test"]}
        label_key, meta, names_key = b"fine_labels", directory / "meta", b"fine_label_names"
    splits = {}
    for split, paths in files.items():
        batches = [_unpickle(p) for p in paths]
        images = np.concatenate([_chw_rows_to_nhwc(b[b"data"]) for b in batches])
        labels = np.concatenate([np.asarray(b[label_key], dtype=np.int32) for b in batches])
        splits[split] = Split(images, labels)
    names = tuple(n.decode() for n in _unpickle(meta)[names_key]) if meta.exists() else ()
    return ArrayDataset(name, splits, names or _numbered(splits))


def read_cifar_binary(name: str, directory: Path) -> ArrayDataset:
    """cifar-10-batches-bin (<label><3072 bytes>) or cifar-100-binary (<coarse><fine><3072 bytes>)."""
    if (directory / "data_batch_1.bin").exists():
        files = {
            "train": [directory / f"data_batch_{i}.bin" for i in range(1, 6)],
            "test": [directory / "test_batch.bin"],
        }
        label_bytes, meta = 1, directory / "batches.meta.txt"
    else:
        files = {"train": [directory / "train.bin"], "test": [directory / "test.bin"]}
        label_bytes, meta = 2, directory / "fine_label_names.txt"
    record = label_bytes + 3072
    splits = {}
    for split, paths in files.items():
        raw = np.concatenate([np.fromfile(p, dtype=np.uint8) for p in paths])
        if raw.size % record:
            raise UserError(
                f"CIFAR binary files for split '{split}' in '{directory}' are truncated ({raw.size} bytes is not "
                f"a multiple of {record})."
            )
        raw = raw.reshape(-1, record)
        splits[split] = Split(_chw_rows_to_nhwc(raw[:, label_bytes:]), raw[:, label_bytes - 1].astype(np.int32))
    names = tuple(line.strip() for line in meta.read_text().splitlines() if line.strip()) if meta.exists() else ()
    return ArrayDataset(name, splits, names or _numbered(splits))


def _numbered(splits: dict[str, Split]) -> tuple[str, ...]:
    return tuple(str(i) for i in range(int(max(s.labels.max() for s in splits.values())) + 1))


# ----------------------------------------------------------------------------- image folders


def read_image_folder(name: str, root: Path) -> ArrayDataset:
    """`root/<split>/<class>/*.png|jpg` (a directory or a tar archive); classes sorted by name."""
    if root.is_dir():
        empty = sorted(str(d.relative_to(root)) for d in root.glob("*/*") if d.is_dir() and not any(d.iterdir()))
        if empty:
            raise UserError(f"image folder '{root}': class folder '{empty[0]}' is empty; remove it or add images.")
    files = sorted(_list_image_folder(root))
    if not files:
        raise UserError(f"image folder '{root}' has no files of the form <split>/<class>/<image>.")
    bad = [f"{s}/{c}/{f}" for s, c, f, _ in files if not f.lower().endswith(IMAGE_SUFFIXES)]
    if bad:
        raise UserError(
            f"image folder '{root}' holds non-image files, e.g. '{bad[0]}' ({len(bad)} in all); "
            f"only {', '.join(IMAGE_SUFFIXES)} are allowed. Remove them."
        )
    split_names = sorted({s for s, *_ in files})
    class_names = tuple(sorted({c for _, c, *_ in files}))
    splits = {}
    for split in split_names:
        present = {c for s, c, *_ in files if s == split}
        if set(class_names) - present:
            raise UserError(
                f"image folder '{root}': split '{split}' has no images for classes "
                f"{sorted(set(class_names) - present)}; every class needs images in every split."
            )
        images, labels, shape = [], [], None
        for s, c, f, load in files:
            if s != split:
                continue
            image = decode_image(load(), f"{s}/{c}/{f}", root)
            if shape is None:
                shape = image.shape
            elif image.shape != shape:
                raise UserError(
                    f"image folder '{root}' mixes image sizes: '{s}/{c}/{f}' is {image.shape}, "
                    f"earlier images are {shape}. Resize them to one size first."
                )
            images.append(image)
            labels.append(class_names.index(c))
        splits[split] = Split(np.stack(images), np.asarray(labels, dtype=np.int32))
    return ArrayDataset(name, splits, class_names)


def image_array(source) -> np.ndarray:
    """uint8 (H, W, 1) for grey images, (H, W, 3) for the rest, from a path or a file object; raises
    PIL's UnidentifiedImageError or OSError for what is not a readable image."""
    with Image.open(source) as img:
        array = np.asarray(img.convert("L") if img.mode in ("L", "1", "I;16", "I") else img.convert("RGB"))
    return array[..., None] if array.ndim == 2 else array


def decode_image(data: bytes, relative: str, root: Path) -> np.ndarray:
    try:
        return image_array(io.BytesIO(data))
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"image folder '{root}': '{relative}' is not a readable image ({exc}).") from None


def _list_image_folder(root: Path) -> Iterator[tuple[str, str, str, callable]]:
    """(split, class, filename, read_bytes) for every file three levels below the root."""
    if root.is_dir():
        for path in root.glob("*/*/*"):
            if path.is_file():
                yield path.parts[-3], path.parts[-2], path.name, path.read_bytes
        return
    with tarfile.open(root) as archive:  # read in stream order: seeking back in a .tgz is quadratic
        members = [(m.name.removeprefix("./").split("/"), archive.extractfile(m).read()) for m in archive if m.isfile()]
    depth = min((len(parts) for parts, _ in members), default=0)
    for parts, data in members:
        if len(parts) == depth and depth >= 3:
            yield parts[-3], parts[-2], parts[-1], (lambda data=data: data)
