"""The validation split: held out of train by class and by its own seed, and the only split that selects."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_jax import checkpoints
from cnn_jax import config as config_lib
from cnn_jax.data.arrays import Split, hold_out
from cnn_jax.errors import UserError
from cnn_jax.train.setup import build


def _split(counts: list[int]) -> Split:
    labels = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(labels))
    images = (np.arange(len(labels)) % 251).astype(np.uint8).reshape(-1, 1, 1, 1)
    return Split(images[order], labels[order].astype(np.int32))


def test_hold_out_is_stratified_disjoint_and_fixed_by_its_seed():
    split = _split([500, 300, 200])
    held = hold_out(split, 0.1, seed=0, num_classes=3)
    assert held.record["class_counts"] == [50, 30, 20] and held.record["examples"] == 100
    assert np.bincount(held.validation.labels).tolist() == [50, 30, 20]
    assert np.bincount(held.train.labels).tolist() == [450, 270, 180]
    both = np.concatenate([held.train.images[:, 0, 0, 0], held.validation.images[:, 0, 0, 0]])
    assert sorted(both.tolist()) == sorted(split.images[:, 0, 0, 0].tolist())  # a partition: nothing lost or doubled
    again = hold_out(split, 0.1, seed=0, num_classes=3)
    assert again.record == held.record
    np.testing.assert_array_equal(again.validation.images, held.validation.images)
    other = hold_out(split, 0.1, seed=1, num_classes=3)
    assert other.record["indices_sha256"] != held.record["indices_sha256"]


@pytest.mark.parametrize(
    ("fraction", "counts", "message"),
    [(0.1, [500, 4], "class 1 with 0 validation"), (0.99, [500, 30], "class 1 with 30 validation and 0 training")],
)
def test_hold_out_refuses_a_fraction_that_empties_a_class(fraction, counts, message):
    with pytest.raises(UserError, match=f"validation_fraction' = {fraction} leaves {message}"):
        hold_out(_split(counts), fraction, seed=0, num_classes=2)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("dataset.validation_fraction", 1.0, r"must be in \[0, 1\)"),
        ("dataset.validation_fraction", -0.1, r"must be in \[0, 1\)"),
        ("checkpoint.best_metric", "test_accuracy", "'test_accuracy'.*val_accuracy"),
    ],
)
def test_config_refuses_bad_validation_fields(field, value, message):
    from cnn_jax import validation

    config = config_lib.apply_overrides(config_lib.default_config(), {field: value})
    with pytest.raises(UserError, match=message):
        validation.validate(config)


def test_train_subset_is_drawn_from_what_validation_leaves(fashion_paths):
    config = config_lib.apply_overrides(
        config_lib.default_config(), {"dataset.train_subset": 54_001, "train.batch_size": 32}
    )
    with pytest.raises(UserError, match="54001 is larger than the train split.*54000 examples after holding out"):
        build(config, fashion_paths, log=lambda *_: None)


def test_the_validation_split_does_not_depend_on_the_subset_or_the_run_seed(fashion_paths):
    def held(**fields):
        config = config_lib.apply_overrides(config_lib.default_config(), {"train.batch_size": 32, **fields})
        return build(config, fashion_paths, log=lambda *_: None).data_manifest()["validation"]

    reference = held()
    assert reference["examples"] == 6000
    assert held(**{"dataset.train_subset": 1000, "seed": 3}) == reference
    assert held(**{"dataset.validation_seed": 1})["indices_sha256"] != reference["indices_sha256"]
    off = config_lib.apply_overrides(config_lib.default_config(), {"dataset.validation_fraction": 0.0})
    setup = build(off, fashion_paths, log=lambda *_: None)
    assert setup.validation is None and setup.train.size == 60_000 and list(setup.eval_splits) == ["test"]


def test_without_validation_there_is_no_best_checkpoint(tmp_path):
    config = config_lib.apply_overrides(config_lib.default_config(), {"dataset.validation_fraction": 0.0})
    manager = checkpoints.open_run_manager(tmp_path / "checkpoints", config)
    checkpoints.save(manager, 5, {"x": np.zeros(2, np.float32)}, {"test_accuracy": 0.5, "test_loss": 1.0})
    assert checkpoints.best_step(manager) is None
    with pytest.raises(
        UserError,
        match="has validation metrics to select the best by.*validation_fraction = 0.*use --checkpoint latest",
    ):
        checkpoints.pick_step(manager, "best")


def test_eval_subset_evaluates_that_many_balanced_examples_of_each_split_and_says_so(fashion_paths):
    fields = {"train.batch_size": 32, "dataset.eval_subset": 500}
    setup = build(config_lib.apply_overrides(config_lib.default_config(), fields), fashion_paths, log=lambda *_: None)
    assert {name: split.size for name, split in setup.eval_splits.items()} == {"val": 500, "test": 500}
    assert setup.train.size == 54_000  # the held-out examples still stay out of training
    manifest = setup.data_manifest()
    assert manifest["eval_subset"] == 500 and manifest["validation"]["examples"] == 6000
    labels = np.asarray(setup.test.labels)[: setup.test.size]
    assert np.bincount(labels).tolist() == [50] * 10


def test_an_eval_subset_larger_than_a_split_is_refused(fashion_paths):
    fields = {"train.batch_size": 32, "dataset.eval_subset": 6001}  # validation holds 6,000
    config = config_lib.apply_overrides(config_lib.default_config(), fields)
    with pytest.raises(UserError, match="'dataset.eval_subset' = 6001: cannot draw that many"):
        build(config, fashion_paths, log=lambda *_: None)
