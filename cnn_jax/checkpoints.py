"""Orbax checkpoints: keep the last K and the best by a metric; restore into a known structure; find and
read the checkpoints of a run (or of a bare checkpoints folder) without building its model."""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from cnn_jax import config as config_lib
from cnn_jax import rundir
from cnn_jax.errors import UserError

COLLECTIONS = ("params", "batch_stats")  # the model's variables inside a saved TrainState


def open_manager(
    directory: Path, *, keep: int, best_metric: str | None, best_mode: str = "max", read_only: bool = False
) -> ocp.CheckpointManager:
    """A manager that keeps the `keep` latest checkpoints plus the best one by `best_metric` (None: no best)."""
    policy = [policies.LatestN(n=keep)]
    best = {}
    if best_metric is not None:
        metric = lambda metrics: metrics[best_metric]  # noqa: E731
        policy.append(
            policies.BestN(
                get_metric_fn=metric, reverse=best_mode == "min", n=1, keep_checkpoints_without_metrics=False
            )
        )
        best = {"best_fn": metric, "best_mode": best_mode}
    options = ocp.CheckpointManagerOptions(
        create=not read_only,
        read_only=read_only,
        preservation_policy=policies.AnyPreservationPolicy(policy),
        enable_async_checkpointing=False,
        **best,
    )
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def open_run_manager(directory: Path, config: ml_collections.ConfigDict, read_only: bool = False):
    """The manager of a run's checkpoints folder as its config set it up: the best checkpoint is chosen by
    `checkpoint.best_metric` on the validation split, and there is none without a validation split."""
    c = config.checkpoint
    best_metric = c.best_metric if config.dataset.validation_fraction else None
    return open_manager(directory, keep=c.keep, best_metric=best_metric, best_mode=c.best_mode, read_only=read_only)


def save(manager: ocp.CheckpointManager, step: int, tree: Any, metrics: dict[str, float] | None = None) -> None:
    """Save `tree` at `step` (a step already saved is left as it is)."""
    if step in manager.all_steps():
        return
    manager.save(step, args=ocp.args.StandardSave(tree), metrics=metrics)
    manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, step: int, like: Any, sharding: jax.sharding.Sharding | None = None) -> Any:
    """Restore step `step` into the structure, shapes and dtypes of `like`, placed by `sharding`
    (default: the first local device), whatever devices wrote it."""
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), like)
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def restore_newest_readable(
    manager: ocp.CheckpointManager,
    like: Any,
    quarantine: Path,
    log=print,
    sharding: jax.sharding.Sharding | None = None,
) -> tuple[int, Any | None]:
    """Restore the newest checkpoint that reads back; unreadable newer ones move to `quarantine`.

    Returns (0, None) only when there are no checkpoints at all. If none reads back, nothing is
    moved and this raises: a run directory with checkpoints never silently restarts from scratch.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    unreadable = []
    for step in steps:
        try:
            restored = restore(manager, step, like, sharding)
        except Exception as exc:  # a truncated or corrupted checkpoint: orbax raises many kinds
            unreadable.append(step)
            log(f"Checkpoint {step} is unreadable ({type(exc).__name__}: {str(exc)[:200]}).")
            continue
        for bad in unreadable if jax.process_index() == 0 else ():  # one process moves them
            target = Path(quarantine) / str(bad)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(Path(manager.directory) / str(bad)), target)
            log(f"Moved unreadable checkpoint {bad} to {target}; resuming from step {step}.")
        manager.reload()
        return step, restored
    if steps:
        raise UserError(
            f"no checkpoint in '{manager.directory}' could be read (steps {steps}); refusing to restart "
            "from scratch. Move the run directory away to start over."
        )
    return 0, None


def best_step(manager: ocp.CheckpointManager) -> int | None:
    """The step that is best by the run's validation metric; None while no checkpoint has validation metrics
    (orbax itself answers with the latest step when it tracks no metric)."""
    step = manager.best_step()
    metrics = manager.metrics(step) if step is not None else None
    return step if metrics and any(key.startswith("val_") for key in metrics) else None


def pick_step(manager: ocp.CheckpointManager, which: str) -> int:
    """'latest', 'best' or a step number -> a saved step, or a UserError listing what exists."""
    steps = manager.all_steps()
    if not steps:
        raise UserError(f"no checkpoints in '{manager.directory}'.")
    if which == "latest":
        return manager.latest_step()
    if which == "best":
        best = best_step(manager)
        if best is None:
            raise UserError(f"{_no_best(manager)}; use --checkpoint latest.")
        return best
    if which.isdigit() and int(which) in steps:
        return int(which)
    raise UserError(
        f"checkpoint '{which}' not found in '{manager.directory}'; saved steps: {sorted(steps)} (or 'latest', 'best')."
    )


# ----------------------------------------------------------------------------- reading a run's checkpoints


@dataclass(frozen=True)
class Source:
    """Where checkpoints are: a run directory, its checkpoints/ folder, or one step folder of it."""

    path: Path
    checkpoints_dir: Path
    run_dir: Path | None  # None: a checkpoints folder without its run (no config.json beside it)
    pinned_step: int | None  # set when `path` is one step folder

    def config(self) -> ml_collections.ConfigDict | None:
        return rundir.load_config(self.run_dir) if self.run_dir else None

    def manager(self) -> ocp.CheckpointManager:
        with _absl_errors_only():  # opening read-only, orbax warns that it is read-only
            return open_run_manager(self.checkpoints_dir, self.config() or config_lib.default_config(), True)

    def pick(self, manager: ocp.CheckpointManager, which: str | int | None, default: str) -> int:
        """The step `which` names ('best', 'latest' or a number; None: `default`, or the pinned step)."""
        if self.pinned_step is not None:
            if which is None or str(which) == str(self.pinned_step):
                return self.pinned_step
            raise UserError(
                f"'{self.path}' is the single checkpoint of step {self.pinned_step}; give its run "
                f"directory to choose step '{which}'."
            )
        which = default if which is None else str(which)
        if which == "best" and self.run_dir is not None and rundir.is_imported(self.run_dir):
            which = "latest"  # imported pretrained weights: one checkpoint, no metrics to choose by
        if which == "best" and manager.all_steps() and best_step(manager) is None:
            raise UserError(f"{_no_best(manager)}; choose step 'latest' or one of {sorted(manager.all_steps())}.")
        return pick_step(manager, which)


def _no_best(manager: ocp.CheckpointManager) -> str:
    """Why `manager` has no best checkpoint."""
    return (
        f"no checkpoint in '{manager.directory}' has validation metrics to select the best by (a run with "
        "dataset.validation_fraction = 0 never has; others have from their first epoch's end)"
    )


@contextlib.contextmanager
def _absl_errors_only():
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def locate(path: Path) -> Source:
    """Recognize a run directory, its checkpoints/ folder or one step folder; a UserError otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(
            f"'{path}' does not exist or is not a directory; give a run directory, its checkpoints/ "
            "folder or one step folder in it."
        )
    if (path / "checkpoints").is_dir():
        return Source(path, path / "checkpoints", path, None)
    if path.name.isdigit() and ((path / "_CHECKPOINT_METADATA").exists() or (path / "default").is_dir()):
        return Source(path, path.parent, _run_dir_of(path.parent), int(path.name))
    if any(child.name.isdigit() and child.is_dir() for child in path.iterdir()):
        return Source(path, path, _run_dir_of(path), None)
    if (path / rundir.CONFIG).exists():
        raise UserError(f"run directory '{path}' has no checkpoints/ folder yet; train it first.")
    raise UserError(
        f"'{path}' holds no checkpoints; give a run directory, its checkpoints/ folder or one step folder in it."
    )


def _run_dir_of(checkpoints_dir: Path) -> Path | None:
    parent = checkpoints_dir.parent
    return parent if checkpoints_dir.name == "checkpoints" and (parent / rundir.CONFIG).exists() else None


def read_checkpoint(source: Source, manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
    """The saved payload of `step` as numpy arrays: {"state": {...}, "train_totals": {...}}."""
    try:
        restored = manager.restore(step, args=ocp.args.StandardRestore())
    except Exception as exc:  # a truncated or foreign checkpoint: orbax raises many kinds
        raise UserError(
            f"checkpoint {step} in '{source.checkpoints_dir}' could not be read "
            f"({type(exc).__name__}: {str(exc)[:200]})."
        ) from None
    return jax.tree_util.tree_map(np.asarray, restored)


def model_variables(payload: dict[str, Any]) -> dict[str, Any]:
    """{"params": ..., "batch_stats": ...} of a payload; collections that are empty are left out."""
    state = payload["state"]
    return {name: state[name] for name in COLLECTIONS if state.get(name)}


def flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Leaves of nested dicts/lists keyed by '/'-joined paths (list items by their index)."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    flat = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    return flat
