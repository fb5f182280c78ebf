"""Several processes (hosts) training one run together: start-up, who writes, and agreeing on a decision.

Every process runs the same program on its own devices; JAX's runtime joins them into one set of
devices. Only process 0 writes the run directory (config, metrics, TensorBoard, result); checkpoints
are written by Orbax from all processes together.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from cnn_jax.errors import UserError


def started_by_srun() -> bool:
    """True inside an `srun` step of several tasks: each task is one process of the run."""
    return int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> None:
    """Join the processes of one run: with all three flags, or detected from SLURM under `srun`;
    a single process otherwise (nothing to do)."""
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise UserError(
            "a multi-process run needs all of --coordinator HOST:PORT, --num-processes N and "
            "--process-id I (each process its own I in 0..N-1)."
        )
    if all(given):
        if not 0 <= process_id < num_processes:
            raise UserError(
                f"--process-id {process_id} is outside 0..{num_processes - 1} (--num-processes {num_processes})."
            )
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    elif started_by_srun():
        jax.distributed.initialize()  # coordinator, count and rank from SLURM's environment


def is_primary() -> bool:
    """The process that writes the run directory and prints progress."""
    return jax.process_index() == 0


def primary_says(value: bool) -> bool:
    """Process 0's `value`, on every process (a collective: all processes must call it)."""
    if jax.process_count() == 1:
        return value
    return bool(multihost_utils.broadcast_one_to_all(np.array(value)))


def any_process(value: bool) -> bool:
    """True on every process when `value` is True on any (a collective: all processes must call it)."""
    if jax.process_count() == 1:
        return value
    return bool(np.any(multihost_utils.process_allgather(np.array(value))))
