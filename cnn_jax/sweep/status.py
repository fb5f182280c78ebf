"""The state of each run of a sweep, read from its run directory: done, running, failed or pending; a tuning
run whose loss stopped being finite is 'diverged', an outcome of its setting (never retried)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnn_jax import rundir
from cnn_jax.sweep import claims
from cnn_jax.sweep.plan import Plan, Run
from cnn_jax.sweep.tuned import DIVERGED

STATES = ("done", "diverged", "running", "failed", "pending")
FINISHED = ("done", "diverged")


@dataclass(frozen=True)
class RunStatus:
    run: Run
    run_dir: Path
    state: str  # one of STATES
    detail: str


def run_status(plan: Plan, runs_root: Path, run: Run) -> RunStatus:
    run_dir = plan.run_dir(runs_root, run)
    result = rundir.read_result(run_dir)
    if result:
        return RunStatus(run, run_dir, "done", rundir.result_summary(result))
    if claims.is_held(run_dir):
        step = _last_logged_step(run_dir)
        who = claims.holder(run_dir) or {}
        where = f"slurm job {who['slurm_job']}" if who.get("slurm_job") else f"pid {who.get('pid')}"
        return RunStatus(run, run_dir, "running", f"step {step} on {who.get('host', '?')} ({where})")
    failure = claims.read_failure(run_dir)
    if failure and run.phase == "tune" and failure["exit_code"] == DIVERGED:
        return RunStatus(run, run_dir, "diverged", f"{failure['message']} (this setting is not chosen)")
    if failure:
        return RunStatus(run, run_dir, "failed", f"exit {failure['exit_code']}: {failure['message']}")
    saved = _last_checkpoint(run_dir)
    return RunStatus(run, run_dir, "pending", f"resumes from step {saved}" if saved else "not started")


def sweep_status(plan: Plan, runs_root: Path) -> list[RunStatus]:
    return [run_status(plan, runs_root, run) for run in plan.runs]


def status_table(statuses: list[RunStatus]) -> str:
    """One line per run and a count per state."""
    width = max(len(s.run.name) for s in statuses)
    lines = [f"{s.run.index:>4}  {s.run.name:<{width}}  {s.run.run_id}  {s.state:<8} {s.detail}" for s in statuses]
    shown = [state for state in STATES if state != "diverged" or any(s.state == state for s in statuses)]
    counts = ", ".join(f"{sum(s.state == state for s in statuses)} {state}" for state in shown)
    return "\n".join([*lines, f"{len(statuses)} runs: {counts}"])


def _last_logged_step(run_dir: Path) -> int:
    records = rundir.read_metrics(run_dir)
    return records[-1]["step"] if records else 0


def _last_checkpoint(run_dir: Path) -> int:
    folder = run_dir / "checkpoints"
    steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(steps, default=0)
