"""One run of a sweep, as a backend executes it: claim, skip if finished, train (resuming), record failures."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from cnn_jax import rundir
from cnn_jax.errors import Diverged, Interrupted, UserError
from cnn_jax.sweep import claims
from cnn_jax.sweep.plan import Plan
from cnn_jax.train import hosts

EXIT_HELD = 75  # another live process holds the run (sysexits' EX_TEMPFAIL): nothing to do here


def run_task(plan: Plan, index: int, runs_root: Path, paths, log=print, vmap_seeds: int = 1) -> str:
    """Train run `index` of `plan` unless it is finished or held; returns 'trained', 'finished' or 'held'.

    With `vmap_seeds` > 1, `index` names a group of `plan.seed_groups(vmap_seeds)`: its unfinished runs
    that nobody else holds are trained together in one program (train/seed_group.py)."""
    runs = plan.seed_group(index, vmap_seeds) if vmap_seeds > 1 else (plan.run(index),)
    for run in runs:
        _check_unchanged(plan, runs_root, run)
    with contextlib.ExitStack() as held_runs:
        mine, held = [], False
        for run in runs:
            run_dir = plan.run_dir(runs_root, run)
            if not held_runs.enter_context(claims.claim_as_primary(run_dir)):
                log(f"{run.name}: held by another process ({claims.holder(run_dir) or 'unknown'}); skipping.")
                held = True
            elif hosts.primary_says(bool(rundir.read_result(run_dir))):
                log(f"{run.name}: already finished -> {run_dir}")
            else:
                mine.append(run)
        if not mine:
            return "held" if held else "finished"
        _train(plan, mine, runs_root, paths, log)
    return "trained"


def _train(plan: Plan, runs: list, runs_root: Path, paths, log) -> None:
    """Train `runs` (one, or several seeds together), recording a failure in each run directory."""
    from cnn_jax.train.loop import train
    from cnn_jax.train.seed_group import train_seed_group

    run_dirs = [plan.run_dir(runs_root, run) for run in runs]
    primary = hosts.is_primary()
    for run, run_dir in zip(runs, run_dirs):
        if primary:
            claims.clear_failure(run_dir)
        log(f"{run.name}: training in {run_dir}")
    try:
        if len(runs) == 1:
            train(runs[0].config, run_dirs[0], paths, runs_root=runs_root, progress=False, log=log)
        else:
            train_seed_group(
                [run.config for run in runs], run_dirs, paths, runs_root=runs_root, progress=False, log=log
            )
    except Interrupted:
        raise  # a checkpoint of this step is saved: the runs are resumable, not failed
    except BaseException as exc:
        if isinstance(exc, (UserError, Diverged)):
            code, message = (2 if isinstance(exc, UserError) else 3), str(exc)
        else:
            code, message = 1, f"{type(exc).__name__}: {exc}"
        for run_dir in run_dirs if primary else ():
            claims.record_failure(run_dir, code, message)
        raise


def _check_unchanged(plan: Plan, runs_root: Path, run) -> None:
    """The run must be the one the launcher planned: code or experiment file edits change run ids."""
    record = plan.record_path(runs_root)
    if not record.exists():
        return
    sweep = json.loads(record.read_text())
    planned = {r["index"]: r["run_id"] for r in [*sweep["runs"], *sweep.get("tuning", {}).get("runs", [])]}
    if run.index in planned and planned[run.index] != run.run_id:
        raise UserError(
            f"run {run.index} ({run.name}) was launched as {planned[run.index]} but resolves to "
            f"{run.run_id} now: the experiment file, its overrides or the config schema changed since "
            "the sweep was launched. Launch the sweep again."
        )
