"""The training loop: the only impure part (progress, logging, checkpoints, run directory)."""

from __future__ import annotations

import contextlib
import math
import signal
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from tensorboardX import SummaryWriter
from tqdm import tqdm

from cnn_jax import checkpoints, provenance, rundir, validation
from cnn_jax import config as config_lib
from cnn_jax.data.pipeline import epoch_permutation, take_batch
from cnn_jax.errors import Diverged, Interrupted, UserError
from cnn_jax.train import hosts, streaming, transfer
from cnn_jax.train.setup import DataPaths, RunSetup, build, split_metrics
from cnn_jax.train.state import run_keys
from cnn_jax.train.steps import add_to_totals, all_finite, empty_metrics, empty_totals, make_train_step, metric_means


@contextlib.contextmanager
def signals_to_flag():
    """Turn SIGTERM / SIGINT into an entry in the yielded list, checked by the loop between steps."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {
        s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


_all_finite = jax.jit(all_finite)


def save_checked(manager, step: int, state, totals, metrics=None) -> None:
    """Save a checkpoint only of a finite state, so a divergence never overwrites the last good one."""
    if not math.isfinite(float(totals["epoch"]["loss_sum"])):
        raise Diverged(step, "the training loss", manager.latest_step())
    if not bool(_all_finite(state.params)):
        raise Diverged(step, "a parameter", manager.latest_step())
    checkpoints.save(manager, step, {"state": state, "train_totals": totals}, metrics)


def open_checkpoints(run_dir: Path, config: ml_collections.ConfigDict, read_only: bool = False):
    return checkpoints.open_run_manager(Path(run_dir) / "checkpoints", config, read_only)


def make_drive(setup: RunSetup):
    """drive(state, totals, split, order, index) -> (state, totals): gather a batch, step, add its metric sums
    to the epoch's and the log interval's."""
    train_step = make_train_step(setup.step_model, setup.tx, setup.config, setup.step_inputs, setup.trainable)
    batch_size = setup.config.train.batch_size

    def drive(state, totals, split, order, index):
        batch = setup.devices.split_batch(take_batch(split, order, index, batch_size))
        state, sums = train_step(state, batch, jax.random.fold_in(state.rng, state.step))
        return state, add_to_totals(totals, sums)

    return drive


def make_train_driver(setup: RunSetup):
    """`make_drive`, jitted, with the state and the metric sums donated."""
    return jax.jit(make_drive(setup), donate_argnums=(0, 1))


def make_batch_driver(setup: RunSetup):
    """The streamed counterpart of `make_train_driver`: drive(state, totals, batch), the batch from the host."""
    train_step = make_train_step(setup.step_model, setup.tx, setup.config, setup.step_inputs, setup.trainable)

    def drive(state, totals, batch):
        batch = setup.devices.split_batch(batch)
        state, sums = train_step(state, batch, jax.random.fold_in(state.rng, state.step))
        return state, add_to_totals(totals, sums)

    return jax.jit(drive, donate_argnums=(0, 1))


class DeviceFeed:
    """Training batches gathered on the device: the step takes the split, the epoch's order and an index.
    (Streamed data: train/streaming.py TrainFeed, with the same compile / step / close / wait_seconds.)"""

    wait_seconds = 0.0  # the gather is part of the step: no host time is spent waiting for data

    def __init__(self, setup: RunSetup, program: _Program, data_key, start: int):
        self.setup, self.program, self.data_key, self.start = setup, program, data_key, start
        self.order = self._order(start // setup.steps_per_epoch)

    def _order(self, epoch: int):
        return self.setup.devices.replicate(self.program.order_fn(self.data_key, epoch, self.setup.train.size))

    def compile(self, drive, state, totals):
        return drive.lower(state, totals, self.setup.train, self.order, 0).compile()

    def step(self, step_fn, state, totals, step: int):
        epoch, index = divmod(step, self.setup.steps_per_epoch)
        if index == 0 and step != self.start:
            self.order = self._order(epoch)
        return step_fn(state, totals, self.setup.train, self.order, index)

    def close(self) -> None:
        pass


def train(
    config: ml_collections.ConfigDict,
    run_dir: Path,
    paths: DataPaths,
    *,
    runs_root: Path = Path("runs"),
    force: bool = False,
    log=print,
    progress: bool = True,
    stop_at_step: int | None = None,
) -> dict[str, Any] | None:
    """Train `config` in `run_dir`, resuming from its latest checkpoint; returns the result record.

    `runs_root` is where a transfer source named by its experiment file is looked up.
    `stop_at_step` ends the process's work after that step without a final checkpoint, as a crash
    would (returns None); re-running resumes from the last checkpoint saved before it.
    In a multi-process run every process calls this; only process 0 logs and writes `run_dir`.
    """
    if not hosts.is_primary():
        log, progress = silent, False
    validation.validate(config)
    setup = build(config, paths, log=log, transfer_source=transfer_source(config, runs_root))
    member = open_member(setup, run_dir, log, force)
    setup = setup.with_cached_features(member.payload["state"], Path(run_dir).parent, log)
    member = replace(member, setup=setup)
    results = run_members(setup, [member], start_of([member]), log, progress, stop_at_step, batched=False)
    return results[0] if results else None


def transfer_source(config: ml_collections.ConfigDict, runs_root: Path) -> Path | None:
    """The finished run whose weights start this one (transfer learning), or None."""
    return transfer.resolve_source(config, Path(runs_root)) if config.transfer.source else None


def silent(*args, **kwargs) -> None:
    """The log of processes other than 0."""


@dataclass
class Member:
    """One run of a training program: its setup (with its config), directory, checkpoints and payload."""

    setup: RunSetup
    run_dir: Path
    manager: Any
    existed: bool
    start: int
    payload: dict


def open_member(setup: RunSetup, run_dir: Path, log, force: bool = False) -> Member:
    """Open (or create) the run directory of `setup.config` and restore its newest readable checkpoint."""
    run_dir = Path(run_dir)
    config = setup.config
    existed = rundir.open_run_dir(run_dir, config, force=force) if hosts.is_primary() else True
    manager = open_checkpoints(run_dir, config)
    start, payload = checkpoints.restore_newest_readable(
        manager, setup.payload_structure(), run_dir / "corrupt_checkpoints", log, setup.devices.replicated
    )
    if start:
        log(f"Resuming {run_dir} from step {start}.")
    else:
        payload = {"state": setup.initial_state(log), "train_totals": empty_totals()}
    return Member(setup, run_dir, manager, existed, start, payload)


def start_of(members: list[Member]) -> int:
    """The step every member resumes from; members saved at different steps cannot train together."""
    starts = {m.start for m in members}
    if len(starts) > 1:
        raise UserError(
            "the runs of this seed group stopped at different steps ("
            + ", ".join(f"seed {m.setup.config.seed}: {m.start}" for m in members)
            + "); finish them one at a time (without --vmap-seeds)."
        )
    return starts.pop()


def stop_requested(received: list[int], done: int, every: int) -> bool:
    """A signal arrived: every step with one process; with several, all decide together every `every` steps."""
    if jax.process_count() == 1:
        return bool(received)
    return done % every == 0 and hosts.any_process(bool(received))


def _stack(trees: list[Any]) -> Any:
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


@dataclass(frozen=True)
class _Program:
    """The compiled pieces of a training program: one run, or several seeds vmapped together."""

    order_fn: Callable  # (data key(s), epoch, n) -> order(s)
    drive: Callable  # jitted (state, totals, split, order, index) -> (state, totals)
    evaluate: Callable  # jitted (state, split) -> metric sums
    member: Callable  # (tree, i) -> the tree of member i
    stack: Callable  # [tree of each member] -> the program's tree


def _program(setup: RunSetup, batched: bool) -> _Program:
    if setup.streamed is not None:
        if batched:
            raise UserError(
                "streamed data (dataset.source) cannot train seeds as one vmapped program: each seed reads its own "
                "batches; run the seeds one at a time (without --vmap-seeds), or keep the data on the device."
            )
        return _Program(None, make_batch_driver(setup), None, lambda tree, i: tree, lambda trees: trees[0])
    if not batched:
        return _Program(
            jax.jit(epoch_permutation, static_argnums=2),
            make_train_driver(setup),
            setup.evaluate,
            lambda tree, i: tree,
            lambda trees: trees[0],
        )
    return _Program(
        jax.jit(jax.vmap(epoch_permutation, in_axes=(0, None, None)), static_argnums=2),
        jax.jit(jax.vmap(make_drive(setup), in_axes=(0, 0, None, 0, None)), donate_argnums=(0, 1)),
        jax.jit(jax.vmap(setup.evaluate, in_axes=(0, None))),
        lambda tree, i: jax.tree_util.tree_map(lambda x: x[i], tree),
        _stack,
    )


def run_members(
    setup: RunSetup, members: list[Member], start: int, log, progress: bool, stop_at_step: int | None, batched: bool
) -> list[dict[str, Any]] | None:
    """Train `members` from step `start` to the end: one run (`batched` False), or several seeds of one
    config as one vmapped program; returns their results (None after `stop_at_step`)."""
    config = setup.config
    total_steps = config.train.epochs * setup.steps_per_epoch
    primary = hosts.is_primary()
    if start >= total_steps:
        log(f"Already complete: {', '.join(str(m.run_dir) for m in members)}")
        return [rundir.read_result(m.run_dir) or finish(m, m.payload["state"], {}) for m in members]
    for m in members:
        if primary:
            if m.existed:
                rundir.truncate_metrics(m.run_dir, start)
            rundir.record_start(
                m.run_dir,
                {
                    **provenance.manifest(),
                    "run_id": config_lib.run_id(m.setup.config),
                    "data": setup.data_manifest(),
                    "transfer": m.setup.transfer_manifest(),
                    "processes": jax.process_count(),
                    "devices": setup.devices.size,
                    **({"seed_group": [n.setup.config.seed for n in members]} if batched else {}),
                },
                resumed_from=start if m.existed else None,
            )
    return _run(setup, members, _program(setup, batched), start, total_steps, log, progress, stop_at_step, primary)


def _run(
    setup: RunSetup, members: list[Member], program: _Program, start, total_steps, log, progress, stop_at_step, primary
) -> list[dict[str, Any]] | None:
    config, spe = setup.config, setup.steps_per_epoch
    batch_size = config.train.batch_size
    payload = setup.on_devices(program.stack([m.payload for m in members]))
    state, totals = payload["state"], payload["train_totals"]
    data_key = program.stack([run_keys(m.setup.config.seed)["data"] for m in members])

    t0 = time.perf_counter()
    if setup.streamed is None:
        feed = DeviceFeed(setup, program, data_key, start)
    else:
        feed = streaming.TrainFeed(
            setup.train, setup.streamed, setup.devices, data_key, spe, batch_size, config.seed, start, total_steps
        )
    step_fn = feed.compile(program.drive, state, totals)
    compile_seconds = time.perf_counter() - t0
    seeds = f" of {len(members)} seeds" if len(members) > 1 else ""
    log(f"Compiled the train step{seeds} in {compile_seconds:.1f} s.")

    # On a restart, TensorBoard drops events after the restored step instead of showing them twice.
    writers = [
        SummaryWriter(
            str(m.run_dir / "tensorboard"),
            write_to_disk=primary,
            purge_step=start + 1 if (m.run_dir / "tensorboard").exists() else None,
        )
        for m in members
    ]
    bar = tqdm(total=total_steps, initial=start, unit="step", disable=not progress, dynamic_ncols=True)
    say = bar.write if progress else log  # the epoch lines: under the bar, else to the log
    rates, mark, mark_step = [], time.perf_counter(), start
    try:
        with signals_to_flag() as received:
            for step in range(start, total_steps):
                state, totals = feed.step(step_fn, state, totals, step)
                done = step + 1
                end_of_epoch = done % spe == 0
                if done % config.train.log_every_steps == 0 or end_of_epoch:
                    host = jax.device_get(totals)  # dispatch is asynchronous: this waits for the finished steps
                    now = time.perf_counter()
                    rates.append((done - mark_step) * batch_size / (now - mark))  # per run
                    evals = _eval_metrics(setup, program, state, len(members)) if end_of_epoch else None
                    records = [
                        log_record(
                            m.setup,
                            program.member(host, i),
                            done,
                            rates[-1],
                            m.manager.latest_step(),
                            lambda i=i, evals=evals: evals[i],
                            (bar, say) if i == 0 else None,
                        )
                        for i, m in enumerate(members)
                    ]
                    mark, mark_step = now, done
                    totals = _restart_sums(setup, program, totals, len(members), epoch_too=end_of_epoch)
                    for m, writer, record in zip(members, writers, records):
                        if primary:
                            rundir.append_metrics(m.run_dir, record)
                        for key, value in record.items():
                            if key != "step":
                                writer.add_scalar(key.replace("_", "/", 1), value, done)
                    if end_of_epoch:
                        _save_all(members, program, done, state, totals, records)
                        mark = time.perf_counter()  # evaluation and saving are not training throughput
                if done % config.checkpoint.every_steps == 0 and not end_of_epoch:
                    _save_all(members, program, done, state, totals)
                    mark = time.perf_counter()
                if stop_requested(received, done, config.train.log_every_steps):
                    _save_all(members, program, done, state, totals)
                    raise Interrupted(received[0] if received else signal.SIGTERM, done)
                if done == stop_at_step:
                    return None
    finally:
        feed.close()
        bar.close()
        for writer in writers:
            writer.close()
    loop_seconds = time.perf_counter() - t0 - compile_seconds  # steps, evaluation and checkpoints
    timing = {
        "compile_seconds": compile_seconds,
        "loop_seconds": loop_seconds,
        # host time spent waiting for training batches (0 when they are gathered on the device)
        "data_wait_seconds": feed.wait_seconds,
        "data_wait_fraction": feed.wait_seconds / loop_seconds if loop_seconds else 0.0,
        **(
            {"bad_images_skipped": setup.streamed.skipped, "bad_images": setup.streamed.bad_examples}
            if setup.streamed is not None and setup.streamed.skip_bad
            else {}
        ),
        "images_per_sec_median": statistics.median(rates) if rates else None,
        "first_step": start,
        **({"seeds_in_program": len(members)} if len(members) > 1 else {}),
    }
    return [finish(m, program.member(state, i), timing) for i, m in enumerate(members)]


def _restart_sums(setup: RunSetup, program: _Program, totals, count: int, epoch_too: bool):
    """After a log: the interval's sums start from zero, and at an epoch's end the epoch's too (so the
    checkpoint carries exactly the sums a resumed run continues from)."""

    def zeros():  # a new buffer each: the step donates both
        return setup.on_devices(program.stack([empty_metrics()] * count))

    return {"epoch": zeros() if epoch_too else totals["epoch"], "interval": zeros()}


def _eval_metrics(setup: RunSetup, program: _Program, state, count: int) -> list[dict[str, float]]:
    """Loss, top-1 and top-5 accuracy of each member on the validation and test splits, each example once."""
    if setup.streamed is not None:
        return [setup.eval_metrics(state)]
    state = setup.on_devices(state)
    metrics = [{} for _ in range(count)]
    for name, split in setup.eval_splits.items():
        sums = jax.device_get(program.evaluate(state, split))
        for i in range(count):
            metrics[i].update(split_metrics(program.member(sums, i), split.size, name))
    return metrics


def _save_all(members: list[Member], program: _Program, done: int, state, totals, records=None) -> None:
    for i, m in enumerate(members):
        metrics = {k: v for k, v in records[i].items() if k.startswith(("val_", "test_"))} if records else None
        save_checked(m.manager, done, program.member(state, i), program.member(totals, i), metrics)


def log_record(
    setup: RunSetup,
    host: dict,
    done: int,
    rate: float,
    last_good: int | None,
    eval_metrics: Callable[[], dict[str, float]],
    shown=None,
) -> dict[str, Any]:
    """The metrics.jsonl record of step `done` from the metric sums `host`: train metrics are means over the
    steps since the last record; at an epoch end also the epoch's means and `eval_metrics()`. `shown`: the
    member whose progress is shown, as (progress bar, where its epoch lines go)."""
    config, spe = setup.config, setup.steps_per_epoch
    running = metric_means(host["interval"])
    if not math.isfinite(running["loss"]):
        raise Diverged(done, "the training loss", last_good)
    bar, say = shown or (None, None)
    if bar is not None:
        bar.update(done - bar.n)  # the bar moves where the host has synced, so its ETA is honest
        bar.set_postfix(loss=f"{running['loss']:.4f}", acc=f"{running['accuracy']:.3f}", img_s=f"{rate:.0f}")
    record = {
        "step": done,
        "epoch": done / spe,
        "lr": float(setup.schedule(done - 1)),
        "train_loss": running["loss"],
        "train_accuracy": running["accuracy"],
        "images_per_sec": rate,
    }
    if config.train.skip_nonfinite_updates:
        record["skipped_steps"] = int(host["epoch"]["skipped"])  # this epoch so far
    if done % spe == 0:
        epoch = metric_means(host["epoch"])
        record.update({f"epoch_train_{k}": v for k, v in epoch.items()})
        record.update(eval_metrics())
        if say is not None:
            evaluated = " | ".join(
                f"{name} loss {record[f'{name}_loss']:.4f} acc {record[f'{name}_accuracy']:.4f}"
                for name in setup.eval_splits
            )
            say(
                f"epoch {done // spe}/{config.train.epochs}: train loss {epoch['loss']:.4f} "
                f"acc {epoch['accuracy']:.4f} | {evaluated}"
            )
    return record


def finish(member: Member, state, timing: dict) -> dict[str, Any]:
    """The result record of a member (written by process 0)."""
    setup, config, manager = member.setup, member.setup.config, member.manager
    # The last step ends an epoch, so its checkpoint already carries the final metrics.
    final = manager.metrics(int(state.step)) or setup.eval_metrics(state)
    best_step = checkpoints.best_step(manager)  # by a validation metric; None without a validation split
    result = {
        "run_id": config_lib.run_id(config),
        "experiment": config.experiment,
        "model": config.model.name,
        "dataset": config.dataset.name,
        "seed": config.seed,
        "steps": int(state.step),
        "epochs": config.train.epochs,
        "final": final,
        "val_best": None
        if best_step is None
        else {
            "step": best_step,
            "selected_by": f"{config.checkpoint.best_metric} ({config.checkpoint.best_mode})",
            **(manager.metrics(best_step) or {}),
        },
        "data_fingerprints": setup.data.fingerprints,
        "model_summary": setup.model_summary,
        **timing,
    }
    if hosts.is_primary():
        rundir.write_result(member.run_dir, result)
    return result
