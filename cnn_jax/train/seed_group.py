"""Several seeds of one config trained by one compiled program: the train step vmapped over stacked states.

Each seed keeps its own initialization, data order, per-step randomness, batch-norm statistics and
optimizer state, and its own run directory, metrics, checkpoints and result, as if trained alone.
Only the arithmetic is batched, so a seed's numbers equal its lone run within float tolerance, not
bit for bit (tests/test_seed_group.py measures the difference).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ml_collections

from cnn_jax import config as config_lib
from cnn_jax import validation
from cnn_jax.errors import UserError
from cnn_jax.train import hosts, loop
from cnn_jax.train.setup import DataPaths, build


def check_group(configs: list[ml_collections.ConfigDict]) -> None:
    """The configs must be one config with distinct seeds."""
    seeds = [c.seed for c in configs]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"a seed group needs distinct seeds, got {seeds}.")
    for other in configs[1:]:
        differences = [d for d in config_lib.diff(configs[0], other) if not d.startswith("seed:")]
        if differences:
            raise UserError(
                f"runs trained together in one program may differ only by seed; seed {other.seed} "
                f"differs from seed {configs[0].seed} in: {'; '.join(differences)}."
            )


def train_seed_group(
    configs: list[ml_collections.ConfigDict],
    run_dirs: list[Path],
    paths: DataPaths,
    *,
    runs_root: Path = Path("runs"),
    log=print,
    progress: bool = True,
    stop_at_step: int | None = None,
) -> list[dict] | None:
    """Train `configs` (one config, several seeds) together, each in its run directory; returns their results.

    Resumes when every run saved the same step; `runs_root` and `stop_at_step` as in `loop.train`."""
    for config in configs:
        validation.validate(config)
    check_group(configs)
    if not hosts.is_primary():
        log, progress = loop.silent, False
    setup = build(configs[0], paths, log=log, transfer_source=loop.transfer_source(configs[0], runs_root))
    members = [loop.open_member(dataclasses.replace(setup, config=c), d, log) for c, d in zip(configs, run_dirs)]
    return loop.run_members(setup, members, loop.start_of(members), log, progress, stop_at_step, batched=True)
