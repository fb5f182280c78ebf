"""Evaluate a saved checkpoint of a run directory on its validation and test splits."""

from __future__ import annotations

from pathlib import Path

from cnn_jax import checkpoints, rundir
from cnn_jax.errors import UserError
from cnn_jax.train.loop import open_checkpoints
from cnn_jax.train.setup import DataPaths, build


def evaluate_run(run_dir: Path, paths: DataPaths, which: str = "best", log=print) -> dict:
    """Metrics of checkpoint `which` ('best', 'latest' or a step) of `run_dir` on its validation and test splits."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory '{run_dir}' does not exist.")
    config = rundir.load_config(run_dir)
    if not (run_dir / "checkpoints").is_dir():
        raise UserError(f"'{run_dir}' has no checkpoints/ directory; nothing to evaluate.")
    manager = open_checkpoints(run_dir, config, read_only=True)
    step = checkpoints.pick_step(manager, which)
    setup = build(config, paths, log=log)
    payload = checkpoints.restore(manager, step, setup.payload_structure())
    return {"run_dir": str(run_dir), "checkpoint_step": step, **setup.eval_metrics(payload["state"])}
