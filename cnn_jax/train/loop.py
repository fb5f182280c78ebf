"""The training loop: the only impure part (progress, logging, checkpoints, run directory)."""

from __future__ import annotations

import contextlib
import math
import signal
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
from tensorboardX import SummaryWriter
from tqdm import tqdm

from cnn_jax import checkpoints, provenance, rundir
from cnn_jax import config as config_lib
from cnn_jax.data.pipeline import epoch_permutation, take_batch
from cnn_jax.errors import Diverged, Interrupted
from cnn_jax.train import hosts, transfer
from cnn_jax.train.setup import DataPaths, RunSetup, build
from cnn_jax.train.state import run_keys
from cnn_jax.train.steps import all_finite, empty_metrics, make_train_step, metric_means


@contextlib.contextmanager
def signals_to_flag():
    """Turn SIGTERM / SIGINT into an entry in the yielded list, checked by the loop between steps."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


_all_finite = jax.jit(all_finite)


def save_checked(manager, step: int, state, totals, metrics=None) -> None:
    """Save a checkpoint only of a finite state, so a divergence never overwrites the last good one."""
    if not math.isfinite(float(totals["loss_sum"])):
        raise Diverged(step, "the training loss", manager.latest_step())
    if not bool(_all_finite(state.params)):
        raise Diverged(step, "a parameter", manager.latest_step())
    checkpoints.save(manager, step, {"state": state, "train_totals": totals}, metrics)


def open_checkpoints(run_dir: Path, config: ml_collections.ConfigDict, read_only: bool = False):
    c = config.checkpoint
    return checkpoints.open_manager(Path(run_dir) / "checkpoints", keep=c.keep, best_metric=c.best_metric,
                                    best_mode=c.best_mode, read_only=read_only)


def make_drive(setup: RunSetup):
    """drive(state, totals, split, order, index) -> (state, totals): gather a batch, step, add metrics."""
    train_step = make_train_step(setup.model, setup.tx, setup.config, setup.mean, setup.std, setup.trainable)
    batch_size = setup.config.train.batch_size

    def drive(state, totals, split, order, index):
        batch = setup.devices.split_batch(take_batch(split, order, index, batch_size))
        state, sums = train_step(state, batch, jax.random.fold_in(state.rng, state.step))
        return state, jax.tree_util.tree_map(lambda a, b: a + b, totals, sums)

    return drive


def make_train_driver(setup: RunSetup):
    """`make_drive`, jitted, with the state and the metric sums donated."""
    return jax.jit(make_drive(setup), donate_argnums=(0, 1))


def train(config: ml_collections.ConfigDict, run_dir: Path, paths: DataPaths, *, force: bool = False,
          log=print, progress: bool = True, stop_at_step: int | None = None) -> dict[str, Any] | None:
    """Train `config` in `run_dir`, resuming from its latest checkpoint; returns the result record.

    `stop_at_step` ends the process's work after that step without a final checkpoint, as a crash
    would (returns None); re-running resumes from the last checkpoint saved before it.
    In a multi-process run every process calls this; only process 0 logs and writes `run_dir`.
    """
    run_dir = Path(run_dir)
    primary = hosts.is_primary()
    if not primary:
        log, progress = silent, False
    config_lib.validate(config)
    source = transfer.resolve_source(config, run_dir.parent.parent) if config.transfer.source else None
    setup = build(config, paths, log=log, transfer_source=source)
    existed = rundir.open_run_dir(run_dir, config, force=force) if primary else True
    manager = open_checkpoints(run_dir, config)
    start, payload = checkpoints.restore_newest_readable(manager, setup.payload_structure(),
                                                         run_dir / "corrupt_checkpoints", log, setup.devices.replicated)
    if start:
        log(f"Resuming {run_dir} from step {start}.")
    else:
        payload = {"state": setup.initial_state(log), "train_totals": empty_metrics()}
    total_steps = config.train.epochs * setup.steps_per_epoch
    if start >= total_steps:
        result = rundir.read_result(run_dir) or finish(setup, run_dir, manager, payload["state"], {}, primary)
        log(f"Already complete: {run_dir}")
        return result
    if primary:
        if existed:
            rundir.truncate_metrics(run_dir, start)
        rundir.record_start(run_dir, {**provenance.manifest(), "run_id": config_lib.run_id(config),
                                      "data": setup.data_manifest(), "transfer": setup.transfer_manifest(),
                                      "processes": jax.process_count(), "devices": setup.devices.size},
                            resumed_from=start if existed else None)
    return _run(setup, run_dir, manager, payload, start, total_steps, log, progress, stop_at_step, primary)


def silent(*args, **kwargs) -> None:
    """The log of processes other than 0."""


def stop_requested(received: list[int], done: int, every: int) -> bool:
    """A signal arrived: every step with one process; with several, all decide together every `every` steps."""
    if jax.process_count() == 1:
        return bool(received)
    return done % every == 0 and hosts.any_process(bool(received))


def _run(setup, run_dir, manager, payload, start, total_steps, log, progress, stop_at_step,
         primary) -> dict[str, Any] | None:
    config, spe = setup.config, setup.steps_per_epoch
    batch_size = config.train.batch_size
    payload = setup.on_devices(payload)
    state, totals = payload["state"], payload["train_totals"]
    data_key = run_keys(config.seed)["data"]
    order_fn = jax.jit(epoch_permutation, static_argnums=2)

    t0 = time.perf_counter()
    order = setup.devices.replicate(order_fn(data_key, start // spe, setup.train.size))
    step_fn = make_train_driver(setup).lower(state, totals, setup.train, order, 0).compile()
    compile_seconds = time.perf_counter() - t0
    log(f"Compiled the train step in {compile_seconds:.1f} s.")

    # On a restart, TensorBoard drops events after the restored step instead of showing them twice.
    writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start + 1 if (run_dir / "tensorboard").exists() else None,
                           write_to_disk=primary)
    bar = tqdm(total=total_steps, initial=start, unit="step", disable=not progress, dynamic_ncols=True)
    rates, mark, mark_step = [], time.perf_counter(), start
    try:
        with signals_to_flag() as received:
            for step in range(start, total_steps):
                epoch, index = divmod(step, spe)
                if index == 0 and step != start:
                    order = setup.devices.replicate(order_fn(data_key, epoch, setup.train.size))
                state, totals = step_fn(state, totals, setup.train, order, index)
                done = step + 1
                end_of_epoch = done % spe == 0
                if done % config.train.log_every_steps == 0 or end_of_epoch:
                    jax.block_until_ready(totals)  # dispatch is asynchronous: time finished work only
                    now = time.perf_counter()
                    rates.append((done - mark_step) * batch_size / (now - mark))
                    record = log_record(setup, jax.device_get(totals), done, rates[-1], manager.latest_step(),
                                        lambda: setup.test_metrics(state), bar)
                    mark, mark_step = now, done
                    if primary:
                        rundir.append_metrics(run_dir, record)
                    for key, value in record.items():
                        if key != "step":
                            writer.add_scalar(key.replace("_", "/", 1), value, done)
                    if end_of_epoch:  # the next epoch starts its sums from zero, in the checkpoint too
                        totals = setup.on_devices(empty_metrics())
                        save_checked(manager, done, state, totals,
                                      {k: record[k] for k in ("eval_loss", "eval_accuracy", "eval_top5")})
                        mark = time.perf_counter()  # evaluation and saving are not training throughput
                if done % config.checkpoint.every_steps == 0 and not end_of_epoch:
                    save_checked(manager, done, state, totals)
                    mark = time.perf_counter()
                if stop_requested(received, done, config.train.log_every_steps):
                    save_checked(manager, done, state, totals)
                    raise Interrupted(received[0] if received else signal.SIGTERM, done)
                if done == stop_at_step:
                    return None
    finally:
        bar.close()
        writer.close()
    loop_seconds = time.perf_counter() - t0 - compile_seconds  # steps, evaluation and checkpoints
    timing = {"compile_seconds": compile_seconds, "loop_seconds": loop_seconds,
              "images_per_sec_median": statistics.median(rates) if rates else None, "first_step": start}
    return finish(setup, run_dir, manager, state, timing, primary)


def log_record(setup: RunSetup, host: dict, done: int, rate: float, last_good: int | None,
               test_metrics: Callable[[], dict[str, float]], bar=None) -> dict[str, Any]:
    """The metrics.jsonl record of step `done` from the metric sums `host`; at an epoch end with
    `test_metrics()` (and a line under the progress `bar`, if any)."""
    config, spe = setup.config, setup.steps_per_epoch
    running = metric_means(host)
    if not math.isfinite(running["loss"]):
        raise Diverged(done, "the training loss", last_good)
    if bar is not None:
        bar.update(done - bar.n)  # the bar moves where the host has synced, so its ETA is honest
        bar.set_postfix(loss=f"{running['loss']:.4f}", acc=f"{running['accuracy']:.3f}", img_s=f"{rate:.0f}")
    record = {"step": done, "epoch": done / spe, "lr": float(setup.schedule(done - 1)),
              "train_loss": running["loss"], "train_accuracy": running["accuracy"], "images_per_sec": rate}
    if config.train.skip_nonfinite_updates:
        record["skipped_steps"] = int(host["skipped"])  # this epoch so far
    if done % spe == 0:
        record.update(test_metrics())
        record["train_top5"] = running["top5"]
        if bar is not None:
            bar.write(f"epoch {done // spe}/{config.train.epochs}: train loss {running['loss']:.4f} "
                      f"acc {running['accuracy']:.4f} | test loss {record['eval_loss']:.4f} "
                      f"acc {record['eval_accuracy']:.4f}")
    return record


def finish(setup, run_dir, manager, state, timing, primary: bool) -> dict[str, Any]:
    config = setup.config
    # The last step ends an epoch, so its checkpoint already carries the final test metrics.
    final = manager.metrics(int(state.step)) or setup.test_metrics(state)
    best_step = manager.best_step()
    result = {
        "run_id": config_lib.run_id(config), "experiment": config.experiment, "model": config.model.name,
        "dataset": config.dataset.name, "seed": config.seed, "steps": int(state.step),
        "epochs": config.train.epochs, "final": final,
        "best": {"step": best_step, **(manager.metrics(best_step) or {})} if best_step is not None else None,
        "data_fingerprints": setup.data.fingerprints, "model_summary": setup.model_summary, **timing,
    }
    if primary:
        rundir.write_result(run_dir, result)
    return result
