"""Streamed data (data/streamed.py, data/loader.py, train/streaming.py) on real CIFAR-10 JPEGs: the same
numbers as the device pipeline whatever the worker count, exact resume, ImageNet-style folders and TFDS
datasets, bad images, and the automatic choice of pipeline."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from cnn_jax import config as config_lib
from cnn_jax import rundir
from cnn_jax.data import catalog, streamed
from cnn_jax.data.loader import HostTransform, TrainReader, batches, example_rng
from cnn_jax.errors import UserError
from cnn_jax.loading import load_model
from cnn_jax.train import streaming
from cnn_jax.train.loop import train
from cnn_jax.train.setup import DataPaths

from conftest import shared

QUIET = {"progress": False, "log": lambda *_: None}
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def extract_cifar(target: Path, per_class: dict[str, int]) -> Path:
    """The first `per_class[split]` JPEGs of every class of the real CIFAR-10 copy, as an image folder."""
    archive = shared("cifar10-jpeg") / "cifar10-jpeg.tgz"
    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = member.name.removeprefix("./").split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] not in per_class:
                continue
            key = (parts[0], parts[1])
            if counts.get(key, 0) < per_class[parts[0]]:
                counts[key] = counts.get(key, 0) + 1
                path = target / member.name.removeprefix("./")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(tar.extractfile(member).read())
    return target


@pytest.fixture(scope="module")
def jpeg_root(tmp_path_factory) -> Path:
    """A folder holding 'cifar_jpeg': 60 train and 30 test JPEGs of each class."""
    root = tmp_path_factory.mktemp("jpeg")
    extract_cifar(root / "cifar_jpeg", {"train": 60, "test": 30})
    return root


def config_for(name: str, **fields) -> config_lib.ConfigDict:
    overrides = {
        "experiment": "streaming",
        "dataset.name": name,
        "model.name": "ablation_net",
        "model.stages": 2,
        "model.width": 8,
        "model.batch_norm": True,
        "train.batch_size": 60,
        "train.eval_batch_size": 100,
        "train.epochs": 2,
        "train.log_every_steps": 3,
        "checkpoint.every_steps": 4,
        "dataset.augment.random_crop_padding": 2,
        "dataset.augment.horizontal_flip": True,
        "dataset.augment.rotation": 5.0,
        **fields,
    }
    return config_lib.apply_overrides(config_lib.default_config(), overrides)


def leaves(run_dir: Path) -> list[np.ndarray]:
    _, variables = load_model(run_dir, "latest")
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(variables)]


def science(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "images_per_sec"} for r in rundir.read_metrics(run_dir)]


@pytest.fixture(scope="module")
def three_runs(jpeg_root, tmp_path_factory):
    """One config trained from the device, and streamed with 0 and with 2 worker processes."""
    out = tmp_path_factory.mktemp("runs")
    paths = DataPaths(out / "tfds", (jpeg_root,))
    runs = {}
    for source, workers in (("device", 0), ("stream", 0), ("stream", 2)):
        config = config_for("cifar_jpeg", **{"dataset.source": source, "dataset.workers": workers})
        run_dir = out / f"{source}{workers}"
        runs[(source, workers)] = (run_dir, train(config, run_dir, paths, **QUIET), config)
    return runs, paths


def test_streamed_runs_equal_the_device_run_bitwise_with_0_or_2_workers(three_runs):
    runs, _ = three_runs
    device_dir, device_result, device_config = runs[("device", 0)]
    for key in (("stream", 0), ("stream", 2)):
        run_dir, result, config = runs[key]
        for a, b in zip(leaves(device_dir), leaves(run_dir), strict=True):
            np.testing.assert_array_equal(a, b)
        assert science(run_dir) == science(device_dir)
        assert result["final"] == device_result["final"]
        assert config_lib.run_id(config) == config_lib.run_id(device_config)  # how data is read is no part of it
        data = json.loads((run_dir / "manifest.json").read_text())["data"]
        assert data["pipeline"]["pipeline"] == "stream" and data["pipeline"]["workers"] == key[1]
        assert 0.0 < result["data_wait_fraction"] < 1.0 and result["data_wait_seconds"] > 0
    device_data = json.loads((device_dir / "manifest.json").read_text())["data"]
    assert device_data["pipeline"] == {"pipeline": "device"} and device_result["data_wait_fraction"] == 0.0
    assert device_data["normalization"] == data["normalization"]  # the same statistics, read either way
    assert len(rundir.read_metrics(device_dir)) > 4 and device_result["final"]["test_accuracy"] > 0.1


@pytest.mark.slow
def test_a_streamed_run_killed_mid_epoch_resumes_bitwise_even_with_other_workers(three_runs, tmp_path):
    runs, paths = three_runs
    unbroken, _, config = runs[("stream", 0)]
    crashed = tmp_path / "crashed"
    assert train(config, crashed, paths, stop_at_step=13, **QUIET) is None  # 9 steps an epoch: mid-epoch 2
    config.dataset.workers = 2
    result = train(config, crashed, paths, **QUIET)
    assert result["first_step"] == 12  # the last checkpoint before the crash
    for a, b in zip(leaves(unbroken), leaves(crashed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert science(crashed) == science(unbroken)


def test_batches_do_not_depend_on_the_worker_count_and_random_crops_on_the_example(jpeg_root):
    classes = streamed.folder_classes(jpeg_root / "cifar_jpeg")
    source, labels = streamed.list_folder(jpeg_root / "cifar_jpeg", "train", classes)
    split = streamed.StreamedSplit(source, np.arange(len(labels)), labels)
    order = np.random.default_rng(0).permutation(len(split))[None]
    transform = HostTransform(size=24, random_resized_crop=True)
    reader = TrainReader(split, order, 3, 10, 60, (0, 60), transform, 7, False)
    read = {}
    for workers in (0, 2):
        with batches(reader, 30, 34, workers) as iterator:
            read[workers] = list(iterator)
    for a, b in zip(read[0], read[2], strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    first = read[0][0]
    assert first["image"].shape == (60, 24, 24, 3) and first["image"].dtype == np.uint8
    np.testing.assert_array_equal(first["label"], labels[order[0][:60]])
    position = int(order[0][0])
    again = transform.train(split.read(position), example_rng(7, 3, position))  # epoch 3, that example
    np.testing.assert_array_equal(first["image"][0], again)
    other_epoch = transform.train(split.read(position), example_rng(7, 4, position))
    assert not np.array_equal(again, other_epoch)


def test_host_transform_follows_the_imagenet_recipe():
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (30, 80, 3), dtype=np.uint8)
    t = HostTransform(size=16, random_resized_crop=True)
    assert t.eval(wide).shape == (16, 16, 3)  # shorter side to round(16 / 0.875) = 18, then the central 16
    expected = np.asarray(Image.fromarray(wide).resize((48, 18), Image.BILINEAR))[1:17, 16:32]
    np.testing.assert_array_equal(t.eval(wide), expected)
    tiny_grey = np.full((5, 7, 1), 200, np.uint8)  # smaller than the crop: upscaled; grey: three channels
    np.testing.assert_array_equal(t.eval(tiny_grey), np.full((16, 16, 3), 200, np.uint8))
    boxes = [t._crop_box(30, 80, np.random.default_rng(s)) for s in range(200)]
    for left, top, right, bottom in boxes:
        assert 0 <= left < right <= 80 and 0 <= top < bottom <= 30
        w, h = right - left, bottom - top
        assert 0.08 * 2400 * 0.8 <= w * h <= 2400 and 3 / 4 * 0.8 <= w / h <= 4 / 3 * 1.25
    assert len(set(boxes)) > 150
    fixed = HostTransform(shape=(32, 32, 3))
    assert fixed.eval(np.zeros((32, 32, 3), np.uint8)).shape == (32, 32, 3)
    with pytest.raises(ValueError, match="is 30x80x3 where the others are 32x32x3; set dataset.image_size"):
        fixed.eval(wide)


def test_a_bad_jpeg_stops_the_run_naming_it_or_is_skipped_and_counted(jpeg_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(jpeg_root / "cifar_jpeg", root / "bad_jpeg")
    bad = sorted((root / "bad_jpeg" / "train" / "cat").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:150])  # truncated
    paths = DataPaths(tmp_path / "tfds", (root,))
    fields = {"dataset.source": "stream", "dataset.validation_fraction": 0.0}
    stopping = config_for("bad_jpeg", **fields)
    with pytest.raises(UserError, match=rf"'train/cat/{bad.name}' is not a readable image .*dataset.bad_images=skip"):
        train(stopping, tmp_path / "stop", paths, **QUIET)
    assert not (tmp_path / "stop").exists()  # found while reading the statistics, before anything is written
    skipping = config_for("bad_jpeg", **fields, **{"dataset.bad_images": "skip"})
    result = train(skipping, tmp_path / "skip", paths, **QUIET)
    assert result["bad_images_skipped"] == 2  # read once in each of the two epochs
    assert result["bad_images"][0] == f"train/cat/{bad.name}"
    assert config_lib.run_id(skipping) != config_lib.run_id(stopping)  # skipping changes what trains


@pytest.mark.slow
def test_a_reader_failing_mid_run_is_one_line_and_the_last_checkpoint_stays(jpeg_root, tmp_path, monkeypatch):
    paths = DataPaths(tmp_path / "tfds", (jpeg_root,))
    config = config_for("cifar_jpeg", **{"dataset.source": "stream", "dataset.validation_fraction": 0.0})
    reads = {"left": 600 + 9 * 60}  # the statistics' pass, then the batches of steps 0-8
    original = streamed.FolderSource.read

    def failing(self, row):
        reads["left"] -= 1
        if reads["left"] < 0:
            raise RuntimeError("disk went away")
        return original(self, row)

    monkeypatch.setattr(streamed.FolderSource, "read", failing)
    with pytest.raises(UserError, match=r"the data pipeline failed \(RuntimeError: disk went away\); the run stopped"):
        train(config, tmp_path / "run", paths, **QUIET)
    monkeypatch.setattr(streamed.FolderSource, "read", original)
    assert load_model(tmp_path / "run", "latest")[1]  # the checkpoint of step 8 is whole
    result = train(config, tmp_path / "run", paths, **QUIET)
    assert result["first_step"] == 8


def test_folders_without_images_or_with_other_files_are_refused(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "b").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "train" / "a" / "x.png")
    with pytest.raises(UserError, match=r"class folder 'train/b' is empty or missing"):
        streamed.list_folder(tmp_path, "train", ("a", "b"))
    Image.new("RGB", (4, 4)).save(tmp_path / "train" / "b" / "y.png")
    (tmp_path / "train" / "b" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match=r"non-image files, e.g. 'train/b/notes.txt'"):
        streamed.list_folder(tmp_path, "train", ("a", "b"))


def varied_sizes(source: Path, target: Path, splits: dict[str, str], seed: int = 0) -> Path:
    """Each JPEG of `source` (an image folder) resized to a random size from 20 to 90 pixels a side, saved
    as `target/<splits[split]>/<class>/<name>.JPEG` (ImageNet's layout)."""
    rng = np.random.default_rng(seed)
    for path in sorted(source.glob("*/*/*.jpg")):
        split, label = path.parts[-3], path.parts[-2]
        out = target / splits[split] / label / (path.stem + ".JPEG")
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            image.resize(tuple(int(s) for s in rng.integers(20, 91, 2)), Image.BILINEAR).save(out, quality=90)
    return target


def test_an_imagenet_layout_folder_of_varied_sizes_streams_at_image_size(jpeg_root, tmp_path):
    varied_sizes(jpeg_root / "cifar_jpeg", tmp_path / "data" / "tiny_imagenet", {"train": "train", "test": "val"})
    paths = DataPaths(tmp_path / "tfds", (tmp_path / "data",))
    loose = config_for("tiny_imagenet", **{"dataset.augment.random_crop_padding": 0, "train.epochs": 1})
    with pytest.raises(UserError, match=r"vary in size; set dataset.image_size"):
        train(loose, tmp_path / "loose", paths, **QUIET)
    config = config_for(
        "tiny_imagenet",
        **{"dataset.image_size": 28, "dataset.augment.random_resized_crop": True, "train.epochs": 1},
    )
    result = train(config, tmp_path / "run", paths, **QUIET)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())["data"]
    assert manifest["pipeline_reason"] == "auto: image sizes vary"
    assert manifest["image_shape"] == [28, 28, 3] and manifest["stored_image_shape"] == "varies"
    assert manifest["sizes"] == {"train": 600, "test": 300}  # ImageNet's 'val' folder is the test split
    assert manifest["pipeline"]["host_transform"]["random_resized_crop"] is True
    assert 0.0 <= result["final"]["test_accuracy"] <= 1.0 and result["steps"] == 9


def write_tfds_imagenette(data_dir: Path, source: Path) -> dict[str, list[np.ndarray]]:
    """A TFDS dataset named 'imagenette' (PNG-encoded Image features of varied sizes, splits 'train' and
    'validation'), prepared the way TFDS prepares one; returns the images it holds, by split."""
    import tensorflow_datasets as tfds

    images = {"train": [], "validation": []}
    rng = np.random.default_rng(1)
    for split, folder in (("train", "train"), ("validation", "test")):
        for label, name in enumerate(CLASSES[:3]):
            for path in sorted((source / folder / name).iterdir())[:6]:
                with Image.open(path) as image:
                    size = tuple(int(s) for s in rng.integers(24, 60, 2))
                    images[split].append((np.asarray(image.resize(size)), label))

    class Imagenette(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(encoding_format="png"),
                        "label": tfds.features.ClassLabel(names=CLASSES[:3]),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in images}

        def _generate_examples(self, split):
            for i, (array, label) in enumerate(images[split]):
                yield i, {"image": Image.fromarray(array), "label": label}

    Imagenette.name = "imagenette"
    with contextlib.redirect_stdout(io.StringIO()):
        Imagenette(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return images


@pytest.mark.slow
def test_a_tfds_prepared_imagenette_is_found_and_streamed_without_tensorflow(jpeg_root, tmp_path):
    images = write_tfds_imagenette(tmp_path / "tfds", jpeg_root / "cifar_jpeg")
    choice = catalog.choose_source("imagenette", tmp_path / "tfds", [], "auto", 4096)
    assert choice.streamed and choice.reason == "auto: image sizes vary"
    loaded = catalog.load_streamed("imagenette", tmp_path / "tfds", [])
    assert set(loaded.dataset.splits) == {"train", "test"} and loaded.dataset.image_shape is None
    test = loaded.dataset.splits["test"]  # TFDS's 'validation' split
    by_content = {a.tobytes(): label for a, label in images["validation"]}
    assert len(test) == len(by_content) == 18
    for position in range(len(test)):
        assert by_content[test.read(position).tobytes()] == test.labels[position]  # lossless, labels kept
    assert loaded.source.startswith("tfds:imagenette/1.0.0") and set(loaded.fingerprints) == {"train", "test"}
    config = config_for("imagenette", **{"dataset.image_size": 20, "train.batch_size": 6, "train.epochs": 1})
    config.dataset.validation_fraction = 0.0
    result = train(config, tmp_path / "run", DataPaths(tmp_path / "tfds", ()), **QUIET)
    assert result["steps"] == 3


def test_auto_keeps_fixed_size_data_that_fits_on_the_device_and_streams_the_rest(jpeg_root, tmp_path):
    roots = [jpeg_root]
    fits = catalog.choose_source("cifar_jpeg", tmp_path, roots, "auto", 4096)
    assert not fits.streamed and fits.reason.startswith("auto: 900 images of (32, 32, 3) (3 MB) fit in")
    over = catalog.choose_source("cifar_jpeg", tmp_path, roots, "auto", 1.0)
    assert over.streamed and "exceed dataset.device_budget_mb" in over.reason
    assert catalog.choose_source("cifar_jpeg", tmp_path, roots, "stream", 4096).streamed
    assert not catalog.choose_source("cifar_jpeg", tmp_path, roots, "device", 1.0).streamed


@pytest.mark.slow
def test_the_imagenet_classics_cpu_preset_streams_the_shared_cifar10_jpegs_through_each_model(tmp_path):
    """The preset's code path on the real JPEG copy in ../shared/data (unpacked once, read file by file): its first
    model (ResNet-50) two steps of random-resized 64x64 crops; the GPU presets differ only in data and scale (the
    other models' geometry is checked by test_verbs' preset tests)."""
    from cnn_jax.sweep.plan import load_plan

    shared("cifar10-jpeg")
    cut = {"dataset.train_subset": 100, "dataset.eval_subset": 100, "train.epochs": 1, "train.log_every_steps": 1}
    plan = load_plan(f"{Path(__file__).parents[1] / 'experiments' / 'imagenet_classics.py'}:cpu", cut)
    paths = DataPaths(tmp_path / "tfds", (shared("cifar10-jpeg").parent,))
    assert [run.config.model.name for run in plan.runs] == ["resnet50", "googlenet", "vgg16_bn"]
    for run in plan.runs[:1]:
        result = train(run.config, tmp_path / run.config.model.name, paths, **QUIET)
        assert result["steps"] == 2 and np.isfinite(result["final"]["val_loss"])
        data = json.loads((tmp_path / run.config.model.name / "manifest.json").read_text())["data"]
        assert data["source"].startswith(f"image folder {tmp_path / 'tfds' / 'cnn_jax_extracted' / 'cifar10'}")
        assert data["image_shape"] == [64, 64, 3] and data["sizes"] == {"train": 50_000, "test": 10_000}


class DyingReader:
    """A reader whose worker process dies at element 5, as an out-of-memory kill would end it."""

    def __call__(self, index: int) -> dict:
        if index == 5:
            os._exit(3)
        return {"image": np.zeros((2, 2, 2, 1), np.uint8)}


@pytest.mark.slow
def test_a_worker_process_that_dies_stops_the_run_with_one_line():
    with pytest.raises(UserError, match=r"^the data pipeline failed \(RuntimeError: Worker process was terminated"):
        with streaming.reading(), batches(DyingReader(), 0, 20, 2) as iterator:
            for _ in iterator:
                pass
