"""Seeds in one program: each seed of a vmapped group trains like that seed alone, in its own run directory."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import traverse_util

from cnn_jax import config as config_lib
from cnn_jax import rundir
from cnn_jax.errors import UserError
from cnn_jax.loading import load_model
from cnn_jax.train.loop import train
from cnn_jax.train.seed_group import check_group, train_seed_group

from sweep_helpers import cnn_jax, experiment, results

# Tolerances: measured on this CPU for 20 steps of this config (on the train split less validation), max
# |diff| params 2.9e-5 (2.4e-6 before the data changed: batched convolutions round differently), logged
# train losses and test metrics equal; batch-norm running variances (sums of squares) up to 1.3e-4
# relative. The bounds leave room for other BLAS/XLA builds.
PARAM_ATOL, LOSS_ATOL, BATCH_STATS_RTOL = 1e-4, 1e-5, 1e-3

CONFIG = {
    "experiment": "seed_group",
    "model.name": "ablation_net",
    "model.stages": 2,
    "model.width": 8,
    "model.batch_norm": True,
    "model.dropout": 0.1,
    "dataset.train_subset": 640,
    "dataset.eval_subset": 500,
    "train.batch_size": 32,
    "train.epochs": 1,
    "train.log_every_steps": 5,
    "checkpoint.every_steps": 5,
    "schedule.warmup_epochs": 0.0,
    "dataset.augment.translate": 2,
}
SEEDS = (0, 3)


def configs(**changes) -> list:
    return [config_lib.apply_overrides(config_lib.default_config(), {**CONFIG, "seed": s, **changes}) for s in SEEDS]


def variables(run_dir) -> dict:
    _, tree = load_model(run_dir, "latest")
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(tree), sep="/").items()}


@pytest.fixture(scope="module")
def alone(tmp_path_factory, fashion_paths):
    root = tmp_path_factory.mktemp("alone")
    results = [train(c, root / str(c.seed), fashion_paths, progress=False, log=lambda *a: None) for c in configs()]
    return root, results


@pytest.fixture(scope="module")
def group(tmp_path_factory, fashion_paths):
    root = tmp_path_factory.mktemp("group")
    return root, train_seed_group(
        configs(), [root / str(s) for s in SEEDS], fashion_paths, progress=False, log=lambda *a: None
    )


@pytest.mark.device
@pytest.mark.slow
def test_each_seed_of_a_group_trains_like_that_seed_alone(alone, group):
    alone_root, alone_results = alone
    tmp_path, results = group
    assert [r["seed"] for r in results] == list(SEEDS) and all(r["seeds_in_program"] == 2 for r in results)
    for seed, result, reference in zip(SEEDS, results, alone_results):
        assert result["run_id"] == reference["run_id"]  # the same config: the same run
        mine, theirs = variables(tmp_path / str(seed)), variables(alone_root / str(seed))
        assert mine.keys() == theirs.keys()
        for key in theirs:
            bounds = {"atol": 0, "rtol": BATCH_STATS_RTOL} if key.startswith("batch_stats/") else {"atol": PARAM_ATOL}
            np.testing.assert_allclose(mine[key], theirs[key], **bounds, err_msg=f"seed {seed} {key}")
        log, reference_log = rundir.read_metrics(tmp_path / str(seed)), rundir.read_metrics(alone_root / str(seed))
        assert [r["step"] for r in log] == [5, 10, 15, 20]
        for a, b in zip(log, reference_log):
            assert abs(a["train_loss"] - b["train_loss"]) < LOSS_ATOL
        assert abs(result["final"]["test_accuracy"] - reference["final"]["test_accuracy"]) <= 1e-4
        assert sorted(p.name for p in (tmp_path / str(seed) / "checkpoints").iterdir() if p.name.isdigit()) == [
            "15",
            "20",
        ]
    # the seeds really differ: a group that trained one seed twice would fail here
    a, b = variables(tmp_path / str(SEEDS[0])), variables(tmp_path / str(SEEDS[1]))
    assert any(not np.allclose(a[k], b[k]) for k in a)


@pytest.mark.device
@pytest.mark.slow
def test_an_interrupted_group_resumes_to_the_unbroken_numbers(group, tmp_path, fashion_paths):
    _, unbroken = group
    dirs = [tmp_path / "b" / str(s) for s in SEEDS]
    assert (
        train_seed_group(configs(), dirs, fashion_paths, progress=False, log=lambda *a: None, stop_at_step=12) is None
    )  # as a crash after step 12: checkpoints at 5 and 10
    resumed = train_seed_group(configs(), dirs, fashion_paths, progress=False, log=lambda *a: None)
    for a, b in zip(unbroken, resumed):
        assert a["final"] == b["final"] and b["first_step"] == 10
    for seed in SEEDS:
        steps = [
            json.loads(line)["step"] for line in (tmp_path / "b" / str(seed) / "metrics.jsonl").read_text().splitlines()
        ]
        assert steps == [5, 10, 15, 20]


def test_a_group_is_one_config_with_distinct_seeds():
    mixed = configs()
    mixed[1] = config_lib.apply_overrides(mixed[1], {"optimizer.lr": 0.01})
    with pytest.raises(UserError, match=r"may differ only by seed; seed 3 differs from seed 0 in: optimizer.lr"):
        check_group(mixed)
    with pytest.raises(UserError, match=r"needs distinct seeds, got \[0, 0\]"):
        check_group([configs()[0], configs()[0]])


@pytest.mark.slow
def test_runs_at_different_steps_are_not_grouped(tmp_path, fashion_paths):
    first, second = configs()
    train(first, tmp_path / "0", fashion_paths, progress=False, log=lambda *a: None, stop_at_step=7)
    with pytest.raises(UserError, match=r"stopped at different steps \(seed 0: 5, seed 3: 0\)"):
        train_seed_group(
            [first, second], [tmp_path / "0", tmp_path / "3"], fashion_paths, progress=False, log=lambda *a: None
        )


@pytest.mark.slow
def test_a_sweep_launches_its_seeds_in_groups(finished_sweep, fashion_data_dir, tmp_path):
    """The tiny sweep (2 levels x 2 seeds) as 2 tasks of 2 seeds: every run still gets its own results."""
    _, one_at_a_time, _ = finished_sweep
    path, runs_root = experiment(tmp_path), tmp_path / "runs"
    dry = cnn_jax(
        "sweep", str(path), "--runs-root", str(runs_root), "--vmap-seeds", "2", "--dry-run", data_dir=fashion_data_dir
    )
    assert dry.returncode == 0 and "would run 2 tasks of up to 2 seeds each" in dry.stdout
    assert "--vmap-seeds 2" in dry.stdout
    out = cnn_jax(
        "sweep",
        str(path),
        "--runs-root",
        str(runs_root),
        "--vmap-seeds",
        "2",
        "--jobs",
        "2",
        "--no-report",
        data_dir=fashion_data_dir,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    grouped, reference = results(runs_root), results(one_at_a_time)
    assert grouped.keys() == reference.keys() and len(grouped) == 4
    for run_id, result in grouped.items():
        assert result["seeds_in_program"] == 2
        assert abs(result["final"]["test_loss"] - reference[run_id]["final"]["test_loss"]) < 1e-4
        assert abs(result["final"]["test_accuracy"] - reference[run_id]["final"]["test_accuracy"]) <= 2e-4
