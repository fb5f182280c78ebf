"""Offline import: local files become a TFDS array_record dataset read back without TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cnn_jax.data import catalog, tfds_store
from cnn_jax.data.local_files import read_local
from cnn_jax.errors import UserError

from conftest import shared


@pytest.mark.slow
def test_import_round_trips_pixels_labels_and_order(fashion_data_dir):
    original = read_local("fashion_mnist", shared("fashion-mnist"))
    loaded = catalog.load("fashion_mnist", fashion_data_dir, [])
    assert loaded.source.startswith("imported from")
    for split in ("train", "test"):
        assert np.array_equal(loaded.dataset.splits[split].images, original.splits[split].images)
        assert np.array_equal(loaded.dataset.splits[split].labels, original.splits[split].labels)
    assert loaded.dataset.class_names[0] == "T-shirt/top"
    provenance = tfds_store.read_provenance(tfds_store.imported_dir(fashion_data_dir, "fashion_mnist"))
    assert provenance["fingerprints"] == loaded.fingerprints
    assert provenance["class_counts"]["test"] == [1000] * 10


@pytest.mark.slow
def test_a_fresh_process_reads_the_import_through_tfds_without_tensorflow(fashion_data_dir):
    script = (
        "import sys, tensorflow_datasets as tfds\n"
        f"b = tfds.builder_from_directory({str(tfds_store.imported_dir(fashion_data_dir, 'fashion_mnist'))!r})\n"
        "src = b.as_data_source(split='test')\n"
        "print(len(src), src[0]['image'].shape, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["10000", "(28,", "28,", "1)", "False"]


@pytest.mark.slow
def test_second_import_needs_force(fashion_data_dir):
    with pytest.raises(UserError, match="already imported.*--force"):
        catalog.import_dataset("fashion_mnist", shared("fashion-mnist"), fashion_data_dir)


@pytest.mark.slow
def test_local_files_are_found_and_imported_on_first_use(tmp_path, capsys):
    messages = []
    loaded = catalog.load("mnist", tmp_path, [shared("mnist").parent], log=messages.append)
    assert "Importing 'mnist'" in messages[0]
    assert capsys.readouterr().out == ""  # only the log speaks (TFDS's own lines are not printed)
    assert len(loaded.dataset.splits["train"]) == 60000
    assert tfds_store.imported_dir(tmp_path, "mnist").exists()
    again = catalog.load("mnist", tmp_path, [], log=messages.append)  # now from the TFDS dir alone
    assert again.fingerprints == loaded.fingerprints and len(messages) == 1


def test_import_refuses_files_that_are_not_the_named_dataset(tmp_path):
    with pytest.raises(UserError, match="class counts .* differ from the published"):
        catalog.import_dataset("fashion_mnist", shared("mnist"), tmp_path)
    assert not tfds_store.imported_dir(tmp_path, "fashion_mnist").exists()


def test_missing_dataset_explains_every_way_to_provide_it(tmp_path):
    with pytest.raises(UserError, match="not prepared in .* no local copy was found.*CNN_JAX_LOCAL_DATA.*data import"):
        catalog.load("cifar100", tmp_path, [tmp_path / "nowhere"])
    with pytest.raises(UserError, match="Did you mean 'fashion_mnist'"):
        catalog.load("fashion_mnis", tmp_path, [])


LOAD = (
    "import sys; from pathlib import Path; from cnn_jax.data import catalog\n"
    "d = catalog.load('mnist', Path(sys.argv[1]), [Path(sys.argv[2])], log=lambda *a: None)\n"
    "print(d.fingerprints['train'])"
)


@pytest.mark.slow
def test_runs_started_together_import_a_dataset_once_and_both_read_it(tmp_path):
    source = shared("mnist")
    loaders = [
        subprocess.Popen(
            [sys.executable, "-c", LOAD, str(tmp_path / "tfds"), str(source.parent)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in loaders]
    assert [p.returncode for p in loaders] == [0, 0], outputs
    fingerprints = [out.split()[-1] for out, _ in outputs]  # TFDS prints its own lines before
    assert fingerprints[0] == fingerprints[1] and len(fingerprints[0]) == 64
    assert tfds_store.list_imported(tmp_path / "tfds") == ["mnist"]


def test_decoded_arrays_are_used_only_while_they_match_the_import(tmp_path):
    data_dir = tmp_path / "tfds"
    catalog.import_dataset("fashion_mnist", shared("fashion-mnist"), data_dir)
    builder_dir = tfds_store.imported_dir(data_dir, "fashion_mnist")
    arrays = builder_dir / tfds_store.ARRAYS_DIR
    recorded = tfds_store.read_provenance(builder_dir)["fingerprints"]
    assert sorted(p.name for p in arrays.iterdir()) == ["classes.json", "test.npz", "train.npz"]
    assert catalog.load("fashion_mnist", data_dir, []).fingerprints == recorded
    with np.load(arrays / "test.npz") as saved:  # one pixel changed: the arrays no longer match the import
        images, labels = saved["images"].copy(), saved["labels"]
    images[0, 0, 0, 0] ^= 1
    np.savez(arrays / "test.npz", images=images, labels=labels)
    (arrays / "train.npz").write_bytes(b"truncated")
    loaded = catalog.load("fashion_mnist", data_dir, [])
    assert loaded.fingerprints == recorded  # read from the records, and the arrays written again
    with np.load(arrays / "test.npz") as saved:
        np.testing.assert_array_equal(saved["images"], loaded.dataset.splits["test"].images)
