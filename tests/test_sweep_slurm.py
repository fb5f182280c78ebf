"""The SLURM backend end to end: a real sweep submitted as one job array to a real single-node cluster."""

from __future__ import annotations

import json
import re
import time

import pytest

from cnn_jax.sweep.plan import load_plan
from cnn_jax.sweep.slurm import task_states
from cnn_jax.sweep.status import sweep_status

from sweep_helpers import cnn_jax, experiment, results

pytest_plugins = ["slurm_cluster"]  # the slurm_cluster fixture
pytestmark = pytest.mark.xdist_group("slurm")  # one worker starts the session's cluster (launch.sh runs pytest-xdist)


def wait_until_completed(job_id: str, tasks: int, runs_root, cluster) -> None:
    """Wait (up to 10 min) for the array's tasks 0..tasks-1 to end; all must have COMPLETED."""
    deadline = time.time() + 600
    while time.time() < deadline:
        states = task_states(job_id)
        if len(states) == tasks and all(s in ("COMPLETED", "FAILED", "CANCELLED") for s in states.values()):
            break
        time.sleep(2)
    logs = "\n".join(p.read_text() for p in (runs_root / "tiny" / "slurm").glob("*.out"))
    assert states == {i: "COMPLETED" for i in range(tasks)}, f"{states}\n{logs[-3000:]}\n{cluster.log_tail()}"


@pytest.mark.slow
def test_a_sweep_submitted_to_slurm_runs_every_run_once_with_the_local_numbers(
    slurm_cluster, finished_sweep, fashion_data_dir, tmp_path, monkeypatch
):
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    _, local_root, _ = finished_sweep
    path, runs_root = experiment(tmp_path), tmp_path / "runs"
    dry = cnn_jax(
        "sweep", str(path), "--runs-root", str(runs_root), "--backend", "slurm", "--dry-run", data_dir=fashion_data_dir
    )
    assert dry.returncode == 0 and "#SBATCH --array=0-3" in dry.stdout and not runs_root.exists()

    out = cnn_jax(
        "sweep",
        str(path),
        "--runs-root",
        str(runs_root),
        "--backend",
        "slurm",
        "--cpus",
        "1",
        "--max-parallel",
        "2",
        data_dir=fashion_data_dir,
    )
    assert out.returncode == 0, out.stderr
    job_id = re.search(r"submitted job array (\d+) \(4 runs\)", out.stdout).group(1)
    wait_until_completed(job_id, 4, runs_root, slurm_cluster)
    plan = load_plan(str(path))
    assert [s.state for s in sweep_status(plan, runs_root)] == ["done"] * 4
    remote, local = results(runs_root), results(local_root)
    assert remote.keys() == local.keys()
    for run_id in local:
        assert remote[run_id]["final"] == local[run_id]["final"]
    again = cnn_jax("sweep", str(path), "--runs-root", str(runs_root), "--backend", "slurm", data_dir=fashion_data_dir)
    assert again.returncode == 0 and "nothing to submit" in again.stdout


@pytest.mark.slow
def test_one_run_spans_two_srun_tasks(slurm_cluster, finished_sweep, fashion_data_dir, tmp_path, monkeypatch):
    """--tasks-per-run 2: the run is one srun step of two processes (one CPU device each) training together."""
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    _, local_root, _ = finished_sweep
    one_run = "return Sweep(axes=(field_axis('downsample', 'model.downsample', ('max',)),), seeds=(0,))"
    path, runs_root = experiment(tmp_path, one_run), tmp_path / "runs"
    out = cnn_jax(
        "sweep",
        str(path),
        "--runs-root",
        str(runs_root),
        "--backend",
        "slurm",
        "--cpus",
        "1",
        "--tasks-per-run",
        "2",
        data_dir=fashion_data_dir,
    )
    assert out.returncode == 0, out.stderr
    job_id = re.search(r"submitted job array (\d+) \(1 runs\)", out.stdout).group(1)
    wait_until_completed(job_id, 1, runs_root, slurm_cluster)
    script = next((runs_root / "tiny" / "slurm").glob("*.sbatch")).read_text()
    assert "#SBATCH --ntasks=2" in script and "srun --ntasks=2" in script
    ((run_id, remote),) = results(runs_root).items()
    manifest = json.loads((runs_root / "tiny" / run_id / "manifest.json").read_text())
    assert (manifest["processes"], manifest["devices"]) == (2, 2)
    local = results(local_root)[run_id]  # the same run on one device, from the local sweep
    assert abs(remote["final"]["test_loss"] - local["final"]["test_loss"]) < 1e-4
    assert abs(remote["final"]["test_accuracy"] - local["final"]["test_accuracy"]) <= 1e-4  # one test image
    metrics = (runs_root / "tiny" / run_id / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == len({json.loads(m)["step"] for m in metrics})  # process 0 alone logged
