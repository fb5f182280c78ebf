"""The Python API: what the `cnn-jax` commands do, as functions that return objects.

For notebooks and scripts. Errors are exceptions (`cnn_jax.errors.UserError` for bad input, with the
same one-line message the command prints); nothing prints unless asked (`progress=True`, `log=print`).

    >>> import cnn_jax
    >>> config = cnn_jax.get_config("experiments/fashion_mnist_cnn.py", "quick", {"train.epochs": 1})
    >>> run = cnn_jax.run(config)                        # doctest: +SKIP
    >>> run.final["test_accuracy"], run.history[-1]["epoch"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_collections

from cnn_jax import API, rundir, validation
from cnn_jax import config as config_lib
from cnn_jax.errors import UserError
from cnn_jax.loading import data_info, load_model  # noqa: F401 (re-exported: in __all__)

__all__ = list(API)  # listed in cnn_jax/__init__.py, which imports this module only on first use


def get_config(
    experiment: str | Path, preset: str | None = None, overrides: Mapping[str, Any] | None = None
) -> ml_collections.ConfigDict:
    """The validated config of an experiment file's preset, with `overrides` ({"section.field": value}).

    >>> cnn_jax.get_config("experiments/lenet5_mnist.py", overrides={"train.epochs": 2}).train.epochs  # doctest: +SKIP
    2
    """
    spec = str(experiment) if preset is None else f"{experiment}:{preset}"
    config = config_lib.apply_overrides(config_lib.load_experiment(spec), dict(overrides or {}))
    validation.validate(config)
    return config


HISTORY_COLUMNS = ("epoch", "epoch_train_loss", "epoch_train_accuracy", "val_loss", "val_accuracy", "test_accuracy")


@dataclass(frozen=True)
class RunResult:
    """A finished run: its directory, config, result record and per-epoch history."""

    run_dir: Path
    config: ml_collections.ConfigDict
    record: dict[str, Any]  # result.json
    history: list[dict[str, Any]]  # the epoch-end lines of metrics.jsonl: train, val and test metrics

    @property
    def final(self) -> dict[str, float]:
        """Validation (if held out) and test metrics after the last epoch."""
        return self.record["final"]

    @property
    def selected(self) -> dict[str, Any] | None:
        """The test metrics at the best validation checkpoint, with its step and rule; None without validation."""
        return self.record.get("val_best")

    def __str__(self) -> str:
        return f"{rundir.result_summary(self.record)} after {self.record['epochs']} epochs -> {self.run_dir}"

    def _repr_markdown_(self) -> str:
        from cnn_jax.analysis.report import markdown_table

        keys = [k for k in HISTORY_COLUMNS if any(k in row for row in self.history)]
        rows = [[_cell(row.get(k)) for k in keys] for row in self.history]
        return f"{self}\n\n" + markdown_table(keys, rows, "r" * len(keys))


def read_run(run_dir: str | Path) -> RunResult:
    """The RunResult of a finished run directory (raises UserError while it is unfinished)."""
    run_dir = Path(run_dir)
    record = rundir.read_result(run_dir)
    if record is None:
        raise UserError(f"'{run_dir}' has no {rundir.RESULT}: the run is unfinished (or not a run directory).")
    history = [r for r in rundir.read_metrics(run_dir) if "test_accuracy" in r]
    return RunResult(run_dir, rundir.load_config(run_dir), record, history)


def run(
    config: ml_collections.ConfigDict,
    *,
    runs_root: str | Path = "runs",
    workdir: str | Path | None = None,
    data_dir: str | Path | None = None,
    local_data: Sequence[str | Path] = (),
    force: bool = False,
    progress: bool = False,
    log: Callable[..., None] | None = None,
) -> RunResult:
    """Train `config` (resuming its run directory if a run was interrupted; a finished run is read back).

    The run directory is `runs_root/<experiment>/<run id>` unless `workdir` is given. `data_dir` is
    the TFDS data dir, `local_data` folders of offline dataset copies (as `--data-dir` and
    `--local-data`). `progress` shows a progress bar; `log` receives the per-epoch lines.
    """
    from cnn_jax.sweep import claims
    from cnn_jax.train.loop import silent
    from cnn_jax.train.loop import train as train_loop

    validation.validate(config)
    run_dir = Path(workdir) if workdir is not None else rundir.default_run_dir(config, Path(runs_root))
    with claims.claim_as_primary(run_dir) as held:
        if not held:
            raise UserError(f"'{run_dir}' is being trained by another process ({claims.holder(run_dir)}).")
        train_loop(
            config,
            run_dir,
            data_paths(data_dir, local_data),
            runs_root=Path(runs_root),
            force=force,
            log=log or silent,
            progress=progress,
        )
    return read_run(run_dir)


def data_paths(data_dir: str | Path | None = None, local_data: Sequence[str | Path] = ()):
    """Where runs read data: the TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets) and the
    folders searched for offline copies (`local_data`, then $CNN_JAX_LOCAL_DATA and /usr/share/datasets)."""
    from cnn_jax.data import catalog
    from cnn_jax.train.setup import DataPaths

    return DataPaths(
        Path(data_dir) if data_dir is not None else catalog.default_data_dir(),
        tuple(Path(p) for p in local_data) + tuple(catalog.default_search_roots()),
    )


def build_model(name: str, num_classes: int | None = None, **fields: Any):
    """The flax module `name` with its `model.*` fields (`cnn-jax models NAME` lists them); `num_classes`
    defaults to the architecture's published head.

    >>> model = cnn_jax.build_model("ablation_net", num_classes=10, downsample="avg")  # doctest: +SKIP
    """
    from cnn_jax.models import build_model as build
    from cnn_jax.models import model_entry

    config = config_lib.apply_overrides(
        config_lib.default_config(), {"model.name": name, **{f"model.{k}": v for k, v in fields.items()}}
    )
    validation.validate(config)
    return build(config.model.to_dict(), num_classes=num_classes or model_entry(name).num_classes)


def import_weights(
    file: str | Path, model: str | Mapping[str, Any], out: str | Path | None = None, runs_root: str | Path = "runs"
) -> Path:
    """Write a pretrained weights file (torchvision `.pth` / `.safetensors`, Keras `.h5`; a bare file name is
    looked for in the torch and Keras download caches) for zoo model `model` (a name, or a model section such
    as {"name": "googlenet", "aux_heads": True}) as a run-like directory (default
    runs/pretrained/<model>-<sha256[:12]>), which `load_model`, `data_info` and `transfer.source` accept;
    returns it. What `cnn-jax import-weights` does."""
    from cnn_jax.weights.convert import write_imported_run

    return write_imported_run(str(file), model, None if out is None else Path(out), Path(runs_root))


def summary(name: str, input_shape: Sequence[int] | None = None, num_classes: int | None = None, **fields: Any):
    """The per-layer table of model `name` on one image of `input_shape` (H, W, C; default the published
    input): output shapes, parameters, FLOPs and receptive fields. It prints as the table and renders as one
    in a notebook; `.rows` and the totals are its numbers.

    >>> print(cnn_jax.summary("lenet5"))  # doctest: +SKIP
    """
    from cnn_jax.models import model_entry
    from cnn_jax.models.summary import summarize

    shape = tuple(input_shape) if input_shape is not None else model_entry(name).input_shape
    return summarize(build_model(name, num_classes, **fields), shape, name)


def report(experiment_dir: str | Path, preset: str | None = None, out: str | Path | None = None):
    """Write and return the report of a sweep's runs (`runs/<experiment>`): `.markdown`, `.data` (every
    number, as dicts and lists) and `.paths` (the files written, figures included)."""
    from cnn_jax.analysis.report import write_report

    return write_report(Path(experiment_dir), preset, None if out is None else Path(out))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


@dataclass(frozen=True)
class SweepResult:
    """A sweep after `run_sweep()`: its plan (tuning choices resolved), the runs that failed, and its report
    (None until every run has finished)."""

    plan: Any  # cnn_jax.sweep.plan.Plan
    runs_root: Path
    failed: list[Any]  # Plan runs
    report: Any  # cnn_jax.analysis.report.Report | None

    @property
    def finished(self) -> bool:
        return not self.failed and self.report is not None

    def _repr_markdown_(self) -> str:
        if self.report is not None:
            return self.report.markdown
        names = ", ".join(r.name for r in self.failed)
        return f"{self.plan.spec}: unfinished" + (f"; failed: {names}" if names else "")


def run_sweep(
    experiment: str | Path,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    runs_root: str | Path = "runs",
    jobs: int = 1,
    data_dir: str | Path | None = None,
    local_data: Sequence[str | Path] = (),
    log: Callable[..., None] | None = None,
) -> SweepResult:
    """Run an experiment file's sweep on this machine, `jobs` runs at a time (finished runs are skipped,
    interrupted ones resume; with tuning, the tuning runs first, then the final seeds at the chosen
    settings), then write its report. Each run is a `cnn-jax run-task` process, as on the command line.

    >>> result = cnn_jax.run_sweep("experiments/pool_vs_stride.py", "cpu", jobs=2)  # doctest: +SKIP
    >>> result.report.data["variants"][0]["final_accuracy"]["mean"]             # doctest: +SKIP
    """
    from cnn_jax.analysis.report import write_report
    from cnn_jax.sweep import launch
    from cnn_jax.sweep.plan import load_plan
    from cnn_jax.train.loop import silent

    if jobs < 1:
        raise UserError(f"jobs = {jobs}: must be >= 1 (runs at once).")
    runs_root = Path(runs_root).resolve()
    spec = str(experiment) if preset is None else f"{experiment}:{preset}"
    flags = [f"--config.{key}={value}" for key, value in dict(overrides or {}).items()]
    task_args = [] if data_dir is None else ["--data-dir", str(Path(data_dir).resolve())]
    for folder in local_data:
        task_args += ["--local-data", str(Path(folder).resolve())]
    plan, failed = launch.run_phases_locally(
        lambda: load_plan(spec, {key: str(value) for key, value in dict(overrides or {}).items()}, runs_root),
        runs_root,
        task_args + flags,
        jobs,
        f"cnn_jax.run_sweep({spec!r}, overrides={dict(overrides or {})!r})",
        log=log or silent,
    )
    done = launch.finished_count(plan, runs_root) == len(plan.runs) and not plan.waiting
    report = write_report(plan.experiment_dir(runs_root), plan.preset) if done else None
    return SweepResult(plan, runs_root, failed, report)
