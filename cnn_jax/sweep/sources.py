"""What a sweep's runs start from: experiment-file sources (found, or trained first) and pretrained weights
files (found before anything trains, or the launch stops saying where to get them)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from cnn_jax import config as config_lib
from cnn_jax import rundir
from cnn_jax.errors import UserError
from cnn_jax.sweep.plan import Plan
from cnn_jax.weights import files as weights_files


def check_weights_files(plan: Plan) -> None:
    """A UserError (where to get it) for the first pretrained weights file of the plan that is not found."""
    for spec in sorted({run.config.transfer.source for run in plan.runs}):
        if weights_files.is_weights_file(spec):
            weights_files.locate(spec)


def unfinished_sources(plan: Plan, runs_root: Path) -> dict[str, Path]:
    """Experiment-file sources of the plan's runs that have no finished run under `runs_root`."""
    specs = {run.config.transfer.source for run in plan.runs}
    missing = {}
    for spec in sorted(s for s in specs if s.split(":")[0].endswith(".py")):
        run_dir = rundir.default_run_dir(config_lib.load_experiment(spec), runs_root)
        if rundir.read_result(run_dir) is None:
            missing[spec] = run_dir
    return missing


def train_sources(missing: dict[str, Path], runs_root: Path, data_args: Sequence[str], log=print) -> None:
    """Train each missing source run (resuming it if it was interrupted), one after another."""
    for spec, run_dir in missing.items():
        log(f"Training the transfer source {spec} first -> {run_dir}")
        code = subprocess.call(
            [
                sys.executable,
                "-m",
                "cnn_jax.cli",
                "train",
                spec,
                "--runs-root",
                str(runs_root),
                "--no-progress",
                *data_args,
            ]
        )
        if code != 0:
            raise UserError(f"the transfer source {spec} did not finish (exit {code}); fix it and launch again.")
