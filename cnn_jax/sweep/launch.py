"""Launching a sweep: what is left to do, transfer sources first, then the local or SLURM backend."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from pathlib import Path

from cnn_jax.errors import UserError
from cnn_jax.sweep import local, slurm, sources
from cnn_jax.sweep.plan import Plan, Run
from cnn_jax.sweep.status import FINISHED, run_status, sweep_status


def todo(plan: Plan, runs_root: Path, vmap_seeds: int = 1) -> list[Run]:
    """Runs that are neither finished nor held by a live process (failed ones are retried); with
    `vmap_seeds` > 1 the first run of each seed group that has such a run (the task trains the group)."""
    left = {s.run.index for s in sweep_status(plan, runs_root) if s.state in ("pending", "failed")}
    if vmap_seeds > 1:
        return [group[0] for group in plan.seed_groups(vmap_seeds) if left & {r.index for r in group}]
    return [run for run in plan.runs if run.index in left]


def run_locally(
    plan: Plan,
    runs_root: Path,
    runs: Sequence[Run],
    task_args: Sequence[str],
    jobs: int,
    command_line: str,
    log=print,
    vmap_seeds: int = 1,
) -> dict[str, list[Run]]:
    """Train missing transfer sources, record the sweep, then run `runs` `jobs` at a time."""
    if runs:
        sources.check_weights_files(plan)
        sources.train_sources(sources.unfinished_sources(plan, runs_root), runs_root, _data_args(task_args), log)
    plan.write_record(runs_root, command_line)
    return local.run_local(plan, runs_root, runs, local.task_command(plan, runs_root, task_args, vmap_seeds), jobs, log)


def run_phases_locally(
    load: Callable[[], Plan],
    runs_root: Path,
    task_args: Sequence[str],
    jobs: int,
    command_line: str,
    log=print,
    vmap_seeds: int = 1,
    on_choice: Callable[[str, object], None] = lambda variant, choice: None,
) -> tuple[Plan, list[Run]]:
    """Run what is left of the sweep `load()` plans, `jobs` at a time; with tuning, the tuning runs, then the
    final runs at the settings chosen (each passed to `on_choice`). Returns the last plan and the runs that
    failed; a tuning run that diverged is an outcome of its setting (not chosen), not a failure."""
    plan = load()
    runs = todo(plan, runs_root, vmap_seeds)
    while True:
        outcome = run_locally(plan, runs_root, runs, task_args, jobs, command_line, log, vmap_seeds)
        failed = [r for r in outcome["failed"] if run_status(plan, runs_root, r).state != "diverged"]
        if failed or not plan.waiting:
            return plan, failed
        waited, plan = plan.waiting, load()
        if plan.waiting == waited:  # tuning runs held elsewhere, or stopped: nothing new to choose from
            return plan, failed
        for variant in waited:
            if variant in plan.choices:
                on_choice(variant, plan.choices[variant])
        runs = todo(plan, runs_root, vmap_seeds)


def finished_count(plan: Plan, runs_root: Path) -> int:
    """How many of the plan's runs have finished (diverged tuning runs count: they are done)."""
    return sum(s.state in FINISHED for s in sweep_status(plan, runs_root))


def slurm_script(
    plan: Plan,
    runs_root: Path,
    runs: Sequence[Run],
    task_args: Sequence[str],
    options: slurm.SlurmOptions,
    vmap_seeds: int = 1,
) -> str:
    """The sbatch script of one job array over `runs` (first runs of seed groups with `vmap_seeds` > 1)."""
    return slurm.render_script(
        [r.index for r in runs],
        local.task_command(plan, runs_root, task_args, vmap_seeds),
        slurm_dir(plan, runs_root),
        Path.cwd(),
        options,
    )


def submit(
    plan: Plan,
    runs_root: Path,
    runs: Sequence[Run],
    task_args: Sequence[str],
    options: slurm.SlurmOptions,
    command_line: str,
    vmap_seeds: int = 1,
) -> str:
    """Submit one job array over `runs`; returns the job id. Transfer sources must be trained already."""
    sources.check_weights_files(plan)
    missing = sources.unfinished_sources(plan, runs_root)
    if missing:
        raise UserError(
            f"transfer sources are not trained yet: {', '.join(missing)}; train them first "
            f"(cnn-jax train SPEC --runs-root {runs_root}), or launch with the local backend."
        )
    script = slurm_script(plan, runs_root, runs, task_args, options, vmap_seeds)
    plan.write_record(runs_root, command_line)
    slurm_dir(plan, runs_root).mkdir(parents=True, exist_ok=True)  # SLURM does not create --output's folder
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return slurm.submit(script, slurm_dir(plan, runs_root) / f"{plan.preset}-{stamp}.sbatch")


def slurm_dir(plan: Plan, runs_root: Path) -> Path:
    return plan.experiment_dir(runs_root) / "slurm"


def _data_args(task_args: Sequence[str]) -> list[str]:
    """The data options among a task's arguments (sources get those, not the sweep's config overrides)."""
    return [a for a in task_args if not a.startswith("--config.")]
