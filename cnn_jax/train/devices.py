"""Data parallelism over every device of the run: a 1-D mesh 'data'; batches split, state replicated.

The config's batch sizes are global; each device takes an equal slice of every batch and XLA inserts
the gradient all-reduce. In a multi-process run the mesh spans all processes' devices and each device
gathers only its own slice of a batch from the (replicated, uint8) dataset. With one device nothing is
annotated, so single-device programs are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from cnn_jax.errors import UserError


@dataclass(frozen=True)
class DataMesh:
    mesh: Mesh

    @property
    def size(self) -> int:
        return self.mesh.size

    @property
    def replicated(self) -> jax.sharding.Sharding:
        """Where a state lives: one device, or a copy on each."""
        if self.size == 1:
            return SingleDeviceSharding(self.mesh.devices.flat[0])
        return NamedSharding(self.mesh, PartitionSpec())

    def replicate(self, tree: Any) -> Any:
        """Put a copy of `tree` on every device (a no-op with one device, and for arrays already placed so);
        every process passes the same tree."""
        if self.size == 1:
            return tree
        target = self.replicated

        def place(x):
            if isinstance(x, jax.Array) and x.sharding == target:
                return x
            if jax.process_count() > 1:  # from host memory: device_put of single-device arrays across processes
                x = jax.device_get(x)  # can produce arrays Orbax cannot save (seen with one device per process)
            return jax.device_put(x, target)

        return jax.tree_util.tree_map(place, tree)

    def split_batch(self, batch: Any) -> Any:
        """Inside jit: lay the batch's leading axis across the devices (a no-op with one device)."""
        if self.size == 1:
            return batch
        return jax.lax.with_sharding_constraint(batch, NamedSharding(self.mesh, PartitionSpec("data")))


def data_mesh(config: ml_collections.ConfigDict, devices: list | None = None) -> DataMesh:
    """A mesh over `devices` (default: all devices of all processes); batch sizes must divide across them."""
    devices = list(devices if devices is not None else jax.devices())
    for field in ("batch_size", "eval_batch_size"):
        size = config.train[field]
        if size % len(devices):
            where = f" of {jax.process_count()} processes" if jax.process_count() > 1 else ""
            raise UserError(
                f"config field 'train.{field}' = {size} does not divide across the {len(devices)} "
                f"{devices[0].platform} devices{where}; use a multiple of {len(devices)}, e.g. "
                f"{size - size % len(devices) or len(devices)}."
            )
    return DataMesh(Mesh(np.array(devices), ("data",)))
