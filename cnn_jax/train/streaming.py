"""Streamed data in a run: host batches (data/loader.py) in the device pipeline's order, placed on the devices.

The train order of epoch e is `epoch_permutation(data key, e, n)`, computed here as the device pipeline
computes it, so on the same data both pipelines give the same batches. Each process reads only the rows
of every global batch that its own devices consume, and JAX joins the processes' rows into one array.
Orders are computed for a segment of epochs at a time (at most `SEGMENT_ENTRIES` entries), which is how
long grain's workers live.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from cnn_jax.data.loader import EvalReader, HostTransform, TrainReader, batches
from cnn_jax.data.pipeline import PixelMoments, epoch_permutation
from cnn_jax.data.streamed import BadImage, StreamedSplit
from cnn_jax.errors import UserError
from cnn_jax.files import write_json_atomic
from cnn_jax.train.devices import DataMesh

SEGMENT_ENTRIES = 1 << 24  # order entries per segment: 64 MB of int32, pickled to each worker
# worker processes take over a second to start (grain spawns them afresh, and they import JAX): a split read
# whole (evaluation, statistics) uses them only when it is large enough to repay that
WORKERS_MIN_IMAGES = 20_000


def _workers_for(split: StreamedSplit, stream: StreamedData) -> int:
    return stream.workers if len(split) >= WORKERS_MIN_IMAGES else 0


@dataclass
class StreamedData:
    """How a streamed run reads its data, and what reading it met (bad images skipped)."""

    transform: HostTransform
    workers: int
    skip_bad: bool
    reason: str  # why the data is streamed
    skipped: int = 0
    bad_examples: list[str] = field(default_factory=list)

    def count(self, batch: dict) -> None:
        self.skipped += int(batch["skipped"])
        self.bad_examples = (self.bad_examples + list(batch["bad"]))[:8]

    def record(self) -> dict:
        return {
            "pipeline": "stream",
            "reason": self.reason,
            "workers": self.workers,
            "host_transform": {
                "image_size": self.transform.size,
                "random_resized_crop": self.transform.random_resized_crop,
                "scale": list(self.transform.scale),
                "ratio": list(self.transform.ratio),
                "crop_fraction": self.transform.crop_fraction,
            },
            "bad_images": "skip" if self.skip_bad else "stop",
        }


def process_rows(devices: DataMesh, batch_size: int) -> tuple[int, int]:
    """The rows [start, stop) of every global batch that this process's devices consume."""
    if devices.size == 1:
        return 0, batch_size
    sharding = NamedSharding(devices.mesh, PartitionSpec("data"))
    slices = sharding.addressable_devices_indices_map((batch_size,)).values()
    start, stop = min(s[0].start for s in slices), max(s[0].stop for s in slices)
    if stop - start != batch_size * len(slices) // devices.size:
        raise UserError("this process's devices do not take one contiguous block of the batch; order the devices")
    return start, stop


def place(devices: DataMesh, local: dict, batch_size: int) -> dict:
    """This process's rows of a batch -> the global batch on the devices (laid out as the step wants it)."""
    arrays = {k: local[k] for k in ("image", "label", "mask")}
    if devices.size == 1:
        return {k: jax.device_put(v, devices.replicated) for k, v in arrays.items()}
    sharding = NamedSharding(devices.mesh, PartitionSpec("data"))
    return {
        k: jax.make_array_from_process_local_data(sharding, v, (batch_size, *v.shape[1:])) for k, v in arrays.items()
    }


def _failure(exc: Exception) -> UserError:
    if isinstance(exc, BadImage):
        return UserError(
            f"dataset: {exc}. Remove or replace the file, or set dataset.bad_images=skip to replace such images "
            "by the next readable one (counted in the run's result)."
        )
    return UserError(
        f"the data pipeline failed ({type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc) else ''}); "
        "the run stopped, its last checkpoint is intact. With dataset.workers > 0, try dataset.workers=0 to see "
        "the error in this process."
    )


@contextlib.contextmanager
def reading() -> Iterator[None]:
    """Turn a failure while reading data (a bad image, a worker that died) into one clear line."""
    try:
        yield
    except (BadImage, OSError, RuntimeError) as exc:  # a file, the disk, or a worker process (grain's error)
        raise _failure(exc) from None


class TrainFeed:
    """The training batches from step `start` on, with the seconds spent waiting for them."""

    def __init__(self, split, stream, devices, data_key, steps_per_epoch, batch_size, seed, start, stop):
        self.split, self.stream, self.devices = split, stream, devices
        self.data_key, self.spe, self.batch_size, self.seed = data_key, steps_per_epoch, batch_size, seed
        self.rows = process_rows(devices, batch_size)
        self.stop, self.next_step = stop, start
        self.wait_seconds = 0.0
        self._stack = contextlib.ExitStack()
        self._iterator = None
        self._segment_end = start
        self._orders = jax.jit(epoch_permutation, static_argnums=2)

    def _open_segment(self, step: int) -> None:
        self._stack.close()
        first_epoch = step // self.spe
        epochs = max(1, SEGMENT_ENTRIES // len(self.split))
        last_epoch = min(first_epoch + epochs, -(-self.stop // self.spe))
        orders = np.stack(
            [np.asarray(self._orders(self.data_key, e, len(self.split))) for e in range(first_epoch, last_epoch)]
        )
        reader = TrainReader(
            self.split, orders, first_epoch, self.spe, self.batch_size, self.rows, self.stream.transform, self.seed,
            self.stream.skip_bad,
        )  # fmt: skip
        self._segment_end = min(last_epoch * self.spe, self.stop)
        self._iterator = self._stack.enter_context(batches(reader, step, self._segment_end, self.stream.workers))

    def compile(self, drive, state, totals):
        """`drive` (state, totals, batch) compiled for this feed's batches, before any is read."""
        sharding = None if self.devices.size == 1 else NamedSharding(self.devices.mesh, PartitionSpec("data"))

        def spec(shape, dtype):
            return jax.ShapeDtypeStruct((self.batch_size, *shape), dtype, sharding=sharding)

        batch = {
            "image": spec(self.stream.transform.output_shape, jnp.uint8),
            "label": spec((), jnp.int32),
            "mask": spec((), jnp.bool_),
        }
        return drive.lower(state, totals, batch).compile()

    def step(self, step_fn, state, totals, step: int):
        return step_fn(state, totals, self.next(step))

    def next(self, step: int) -> dict:
        """The global batch of `step` (steps are taken in order)."""
        if step != self.next_step:
            raise RuntimeError(f"batches are read in order: asked for step {step}, expected {self.next_step}")
        t0 = time.perf_counter()
        with reading():
            if self._iterator is None or step >= self._segment_end:
                self._open_segment(step)
            local = next(self._iterator)
        self.stream.count(local)
        batch = place(self.devices, local, self.batch_size)
        self.wait_seconds += time.perf_counter() - t0
        self.next_step = step + 1
        return batch

    def close(self) -> None:
        self._stack.close()


def evaluate(eval_batch, state, split: StreamedSplit, stream: StreamedData, devices, batch_size: int):
    """Metric sums of `eval_batch(state, batch)` over the whole split in stored order, and how many of its
    examples were counted (fewer than its size only with skipped bad images)."""
    reader = EvalReader(split, batch_size, process_rows(devices, batch_size), stream.transform, stream.skip_bad)
    totals, skipped = None, 0
    batch_count = -(-len(split) // batch_size)
    with reading(), batches(reader, 0, batch_count, _workers_for(split, stream)) as iterator:
        for local in iterator:
            skipped += int(local["skipped"])
            stream.count(local)
            sums = eval_batch(state, place(devices, local, batch_size))
            totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
    return totals, len(split) - skipped


def channel_stats(split: StreamedSplit, stream: StreamedData, cache: Path | None, key: dict) -> tuple:
    """Per-channel mean and std of the split's images as evaluation sees them (exactly what the device
    pipeline computes for resident data), cached in `cache` under a hash of `key`."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cache) / f"{digest}.json" if cache else None
    if path is not None and path.exists():
        stored = json.loads(path.read_text())
        return np.asarray(stored["mean"], np.float32), np.asarray(stored["std"], np.float32)
    batch_size = 256
    reader = EvalReader(split, batch_size, (0, batch_size), stream.transform, stream.skip_bad)
    moments = PixelMoments(stream.transform.output_shape[-1])
    with reading(), batches(reader, 0, -(-len(split) // batch_size), _workers_for(split, stream)) as iterator:
        for local in iterator:
            moments.add(local["image"][local["mask"]])
    mean, std = moments.mean_std()
    if path is not None:
        try:
            write_json_atomic(path, {"mean": mean.tolist(), "std": std.tolist(), "key": key})
        except OSError:
            pass
    return mean, std
