"""Orbax checkpoints: keep the last K and the best by a metric; restore into a known structure."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from cnn_jax.errors import UserError


def open_manager(directory: Path, *, keep: int, best_metric: str, best_mode: str,
                 read_only: bool = False) -> ocp.CheckpointManager:
    """A manager that keeps the `keep` latest checkpoints plus the best one by `best_metric`."""
    metric = lambda metrics: metrics[best_metric]  # noqa: E731
    preserve = policies.AnyPreservationPolicy([
        policies.LatestN(n=keep),
        policies.BestN(get_metric_fn=metric, reverse=best_mode == "min", n=1,
                       keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        create=not read_only, read_only=read_only, preservation_policy=preserve,
        best_fn=metric, best_mode=best_mode, enable_async_checkpointing=False,
    )
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


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


def restore_newest_readable(manager: ocp.CheckpointManager, like: Any, quarantine: Path,
                            log=print, sharding: jax.sharding.Sharding | None = None) -> tuple[int, Any | None]:
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
        raise UserError(f"no checkpoint in '{manager.directory}' could be read (steps {steps}); refusing to restart "
                        "from scratch. Move the run directory away to start over.")
    return 0, None


def pick_step(manager: ocp.CheckpointManager, which: str) -> int:
    """'latest', 'best' or a step number -> a saved step, or a UserError listing what exists."""
    steps = manager.all_steps()
    if not steps:
        raise UserError(f"no checkpoints in '{manager.directory}'.")
    if which == "latest":
        return manager.latest_step()
    if which == "best":
        best = manager.best_step()
        if best is None:
            raise UserError(f"no checkpoint in '{manager.directory}' has eval metrics yet; use --checkpoint latest.")
        return best
    if which.isdigit() and int(which) in steps:
        return int(which)
    raise UserError(f"checkpoint '{which}' not found in '{manager.directory}'; saved steps: {sorted(steps)} (or 'latest', 'best').")
