"""Several seeds of one config trained by one compiled program: the train step vmapped over stacked states.

Each seed keeps its own initialization, data order, per-step randomness, batch-norm statistics and
optimizer state, and its own run directory, metrics, checkpoints and result, as if trained alone.
Only the arithmetic is batched, so a seed's numbers equal its lone run within float tolerance, not
bit for bit (tests/test_seed_group.py measures the difference).
"""

from __future__ import annotations

import dataclasses
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from tensorboardX import SummaryWriter
from tqdm import tqdm

from cnn_jax import checkpoints, provenance, rundir
from cnn_jax import config as config_lib
from cnn_jax.data.pipeline import epoch_permutation
from cnn_jax.errors import Interrupted, UserError
from cnn_jax.train import hosts, loop, transfer
from cnn_jax.train.setup import DataPaths, RunSetup, build
from cnn_jax.train.state import run_keys
from cnn_jax.train.steps import empty_metrics, metric_means


def check_group(configs: list[ml_collections.ConfigDict]) -> None:
    """The configs must be one config with distinct seeds."""
    seeds = [c.seed for c in configs]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"a seed group needs distinct seeds, got {seeds}.")
    for other in configs[1:]:
        differences = [d for d in config_lib.diff(configs[0], other) if not d.startswith("seed:")]
        if differences:
            raise UserError(f"runs trained together in one program may differ only by seed; seed {other.seed} "
                            f"differs from seed {configs[0].seed} in: {'; '.join(differences)}.")


def _stack(trees: list[Any]) -> Any:
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def _member(tree: Any, i: int) -> Any:
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def train_seed_group(configs: list[ml_collections.ConfigDict], run_dirs: list[Path], paths: DataPaths, *,
                     log=print, progress: bool = True, stop_at_step: int | None = None) -> list[dict] | None:
    """Train `configs` (one config, several seeds) together, each in its run directory; returns their results.

    Resumes from checkpoints when every run has saved the same step; `stop_at_step` as in `loop.train`."""
    for config in configs:
        config_lib.validate(config)
    check_group(configs)
    primary = hosts.is_primary()
    if not primary:
        log, progress = loop.silent, False
    source = transfer.resolve_source(configs[0], Path(run_dirs[0]).parent.parent) if configs[0].transfer.source else None
    setup = build(configs[0], paths, log=log, transfer_source=source)
    members = [dataclasses.replace(setup, config=c) for c in configs]
    run_dirs = [Path(d) for d in run_dirs]
    existed = [rundir.open_run_dir(d, c) if primary else True for d, c in zip(run_dirs, configs)]
    managers = [loop.open_checkpoints(d, c) for d, c in zip(run_dirs, configs)]
    restored = [checkpoints.restore_newest_readable(m, setup.payload_structure(), d / "corrupt_checkpoints", log,
                                                    setup.devices.replicated) for m, d in zip(managers, run_dirs)]
    starts = {step for step, _ in restored}
    if len(starts) > 1:
        raise UserError("the runs of this seed group stopped at different steps ("
                        + ", ".join(f"seed {c.seed}: {s}" for c, (s, _) in zip(configs, restored))
                        + "); finish them one at a time (without --vmap-seeds).")
    start = starts.pop()
    payloads = [p if step else {"state": m.initial_state(log), "train_totals": empty_metrics()}
                for m, (step, p) in zip(members, restored)]
    total_steps = configs[0].train.epochs * setup.steps_per_epoch
    if start >= total_steps:
        log(f"Already complete: {', '.join(map(str, run_dirs))}")
        return [rundir.read_result(d) or loop.finish(m, d, mg, p["state"], {}, primary)
                for m, d, mg, p in zip(members, run_dirs, managers, payloads)]
    if start:
        log(f"Resuming {len(configs)} seeds from step {start}.")
    for config, run_dir, old in zip(configs, run_dirs, existed):
        if primary:
            if old:
                rundir.truncate_metrics(run_dir, start)
            rundir.record_start(run_dir, {**provenance.manifest(), "run_id": config_lib.run_id(config),
                                          "data": setup.data_manifest(), "transfer": setup.transfer_manifest(),
                                          "processes": jax.process_count(), "devices": setup.devices.size,
                                          "seed_group": [c.seed for c in configs]},
                                resumed_from=start if old else None)
    return _run(setup, members, run_dirs, managers, _stack(payloads), start, total_steps, log, progress,
                stop_at_step, primary)


def _run(setup: RunSetup, members: list[RunSetup], run_dirs, managers, payload, start, total_steps, log, progress,
         stop_at_step, primary) -> list[dict] | None:
    config, spe, k = setup.config, setup.steps_per_epoch, len(members)
    payload = setup.on_devices(payload)
    state, totals = payload["state"], payload["train_totals"]
    data_keys = jnp.stack([run_keys(m.config.seed)["data"] for m in members])
    order_fn = jax.jit(jax.vmap(epoch_permutation, in_axes=(0, None, None)), static_argnums=2)
    evaluate = jax.jit(jax.vmap(setup.evaluate, in_axes=(0, None)))

    t0 = time.perf_counter()
    order = setup.devices.replicate(order_fn(data_keys, start // spe, setup.train.size))
    drive = jax.jit(jax.vmap(loop.make_drive(setup), in_axes=(0, 0, None, 0, None)), donate_argnums=(0, 1))
    step_fn = drive.lower(state, totals, setup.train, order, 0).compile()
    compile_seconds = time.perf_counter() - t0
    log(f"Compiled the train step of {k} seeds in {compile_seconds:.1f} s.")

    writers = [SummaryWriter(str(d / "tensorboard"), purge_step=start + 1 if (d / "tensorboard").exists() else None,
                             write_to_disk=primary) for d in run_dirs]
    bar = tqdm(total=total_steps, initial=start, unit="step", disable=not progress, dynamic_ncols=True)
    rates, mark, mark_step = [], time.perf_counter(), start
    try:
        with loop.signals_to_flag() as received:
            for step in range(start, total_steps):
                epoch, index = divmod(step, spe)
                if index == 0 and step != start:
                    order = setup.devices.replicate(order_fn(data_keys, epoch, setup.train.size))
                state, totals = step_fn(state, totals, setup.train, order, index)
                done = step + 1
                end_of_epoch = done % spe == 0
                if done % config.train.log_every_steps == 0 or end_of_epoch:
                    host = jax.device_get(totals)  # waits for the finished steps
                    now = time.perf_counter()
                    rates.append((done - mark_step) * config.train.batch_size / (now - mark))  # per seed
                    tests = _test_metrics(evaluate, state, setup) if end_of_epoch else None
                    records = [loop.log_record(m, _member(host, i), done, rates[-1], mg.latest_step(),
                                               lambda i=i: tests[i], bar if i == 0 else None)
                               for i, (m, mg) in enumerate(zip(members, managers))]
                    mark, mark_step = now, done
                    for run_dir, writer, record in zip(run_dirs, writers, records):
                        if primary:
                            rundir.append_metrics(run_dir, record)
                        for key, value in record.items():
                            if key != "step":
                                writer.add_scalar(key.replace("_", "/", 1), value, done)
                    if end_of_epoch:
                        totals = setup.on_devices(_stack([empty_metrics()] * k))
                        _save_all(managers, done, state, totals, records)
                        mark = time.perf_counter()
                if done % config.checkpoint.every_steps == 0 and not end_of_epoch:
                    _save_all(managers, done, state, totals)
                    mark = time.perf_counter()
                if loop.stop_requested(received, done, config.train.log_every_steps):
                    _save_all(managers, done, state, totals)
                    raise Interrupted(received[0] if received else signal.SIGTERM, done)
                if done == stop_at_step:
                    return None
    finally:
        bar.close()
        for writer in writers:
            writer.close()
    loop_seconds = time.perf_counter() - t0 - compile_seconds
    timing = {"compile_seconds": compile_seconds, "loop_seconds": loop_seconds,
              "images_per_sec_median": statistics.median(rates) if rates else None, "first_step": start,
              "seeds_in_program": k}
    return [loop.finish(m, d, mg, _member(state, i), timing, primary)
            for i, (m, d, mg) in enumerate(zip(members, run_dirs, managers))]


def _test_metrics(evaluate, state, setup: RunSetup) -> list[dict[str, float]]:
    """Test loss and accuracies of every seed, evaluated together."""
    sums = jax.device_get(evaluate(state, setup.test))
    if any(int(c) != setup.test.size for c in sums["count"]):
        raise RuntimeError(f"evaluation counted {sums['count']} of {setup.test.size} test examples")
    out = []
    for i in range(len(sums["count"])):
        metrics = metric_means(_member(sums, i))
        out.append({"eval_loss": metrics["loss"], "eval_accuracy": metrics["accuracy"], "eval_top5": metrics["top5"]})
    return out


def _save_all(managers, done: int, state, totals, records: list[dict] | None = None) -> None:
    for i, manager in enumerate(managers):
        metrics = ({k: records[i][k] for k in ("eval_loss", "eval_accuracy", "eval_top5")} if records else None)
        loop.save_checked(manager, done, _member(state, i), _member(totals, i), metrics)
