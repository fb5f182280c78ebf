"""Tuned comparisons: the nuisance axes of a sweep, and the setting chosen for each scientific level.

Google's deep-learning tuning playbook separates the scientific hyperparameters (what the question is
about) from nuisance ones (what each level needs to be at its best, e.g. the learning rate): the nuisance
ones are tuned for every level on validation data, then the levels are compared at their own best
settings. Here a level's setting is the grid point with the best mean validation metric over the tuning
seeds; ties go to the first point of the grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnn_jax import rundir
from cnn_jax.config import BEST_MODES, VALIDATION_METRICS
from cnn_jax.errors import UserError, unknown_choice
from cnn_jax.sweep import claims

DIVERGED = 3  # the exit code of a run whose loss or parameters stopped being finite (cnn_jax.errors.Diverged)


@dataclass(frozen=True)
class Tuning:
    """Nuisance axes (`plan.Axis`, combined as a grid) tuned for each level of a sweep's scientific axes."""

    axes: tuple  # of plan.Axis
    seeds: tuple[int, ...] = (100,)  # tuning seeds: distinct from the final seeds, so final runs are fresh draws
    metric: str = "val_accuracy"  # a validation metric of the runs' final epoch
    mode: str = "max"
    overrides: dict[str, Any] = field(default_factory=dict)  # tuning runs made cheaper (say why); the command line wins


@dataclass(frozen=True)
class Choice:
    """The setting chosen for one scientific level, and the table it was chosen from."""

    levels: dict[str, str]  # nuisance axis -> chosen level
    fields: dict[str, Any]  # the config fields that setting sets
    mean: float
    table: list[dict[str, Any]]  # per grid point: levels, values over tuning seeds, mean
    edges: list[str]  # numeric axes whose chosen level is the smallest or largest of the grid

    def record(self) -> dict[str, Any]:
        return {
            "levels": self.levels,
            "fields": self.fields,
            "mean": self.mean,
            "table": self.table,
            "edges": self.edges,
        }


def choose(tuning: Tuning, runs: Sequence[Any], experiment_dir: Path | None) -> Choice | None:
    """The best grid point of one scientific level from its tuning `runs` (plan.Run), or None while any of
    them has no result under `experiment_dir`. A run that diverged counts as the worst value: a grid point
    with a diverged seed is never chosen."""
    if experiment_dir is None:
        return None
    names = [a.name for a in tuning.axes]
    points: dict[tuple[str, ...], list[float | None]] = {}
    for run in runs:
        run_dir = Path(experiment_dir) / run.run_id
        result = rundir.read_result(run_dir)
        if result is None:
            failure = claims.read_failure(run_dir)
            if not failure or failure["exit_code"] != DIVERGED:
                return None
            points.setdefault(tuple(run.levels[n] for n in names), []).append(None)
            continue
        value = result["final"].get(tuning.metric)
        if value is None or not math.isfinite(value):
            raise UserError(
                f"tuning run {run.name} ({run.run_id}) has no finite '{tuning.metric}' in its result; "
                "it needs a validation split (dataset.validation_fraction > 0)."
            )
        points.setdefault(tuple(run.levels[n] for n in names), []).append(value)
    table = [
        {"levels": dict(zip(names, key)), "values": values, "mean": None if None in values else float(np.mean(values))}
        for key, values in points.items()
    ]
    finite = [row for row in table if row["mean"] is not None]
    if not finite:
        raise UserError(
            f"every tuning setting of {runs[0].variant.split(',')[0]} diverged; lower the grid's values "
            "(e.g. the learning rates) and launch again."
        )
    pick = max if tuning.mode == "max" else min
    best = pick(finite, key=lambda row: row["mean"])  # the first of equal means: grid order
    fields = {k: v for a in tuning.axes for k, v in a.levels[best["levels"][a.name]].items()}
    return Choice(best["levels"], fields, best["mean"], table, _edges(tuning.axes, best["levels"]))


def _edges(axes: Sequence[Any], chosen: dict[str, str]) -> list[str]:
    """Numeric axes (one number per level) whose chosen value is the grid's smallest or largest."""
    edges = []
    for axis in axes:
        values = [next(iter(fields.values())) for fields in axis.levels.values()]
        numeric = all(len(f) == 1 for f in axis.levels.values()) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        )
        if numeric and len(values) > 1:
            value = next(iter(axis.levels[chosen[axis.name]].values()))
            if value in (min(values), max(values)):
                edges.append(axis.name)
    return edges


def check(where: str, tuning: Any, axes: Sequence[Any], seeds: Sequence[int], overrides: dict[str, Any]) -> None:
    """A tuning declaration that cannot be run, or that would select on test data, is the file's mistake."""
    if not isinstance(tuning, Tuning):
        raise UserError(f"{where} tuning is {type(tuning).__name__}, not a cnn_jax.sweep.tuned.Tuning.")
    if not tuning.axes:
        raise UserError(f"{where} tuning has no axes: give the nuisance axes to tune (e.g. the learning rate).")
    if tuning.metric not in VALIDATION_METRICS:
        raise unknown_choice(
            f"{where} tuning metric (selection uses validation data only, never test)",
            tuning.metric,
            VALIDATION_METRICS,
        )
    if tuning.mode not in BEST_MODES:
        raise unknown_choice(f"{where} tuning mode", tuning.mode, BEST_MODES)
    if not tuning.seeds or len(set(tuning.seeds)) != len(tuning.seeds):
        raise UserError(f"{where} tuning seeds {tuning.seeds!r}: give one or more distinct integers.")
    shared = sorted(set(tuning.seeds) & set(seeds))
    if shared:
        raise UserError(
            f"{where} tuning seeds {list(tuning.seeds)} share {shared} with the final seeds {list(seeds)}; "
            "use other seeds for tuning, so the final runs are not the runs that chose their setting."
        )
    scientific = {a.name: set(f for fields in a.levels.values() for f in fields) for a in axes}
    for axis in tuning.axes:
        if not axis.levels:
            raise UserError(f"{where} tuning axis '{axis.name}' has no levels.")
        if axis.name in scientific or axis.name == "seed":
            raise UserError(f"{where} tuning axis '{axis.name}' has the name of a scientific axis or of 'seed'.")
        nuisance = {f for fields in axis.levels.values() for f in fields}
        for name, fields in scientific.items():
            overlap = sorted(nuisance & fields)
            if overlap:
                raise UserError(
                    f"{where} tuning axis '{axis.name}' sets {overlap[0]}, which scientific axis '{name}' sets too; "
                    "a field is either the question or a nuisance, not both."
                )
        for clash in sorted(nuisance & (set(overrides) | set(tuning.overrides) | {"seed"})):
            raise UserError(
                f"{where} tuning axis '{axis.name}' sets '{clash}', which is also overridden "
                "(command line or tuning overrides); drop one of them."
            )
    for clash in sorted(
        set(tuning.overrides) & ({f for a in axes for fields in a.levels.values() for f in fields} | {"seed"})
    ):
        raise UserError(f"{where} tuning overrides set '{clash}', which the sweep sets per run; drop it there.")
