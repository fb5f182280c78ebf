"""One run of a sweep, as a backend executes it: claim, skip if finished, train (resuming), record failures."""

from __future__ import annotations

import json
from pathlib import Path

from cnn_jax import rundir
from cnn_jax.errors import Diverged, Interrupted, UserError
from cnn_jax.sweep import claims
from cnn_jax.sweep.plan import Plan
from cnn_jax.train import hosts

EXIT_HELD = 75  # another live process holds the run (sysexits' EX_TEMPFAIL): nothing to do here


def run_task(plan: Plan, index: int, runs_root: Path, paths, log=print) -> str:
    """Train run `index` of `plan` unless it is finished or held; returns 'trained', 'finished' or 'held'."""
    from cnn_jax.train.loop import train

    if not 0 <= index < len(plan.runs):
        raise UserError(f"--index {index}: the sweep {plan.spec} has runs 0..{len(plan.runs) - 1}.")
    run = plan.runs[index]
    _check_unchanged(plan, runs_root, run)
    run_dir = plan.run_dir(runs_root, run)
    with claims.claim_as_primary(run_dir) as held:
        if not held:
            log(f"{run.name}: held by another process ({claims.holder(run_dir) or 'unknown'}); skipping.")
            return "held"
        if hosts.primary_says(bool(rundir.read_result(run_dir))):
            log(f"{run.name}: already finished -> {run_dir}")
            return "finished"
        if hosts.is_primary():
            claims.clear_failure(run_dir)
        log(f"{run.name}: training in {run_dir}")
        try:
            train(run.config, run_dir, paths, progress=False, log=log)
        except Interrupted:
            raise  # a checkpoint of this step is saved: the run is resumable, not failed
        except (UserError, Diverged) as exc:
            if hosts.is_primary():
                claims.record_failure(run_dir, 2 if isinstance(exc, UserError) else 3, str(exc))
            raise
        except BaseException as exc:
            if hosts.is_primary():
                claims.record_failure(run_dir, 1, f"{type(exc).__name__}: {exc}")
            raise
    return "trained"


def _check_unchanged(plan: Plan, runs_root: Path, run) -> None:
    """The run must be the one the launcher planned: code or experiment file edits change run ids."""
    record = plan.record_path(runs_root)
    if not record.exists():
        return
    planned = json.loads(record.read_text())["runs"]
    if run.index < len(planned) and planned[run.index]["run_id"] != run.run_id:
        raise UserError(f"run {run.index} ({run.name}) was launched as {planned[run.index]['run_id']} but resolves to "
                        f"{run.run_id} now: the experiment file, its overrides or the config schema changed since "
                        "the sweep was launched. Launch the sweep again.")
