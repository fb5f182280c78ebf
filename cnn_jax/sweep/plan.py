"""A sweep as data: named axes with levels, seeds and a baseline, expanded into runs with stable ids.

An experiment file declares `get_config(preset)` (the base config) and `get_sweep(preset)` returning a
`Sweep`; every run is the base config plus the command line's overrides, one level of each axis and a
seed. A run's id is the hash of its fully resolved config, so the same run is found again on a rerun.

A sweep with `tuning` runs in two phases (the tuning playbook's scientific vs nuisance hyperparameters):
first, for every level of the scientific axes, the grid of nuisance axes with the tuning seeds; then the
final seeds at the setting with the best mean validation metric (sweep/tuned.py). Final runs are known
once their level's tuning runs have finished, so a plan holds the runs it can resolve now.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_collections

from cnn_jax import config as config_lib
from cnn_jax import validation
from cnn_jax.errors import UserError, unknown_choice
from cnn_jax.files import write_json_atomic
from cnn_jax.sweep import tuned
from cnn_jax.sweep.tuned import Tuning

COMBINES = ("product", "zip")
DEFAULT_SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Axis:
    """One factor of the question: level name -> the config fields that level sets."""

    name: str
    levels: dict[str, dict[str, Any]]


def field_axis(name: str, field_name: str, values: Sequence[Any]) -> Axis:
    """An axis whose levels are values of one config field, named by the values."""
    return Axis(name, {str(v): {field_name: v} for v in values})


@dataclass(frozen=True)
class Sweep:
    """Axes combined as a product (every combination) or a zip (level i of every axis together)."""

    axes: tuple[Axis, ...]
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    combine: str = "product"
    baseline: dict[str, str] = field(default_factory=dict)  # axis -> level; default: each axis's first level
    tuning: Tuning | None = None  # nuisance axes tuned per level of `axes` before the final seeds


@dataclass(frozen=True)
class Run:
    index: int
    levels: dict[str, str]  # axis -> level (a tuning run: scientific axes, then nuisance axes)
    seed: int
    config: ml_collections.ConfigDict
    run_id: str
    phase: str = "final"  # "tune": a run of the nuisance grid; "final": a run the report compares

    @property
    def variant(self) -> str:
        """The readable name without the seed, e.g. 'downsample=stride,kernel=3x3x2'."""
        return ",".join(f"{axis}={level}" for axis, level in self.levels.items())

    @property
    def name(self) -> str:
        name = f"{self.variant},seed={self.seed}" if self.levels else f"seed={self.seed}"
        return f"tune:{name}" if self.phase == "tune" else name


@dataclass(frozen=True)
class Plan:
    """A sweep expanded for one preset and one set of command-line overrides."""

    spec: str  # "path/to/file.py:preset", as the tasks must load it
    experiment_file: str
    preset: str
    experiment: str
    question: str
    sweep: Sweep
    baseline: dict[str, str]
    overrides: dict[str, Any]
    runs: tuple[Run, ...]  # every run resolvable now: tuning runs first, then final runs
    choices: dict[str, tuned.Choice] = field(default_factory=dict)  # variant -> chosen nuisance setting
    waiting: tuple[str, ...] = ()  # variants whose final runs wait for their tuning runs to finish
    final_runs_planned: int = 0  # final runs in all, resolved or waiting

    @property
    def final_runs(self) -> tuple[Run, ...]:
        return tuple(r for r in self.runs if r.phase == "final")

    @property
    def tuning_runs(self) -> tuple[Run, ...]:
        return tuple(r for r in self.runs if r.phase == "tune")

    def run(self, index: int) -> Run:
        """Run `index` (as `run-task --index` names it), or a UserError saying why it cannot run yet."""
        found = next((r for r in self.runs if r.index == index), None)
        if found is not None:
            return found
        last = len(self.tuning_runs) + self.final_runs_planned - 1
        if 0 <= index <= last:
            raise UserError(
                f"--index {index} of {self.spec} is a final run whose tuning has not finished "
                f"(waiting: {', '.join(self.waiting)}); run the tuning runs first."
            )
        raise UserError(f"--index {index}: the sweep {self.spec} has runs 0..{last}.")

    def experiment_dir(self, runs_root: Path) -> Path:
        return Path(runs_root) / self.experiment

    def run_dir(self, runs_root: Path, run: Run) -> Path:
        return self.experiment_dir(runs_root) / run.run_id

    def record_path(self, runs_root: Path) -> Path:
        return self.experiment_dir(runs_root) / f"sweep-{self.preset}.json"

    def record(self, command: str) -> dict[str, Any]:
        """What the report needs to know about the sweep (written as sweep-<preset>.json)."""
        return {
            "experiment": self.experiment,
            "experiment_file": self.experiment_file,
            "preset": self.preset,
            "question": self.question,
            "combine": self.sweep.combine,
            "seeds": list(self.sweep.seeds),
            "axes": [{"name": a.name, "levels": a.levels} for a in self.sweep.axes],
            "baseline": self.baseline,
            "overrides": self.overrides,
            "command": command,
            "runs": [_run_record(r) for r in self.final_runs],
            **({"tuning": self._tuning_record()} if self.sweep.tuning else {}),
        }

    def _tuning_record(self) -> dict[str, Any]:
        t = self.sweep.tuning
        return {
            "axes": [{"name": a.name, "levels": a.levels} for a in t.axes],
            "seeds": list(t.seeds),
            "metric": t.metric,
            "mode": t.mode,
            "overrides": t.overrides,
            "runs": [_run_record(r) for r in self.tuning_runs],
            "choices": {variant: choice.record() for variant, choice in self.choices.items()},
            "waiting": list(self.waiting),
        }

    def seed_groups(self, size: int) -> list[tuple[Run, ...]]:
        """Runs that differ only by seed, in chunks of at most `size`; a group is named by its first run."""
        by_variant: dict[str, list[Run]] = {}
        for run in self.runs:
            by_variant.setdefault(run.variant, []).append(run)
        return [tuple(runs[i : i + size]) for runs in by_variant.values() for i in range(0, len(runs), size)]

    def seed_group(self, index: int, size: int) -> tuple[Run, ...]:
        """The group of `seed_groups(size)` whose first run is run `index`."""
        self.run(index)  # a clear error for a final run still waiting for its tuning
        for group in self.seed_groups(size):
            if group[0].index == index:
                return group
        leaders = [g[0].index for g in self.seed_groups(size)]
        raise UserError(f"--index {index} starts no group of {size} seeds in {self.spec}; groups start at {leaders}.")

    def write_record(self, runs_root: Path, command: str) -> Path:
        path = self.record_path(runs_root)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, self.record(command))
        return path


def has_sweep(spec: str) -> bool:
    module, _, _ = config_lib.open_experiment(spec)
    return callable(getattr(module, "get_sweep", None))


def load_plan(spec: str, overrides: dict[str, Any] | None = None, runs_root: Path | None = None) -> Plan:
    """Expand `file.py[:preset]` into its runs, each config validated; errors name the file and the field.

    With tuning, final runs are resolved for the levels whose tuning runs have finished under `runs_root`."""
    overrides = dict(overrides or {})
    module, path, preset = config_lib.open_experiment(spec)
    get_sweep = getattr(module, "get_sweep", None)
    if not callable(get_sweep):
        raise UserError(
            f"experiment file '{path}' defines no sweep: add get_sweep(preset) returning "
            "cnn_jax.sweep.plan.Sweep, or train its single config with `cnn-jax train`."
        )
    sweep = config_lib.call_experiment(path, get_sweep, preset)
    _check_sweep(path, sweep, overrides)
    raw = config_lib.load_experiment(f"{path}:{preset}")
    base = config_lib.apply_overrides(raw, overrides)
    experiment_dir = Path(runs_root) / base.experiment if runs_root is not None else None
    runs: list[Run] = []
    if sweep.tuning:
        # the tuning runs' own changes, then the command line's, which reach every run
        tuning_base = config_lib.apply_overrides(config_lib.apply_overrides(raw, sweep.tuning.overrides), overrides)
        if not tuning_base.dataset.validation_fraction:
            raise UserError(
                f"experiment file '{path}': the sweep tunes on the validation split, but "
                "dataset.validation_fraction = 0 for its tuning runs; hold out a validation split."
            )
        for levels in _combinations(sweep):
            for grid in _combinations(Sweep(sweep.tuning.axes)):
                for seed in sweep.tuning.seeds:
                    fields = {**_fields(sweep.axes, levels), **_fields(sweep.tuning.axes, grid)}
                    runs.append(
                        _run(
                            len(runs),
                            tuning_base,
                            (*sweep.axes, *sweep.tuning.axes),
                            levels + grid,
                            fields,
                            seed,
                            "tune",
                        )
                    )
    choices, waiting, first_final = {}, [], len(runs)
    for i, levels in enumerate(_combinations(sweep)):
        fields = _fields(sweep.axes, levels)
        variant = ",".join(f"{a.name}={lvl}" for a, lvl in zip(sweep.axes, levels))
        if sweep.tuning:
            mine = [r for r in runs if all(r.levels[a.name] == lvl for a, lvl in zip(sweep.axes, levels))]
            choice = tuned.choose(sweep.tuning, mine, experiment_dir)
            if choice is None:
                waiting.append(variant)
                continue
            choices[variant] = choice
            fields = {**fields, **choice.fields}
        for j, seed in enumerate(sweep.seeds):
            runs.append(_run(first_final + i * len(sweep.seeds) + j, base, sweep.axes, levels, fields, seed, "final"))
    _check_distinct(path, runs)
    baseline = {a.name: sweep.baseline.get(a.name, next(iter(a.levels))) for a in sweep.axes}
    doc = (module.__doc__ or "").strip()
    return Plan(
        spec=f"{path}:{preset}",
        experiment_file=str(path),
        preset=preset,
        experiment=base.experiment,
        question=doc.splitlines()[0] if doc else base.experiment,
        sweep=sweep,
        baseline=baseline,
        overrides=overrides,
        runs=tuple(runs),
        choices=choices,
        waiting=tuple(waiting),
        final_runs_planned=len(_combinations(sweep)) * len(sweep.seeds),
    )


def _fields(axes: Sequence[Axis], levels: Sequence[str]) -> dict[str, Any]:
    return {k: v for axis, level in zip(axes, levels) for k, v in axis.levels[level].items()}


def _run(index, base, axes, levels, fields, seed, phase) -> Run:
    config = config_lib.apply_overrides(base, {**fields, "seed": seed})
    validation.validate(config)
    return Run(index, {a.name: lvl for a, lvl in zip(axes, levels)}, seed, config, config_lib.run_id(config), phase)


def _run_record(run: Run) -> dict[str, Any]:
    return {
        "index": run.index,
        "name": run.name,
        "variant": run.variant,
        "levels": run.levels,
        "seed": run.seed,
        "run_id": run.run_id,
    }


def _combinations(sweep: Sweep) -> list[tuple[str, ...]]:
    names = [list(a.levels) for a in sweep.axes]
    return list(itertools.product(*names)) if sweep.combine == "product" else list(zip(*names))


def _check_sweep(path: Path, sweep: Any, overrides: dict[str, Any]) -> None:
    """A sweep that cannot be expanded is the experiment file's mistake: say which part and why."""
    where = f"experiment file '{path}': get_sweep"
    if not isinstance(sweep, Sweep):
        raise UserError(f"{where} returned {type(sweep).__name__}, not a cnn_jax.sweep.plan.Sweep.")
    if sweep.combine not in COMBINES:
        raise unknown_choice(f"{where} combine", sweep.combine, COMBINES)
    if not sweep.seeds or len(set(sweep.seeds)) != len(sweep.seeds) or not all(isinstance(s, int) for s in sweep.seeds):
        raise UserError(f"{where} seeds {sweep.seeds!r}: give one or more distinct integers.")
    names = [a.name for a in sweep.axes]
    if len(set(names)) != len(names) or "seed" in names:
        raise UserError(f"{where} axes {names}: axis names must be distinct and not 'seed' (seeds are their own list).")
    for axis in sweep.axes:
        if not axis.levels:
            raise UserError(f"{where} axis '{axis.name}' has no levels.")
        for level, fields in axis.levels.items():
            if "seed" in fields:
                raise UserError(f"{where} axis '{axis.name}' level '{level}' sets 'seed'; list seeds in Sweep.seeds.")
            clash = sorted(set(fields) & set(overrides))
            if clash:
                raise UserError(
                    f"--config.{clash[0]} is an axis of this sweep (axis '{axis.name}'); "
                    "the sweep sets it per run, so drop the override or edit the experiment file."
                )
    if sweep.combine == "zip" and len({len(a.levels) for a in sweep.axes}) > 1:
        raise UserError(
            f"{where} combine='zip' needs axes with equal numbers of levels: "
            + ", ".join(f"{a.name}: {len(a.levels)}" for a in sweep.axes)
            + "."
        )
    if sweep.tuning is not None:
        tuned.check(where, sweep.tuning, sweep.axes, sweep.seeds, overrides)
    for axis_name, level in sweep.baseline.items():
        axis = next((a for a in sweep.axes if a.name == axis_name), None)
        if axis is None:
            raise unknown_choice(f"{where} baseline axis", axis_name, names)
        if level not in axis.levels:
            raise unknown_choice(f"{where} baseline level of axis '{axis_name}'", level, axis.levels)


def _check_distinct(path: Path, runs: list[Run]) -> None:
    seen: dict[str, Run] = {}
    for run in runs:
        if run.run_id in seen:
            raise UserError(
                f"experiment file '{path}': runs '{seen[run.run_id].name}' and '{run.name}' resolve to "
                "the same config; their levels must change at least one field."
            )
        seen[run.run_id] = run
