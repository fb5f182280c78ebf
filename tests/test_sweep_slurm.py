"""The SLURM backend end to end: a real sweep submitted as one job array to a real single-node cluster."""

from __future__ import annotations

import re
import time

import pytest

from cnn_jax.sweep.plan import load_plan
from cnn_jax.sweep.slurm import task_states
from cnn_jax.sweep.status import sweep_status

from sweep_helpers import cnn_jax, experiment, results

pytest_plugins = ["slurm_cluster"]  # the slurm_cluster fixture


@pytest.mark.slow
def test_a_sweep_submitted_to_slurm_runs_every_run_once_with_the_local_numbers(
        slurm_cluster, finished_sweep, fashion_data_dir, tmp_path, monkeypatch):
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    _, local_root, _ = finished_sweep
    path, runs_root = experiment(tmp_path), tmp_path / "runs"
    dry = cnn_jax("sweep", str(path), "--runs-root", str(runs_root), "--backend", "slurm", "--dry-run",
                  data_dir=fashion_data_dir)
    assert dry.returncode == 0 and "#SBATCH --array=0-3" in dry.stdout and not runs_root.exists()

    out = cnn_jax("sweep", str(path), "--runs-root", str(runs_root), "--backend", "slurm", "--cpus", "1",
                  "--max-parallel", "2", data_dir=fashion_data_dir)
    assert out.returncode == 0, out.stderr
    job_id = re.search(r"submitted job array (\d+) \(4 runs\)", out.stdout).group(1)
    deadline = time.time() + 600
    while time.time() < deadline:
        states = task_states(job_id)
        if len(states) == 4 and all(s in ("COMPLETED", "FAILED", "CANCELLED") for s in states.values()):
            break
        time.sleep(2)
    logs = "\n".join(p.read_text() for p in (runs_root / "tiny" / "slurm").glob("*.out"))
    assert states == {i: "COMPLETED" for i in range(4)}, f"{states}\n{logs[-3000:]}\n{slurm_cluster.log_tail()}"
    plan = load_plan(str(path))
    assert [s.state for s in sweep_status(plan, runs_root)] == ["done"] * 4
    remote, local = results(runs_root), results(local_root)
    assert remote.keys() == local.keys()
    for run_id in local:
        assert remote[run_id]["final"] == local[run_id]["final"]
    again = cnn_jax("sweep", str(path), "--runs-root", str(runs_root), "--backend", "slurm", data_dir=fashion_data_dir)
    assert again.returncode == 0 and "nothing to submit" in again.stdout
