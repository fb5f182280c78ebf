"""Sweeps: an experiment file expands into named runs with stable ids; launchers claim, skip, resume and
retry runs; a sweep re-run from scratch reproduces its numbers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from cnn_jax import rundir
from cnn_jax.errors import UserError
from cnn_jax.sweep import claims
from cnn_jax.sweep.plan import load_plan
from cnn_jax.sweep.status import sweep_status

from sweep_helpers import ROOT, cnn_jax, experiment, results

# ----------------------------------------------------------------------------- expansion


def test_product_of_axes_and_seeds_gives_named_runs_with_stable_distinct_ids(tmp_path):
    path = experiment(
        tmp_path,
        """return Sweep(axes=(field_axis('downsample', 'model.downsample', ('max', 'stride')),
                                      Axis('kernel', {'5x5': {'model.kernel_scheme': '5x5'},
                                                      '3x3x2': {'model.kernel_scheme': '3x3x2'}})),
                                seeds=(0, 1, 2), baseline={'kernel': '5x5'})""",
    )
    plan = load_plan(str(path))
    assert len(plan.runs) == 2 * 2 * 3
    assert plan.runs[0].name == "downsample=max,kernel=5x5,seed=0"
    assert plan.runs[-1].name == "downsample=stride,kernel=3x3x2,seed=2"
    assert plan.runs[4].config.model.kernel_scheme == "3x3x2" and plan.runs[4].config.seed == 1
    assert len({r.run_id for r in plan.runs}) == len(plan.runs)
    assert [r.run_id for r in load_plan(str(path)).runs] == [r.run_id for r in plan.runs]
    assert plan.baseline == {"downsample": "max", "kernel": "5x5"}
    assert plan.question == "Tiny sweep for tests: max vs avg downsampling."


def test_zip_pairs_levels_and_overrides_reach_every_run(tmp_path):
    path = experiment(
        tmp_path,
        """return Sweep(axes=(field_axis('downsample', 'model.downsample', ('max', 'stride')),
                                      field_axis('width', 'model.width', (8, 16))), combine='zip', seeds=(3,))""",
    )
    plan = load_plan(f"{path}:other", {"train.epochs": "1"})
    assert [r.name for r in plan.runs] == ["downsample=max,width=8,seed=3", "downsample=stride,width=16,seed=3"]
    assert all(r.config.train.epochs == 1 for r in plan.runs)
    assert plan.preset == "other" and plan.spec.endswith("tiny.py:other")


@pytest.mark.parametrize(
    "body, message",
    [
        ("return None", "returned NoneType, not a cnn_jax.sweep.plan.Sweep"),
        (
            "return Sweep(axes=(field_axis('d', 'model.downsample', ('max', 'avg')),), seeds=(0, 0))",
            "distinct integers",
        ),
        (
            "return Sweep(axes=(field_axis('d', 'model.downsample', ('max', 'avg')),), baseline={'d': 'maxx'})",
            "unknown value 'maxx'. Did you mean 'max'?",
        ),
        (
            "return Sweep(axes=(field_axis('d', 'model.downsample', ('max',)), "
            "field_axis('w', 'model.width', (8, 16))), combine='zip')",
            "equal numbers of levels: d: 1, w: 2",
        ),
        (
            "return Sweep(axes=(field_axis('d', 'model.downsampel', ('max',)),))",
            "model 'ablation_net' has no field 'model.downsampel'. Did you mean 'downsample'?",
        ),
        ("return Sweep(axes=(field_axis('d', 'model.downsample', ('max', 'maxi')),))", "model.downsample"),
        (
            "return Sweep(axes=(Axis('d', {'a': {'model.width': 8}, 'b': {'model.width': 8}}),))",
            "runs 'd=a,seed=0' and 'd=b,seed=0' resolve to the same config",
        ),
        ("raise RuntimeError('boom')", "raised in get_sweep('default'): RuntimeError: boom"),
    ],
)
def test_a_sweep_that_cannot_expand_is_a_user_error_naming_the_problem(tmp_path, body, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_plan(str(experiment(tmp_path, body)))


def test_an_experiment_without_a_sweep_and_an_override_of_an_axis_are_refused(tmp_path):
    plain = tmp_path / "plain.py"
    plain.write_text("from cnn_jax.config import default_config\nget_config = lambda preset: default_config()\n")
    with pytest.raises(UserError, match="defines no sweep"):
        load_plan(str(plain))
    with pytest.raises(UserError, match="--config.model.downsample is an axis of this sweep"):
        load_plan(str(experiment(tmp_path)), {"model.downsample": "avg"})


# ----------------------------------------------------------------------------- claims

HOLD = (
    "import sys, time; from cnn_jax.sweep.claims import claim\nwith claim(sys.argv[1]) as held:\n"
    "    print(held, flush=True); time.sleep(60)\n"
)


def test_a_claim_is_exclusive_and_freed_when_its_holder_is_killed(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        assert claims.is_held(run_dir)
        assert claims.holder(run_dir)["pid"] == holder.pid
        with claims.claim(run_dir) as held:
            assert held is False
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs
        holder.wait()
    assert not claims.is_held(run_dir)
    with claims.claim(run_dir) as held:
        assert held is True


# ----------------------------------------------------------------------------- launching (real data)


@pytest.mark.slow
def test_a_sweep_trains_each_run_once_and_a_rerun_skips_them(finished_sweep, fashion_data_dir):
    path, runs_root, out = finished_sweep
    plan = load_plan(str(path))
    assert [s.state for s in sweep_status(plan, runs_root)] == ["done"] * 4
    assert out.stdout.count(": done, val acc") == 4
    record = json.loads(plan.record_path(runs_root).read_text())
    assert [r["name"] for r in record["runs"]] == [r.name for r in plan.runs]
    before = {p: p.stat().st_mtime_ns for p in runs_root.glob("tiny/*/result.json")}
    again = cnn_jax("sweep", str(path), "--runs-root", str(runs_root), "--no-report", data_dir=fashion_data_dir)
    assert again.returncode == 0 and "4 done or running elsewhere" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in runs_root.glob("tiny/*/result.json")} == before
    status = cnn_jax("status", str(path), "--runs-root", str(runs_root))
    assert "4 runs: 4 done, 0 running, 0 failed, 0 pending" in status.stdout


@pytest.mark.slow
def test_two_launchers_on_one_sweep_never_train_a_run_twice_and_reproduce_its_numbers(
    tmp_path, finished_sweep, fashion_data_dir
):
    _, first_root, _ = finished_sweep
    path = experiment(tmp_path)
    args = [
        sys.executable,
        "-m",
        "cnn_jax.cli",
        "sweep",
        str(path),
        "--runs-root",
        str(tmp_path / "runs"),
        "--no-report",
        "--data-dir",
        str(fashion_data_dir),
    ]
    launchers = [
        subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in launchers]
    assert all(p.returncode == 0 for p in launchers), outputs
    plan = load_plan(str(path))
    assert [s.state for s in sweep_status(plan, tmp_path / "runs")] == ["done"] * 4
    for run in plan.runs:
        run_dir = plan.run_dir(tmp_path / "runs", run)
        log = (run_dir / "train.log").read_text()
        assert log.count("training in") == 1, log
        steps = [r["step"] for r in rundir.read_metrics(run_dir)]
        assert steps == sorted(set(steps))  # each logged once
        assert "resumes" not in json.loads((run_dir / "manifest.json").read_text())
    again, first = results(tmp_path / "runs"), results(first_root)  # a sweep re-run from scratch
    assert again.keys() == first.keys() and len(first) == 4
    for run_id in first:
        assert again[run_id]["final"] == first[run_id]["final"]
        assert again[run_id]["val_best"] == first[run_id]["val_best"]


@pytest.mark.slow
def test_a_failing_run_is_reported_the_others_finish_and_status_says_why(tmp_path, fashion_data_dir):
    path = experiment(
        tmp_path,
        "return Sweep(axes=(Axis('subset', {'small': {'dataset.train_subset': 640}, "
        "'huge': {'dataset.train_subset': 10 ** 6}}),), seeds=(0,))",
    )
    out = cnn_jax("sweep", str(path), "--runs-root", str(tmp_path / "runs"), "--no-report", data_dir=fashion_data_dir)
    assert out.returncode == 1
    assert "1 runs failed: subset=huge,seed=0" in out.stderr
    assert "FAILED (exit 2)" in out.stdout
    status = cnn_jax("status", str(path), "--runs-root", str(tmp_path / "runs")).stdout
    assert "subset=small,seed=0" in status and "done" in status
    assert "failed   exit 2: config field 'dataset.train_subset' = 1000000 is larger than the train split" in status


@pytest.mark.slow
def test_sigterm_stops_the_sweep_with_checkpoints_and_a_rerun_finishes_it_identically(
    tmp_path, finished_sweep, fashion_data_dir
):
    path, unbroken_root, _ = finished_sweep
    runs_root = tmp_path / "runs"
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cnn_jax.cli",
            "sweep",
            str(path),
            "--runs-root",
            str(runs_root),
            "--no-report",
            "--data-dir",
            str(fashion_data_dir),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    plan = load_plan(str(path))
    first_metrics = plan.run_dir(runs_root, plan.runs[0]) / rundir.METRICS
    deadline = time.time() + 300
    while not (first_metrics.exists() and first_metrics.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    os.kill(launcher.pid, signal.SIGTERM)
    _, err = launcher.communicate(timeout=300)
    assert launcher.returncode == 128 + signal.SIGTERM, err
    assert "sweep stopped by SIGTERM" in err
    states = [s.state for s in sweep_status(plan, runs_root)]
    assert states == ["pending"] * 4
    assert "resumes from step" in cnn_jax("status", str(path), "--runs-root", str(runs_root)).stdout
    rerun = cnn_jax(
        "sweep", str(path), "--runs-root", str(runs_root), "--no-report", "--jobs", "2", data_dir=fashion_data_dir
    )
    assert rerun.returncode == 0, rerun.stderr
    resumed, unbroken = results(runs_root), results(unbroken_root)
    for run_id in unbroken:
        assert resumed[run_id]["final"] == unbroken[run_id]["final"]


def test_dry_run_lists_runs_and_writes_nothing(tmp_path):
    path = experiment(tmp_path)
    out = cnn_jax("sweep", str(path), "--runs-root", str(tmp_path / "runs"), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "downsample=avg,seed=1" in out.stdout and "would run 4 runs, 1 at a time" in out.stdout
    assert not (tmp_path / "runs").exists()


def test_launch_runs_a_sweep_file_as_a_sweep_and_names_the_preset_once(tmp_path):
    path = experiment(tmp_path)
    out = cnn_jax("launch", str(path), "other", "--runs-root", str(tmp_path / "runs"), "--dry-run")
    assert out.returncode == 0 and "tiny.py:other: 4 runs" in out.stdout
    twice = cnn_jax("launch", f"{path}:other", "other", "--dry-run")
    assert twice.returncode == 2 and "give the preset once" in twice.stderr
    plain = cnn_jax("launch", "experiments/fashion_mnist_cnn.py", "--dry-run")
    assert plain.returncode == 2 and "declares no sweep" in plain.stderr


def test_each_local_slot_gets_its_own_gpu_when_there_are_gpus():
    from cnn_jax.sweep.local import slot_env

    assert [slot_env(slot, ["0", "1"])["CUDA_VISIBLE_DEVICES"] for slot in range(3)] == ["0", "1", "0"]
    assert slot_env(0, []).get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")


def test_a_task_refuses_a_run_whose_config_changed_since_the_launch(tmp_path):
    from cnn_jax.sweep.task import run_task

    path = experiment(tmp_path)
    load_plan(str(path)).write_record(tmp_path / "runs", "cnn-jax sweep tiny.py")
    edited = load_plan(str(path), {"train.epochs": "1"})
    with pytest.raises(UserError, match="changed since the sweep was launched"):
        run_task(edited, 0, tmp_path / "runs", paths=None)
    assert not (tmp_path / "runs" / "tiny" / edited.runs[0].run_id).exists()


def test_train_refuses_a_run_directory_another_process_is_training(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        out = cnn_jax("train", "experiments/fashion_mnist_cnn.py", "--workdir", str(run_dir))
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 2 and "is being trained by another process" in out.stderr
    assert not (run_dir / "config.json").exists()
