"""Local dataset readers on the real files in ../shared/data and on small files in the official formats."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from cnn_jax.data import catalog
from cnn_jax.data.arrays import class_counts
from cnn_jax.data.local_files import read_idx, read_local
from cnn_jax.errors import UserError

from conftest import shared

# sha256 of the uncompressed IDX payloads, from ../shared/data/README.md
IDX_SHA256 = {
    "mnist/train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "fashion-mnist/t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


@pytest.mark.parametrize("name, folder", [("mnist", "mnist"), ("fashion_mnist", "fashion-mnist")])
def test_real_idx_datasets_have_published_sizes_and_class_counts(name, folder):
    dataset = read_local(name, shared(folder), catalog.KNOWN[name].class_names)
    assert {s: len(d) for s, d in dataset.splits.items()} == {"train": 60000, "test": 10000}
    assert dataset.image_shape == (28, 28, 1)
    for split in ("train", "test"):
        assert tuple(class_counts(dataset.splits[split], 10)) == catalog.KNOWN[name].class_counts[split]
    catalog.verify(dataset)


@pytest.mark.parametrize("relative, digest", sorted(IDX_SHA256.items()))
def test_idx_payload_matches_the_published_checksum(relative, digest):
    folder, stem = relative.split("/")
    raw = gzip.decompress((shared(folder) / f"{stem}.gz").read_bytes())
    assert hashlib.sha256(raw).hexdigest() == digest
    array = read_idx(shared(folder) / f"{stem}.gz")
    assert array.size == len(raw) - (4 + 4 * array.ndim)


@pytest.mark.slow
def test_real_cifar10_jpeg_folder_has_50000_10000_rgb_images_balanced():
    archive = shared("cifar10-jpeg") / "cifar10-jpeg.tgz"
    dataset = read_local("cifar10", archive)
    assert {s: len(d) for s, d in dataset.splits.items()} == {"train": 50000, "test": 10000}
    assert dataset.image_shape == (32, 32, 3)
    assert dataset.class_names == catalog.KNOWN["cifar10"].class_names
    assert class_counts(dataset.splits["train"], 10) == [5000] * 10
    assert class_counts(dataset.splits["test"], 10) == [1000] * 10
    catalog.verify(dataset)


def _write_idx(path, array, magic_type=0x08):
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_idx_with_wrong_magic_or_truncated_payload_is_reported(tmp_path):
    good = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    _write_idx(tmp_path / "ok.gz", good)
    assert np.array_equal(read_idx(tmp_path / "ok.gz"), good)
    _write_idx(tmp_path / "magic.gz", good, magic_type=0x0D)
    with pytest.raises(UserError, match="wrong magic number"):
        read_idx(tmp_path / "magic.gz")
    raw = gzip.decompress((tmp_path / "ok.gz").read_bytes())
    (tmp_path / "short.gz").write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(UserError, match="truncated or padded.*payload has 13"):
        read_idx(tmp_path / "short.gz")


def _cifar_rows(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n)


def test_cifar10_python_batches_are_read_in_order_as_nhwc(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rows = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data, labels = _cifar_rows(4, i)
        rows[name] = (data, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels.tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in catalog.KNOWN["cifar10"].class_names]}, f)
    dataset = read_local("cifar10", folder)
    train = dataset.splits["train"]
    assert train.images.shape == (20, 32, 32, 3) and len(dataset.splits["test"]) == 4
    first = rows["data_batch_1"][0][0]
    # CIFAR rows are 1024 red, then 1024 green, then 1024 blue values, row-major.
    assert train.images[0, 0, 1, 0] == first[1] and train.images[0, 0, 0, 1] == first[1024]
    assert train.images[0, 1, 0, 2] == first[2048 + 32]
    assert np.array_equal(train.labels[4:8], rows["data_batch_2"][1])
    assert dataset.class_names[0] == "airplane"


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data, labels = _cifar_rows(4, 0)
    for k, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels.tolist()}, f, protocol=2 if k % 2 else None)
    assert len(read_local("cifar10", folder).splits["train"]) == 20  # protocols 2 and the default both read
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": data, b"labels": _RunsCode(tmp_path / "ran")}, f)
    with pytest.raises(UserError, match=r"data_batch_3' is not a CIFAR python batch \(it names '(posix|os)\.system'"):
        read_local("cifar10", folder)
    assert not (tmp_path / "ran").exists()


def test_cifar100_binary_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    for name, seed in (("train.bin", 0), ("test.bin", 1)):
        data, fine = _cifar_rows(3, seed)
        coarse = (fine // 5).astype(np.uint8)
        np.concatenate([coarse[:, None], fine.astype(np.uint8)[:, None], data], axis=1).tofile(folder / name)
    dataset = read_local("cifar100", folder)
    _, fine = _cifar_rows(3, 0)
    assert np.array_equal(dataset.splits["train"].labels, fine)
    (folder / "test.bin").write_bytes((folder / "test.bin").read_bytes()[:-7])
    with pytest.raises(UserError, match="truncated"):
        read_local("cifar100", folder)


def _png(shape=(8, 8, 3), value=0):
    buffer = io.BytesIO()
    Image.fromarray(np.full(shape, value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _folder(root, files):
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_image_folder_directory_and_tarball_give_the_same_dataset(tmp_path):
    root = _folder(
        tmp_path / "shapes",
        {
            "train/circle/a.png": _png(value=1),
            "train/square/b.png": _png(value=2),
            "train/square/c.png": _png(value=3),
            "test/circle/d.png": _png(value=4),
            "test/square/e.png": _png(value=5),
        },
    )
    from_dir = read_local("shapes", root)
    with tarfile.open(tmp_path / "shapes.tgz", "w:gz") as tar:
        tar.add(root, arcname="shapes")
    from_tar = read_local("shapes", tmp_path / "shapes.tgz")
    assert from_dir.class_names == from_tar.class_names == ("circle", "square")
    for split in ("train", "test"):
        assert np.array_equal(from_dir.splits[split].images, from_tar.splits[split].images)
        assert np.array_equal(from_dir.splits[split].labels, from_tar.splits[split].labels)
    assert from_dir.splits["train"].labels.tolist() == [0, 1, 1]
    assert from_dir.splits["train"].images[:, 0, 0, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "files, message",
    [
        (
            {"train/a/x.png": _png(), "train/a/notes.txt": b"hello", "test/a/y.png": _png()},
            "non-image files.*notes.txt",
        ),
        ({"train/a/x.png": _png(), "train/a/y.png": _png((9, 8, 3)), "test/a/z.png": _png()}, "mixes image sizes"),
        (
            {"train/a/x.png": _png(), "train/b/y.png": _png(), "test/a/z.png": _png()},
            "split 'test' has no images for classes \\['b'\\]",
        ),
        ({"train/a/x.png": b"not a png", "test/a/z.png": _png()}, "not a readable image"),
    ],
)
def test_bad_image_folders_are_rejected_with_the_offending_file(tmp_path, files, message):
    with pytest.raises(UserError, match=message):
        read_local("bad", _folder(tmp_path / "bad", files))


def test_empty_class_folder_is_rejected(tmp_path):
    root = _folder(tmp_path / "f", {"train/a/x.png": _png(), "test/a/y.png": _png()})
    (root / "train" / "b").mkdir()
    with pytest.raises(UserError, match="class folder 'train/b' is empty"):
        read_local("f", root)


def test_unknown_layout_says_what_is_expected(tmp_path):
    with pytest.raises(UserError, match="no dataset layout I know"):
        read_local("x", tmp_path)
