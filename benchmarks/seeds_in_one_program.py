"""Throughput per seed: K seeds in one vmapped program vs K separate runs at once, on this machine.

    python benchmarks/seeds_in_one_program.py [--experiment experiments/fashion_mnist_cnn.py] [--ks 1,2,4,8]

For each K: compile time and steady-state images/s per seed of `train_seed_group`'s vmapped step
(K seeds, one program), and of K separate processes each training one seed with the ordinary step,
started together and timed over the same window (what `--jobs K` does). Real data, the experiment's
config (batch size included); the median over repeats. Writes a JSON next to the printed table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from cnn_jax import config as config_lib
from cnn_jax import provenance
from cnn_jax.data import catalog
from cnn_jax.data.pipeline import epoch_permutation
from cnn_jax.train.loop import make_drive
from cnn_jax.train.setup import DataPaths, build
from cnn_jax.train.state import create_train_state, run_keys
from cnn_jax.train.steps import empty_metrics


def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def prepare(spec: str, k: int):
    """(compiled step, its arguments, seconds to compile) for K seeds; K = 1 is the ordinary unbatched step."""
    config = config_lib.load_experiment(spec)
    setup = build(
        config, DataPaths(catalog.default_data_dir(), tuple(catalog.default_search_roots())), log=lambda *a: None
    )
    seeds = range(k)
    states = [create_train_state(setup.model, setup.tx, setup.data.dataset.image_shape, s) for s in seeds]
    orders = [epoch_permutation(run_keys(s)["data"], 0, setup.train.size) for s in seeds]
    if k == 1:
        step = jax.jit(make_drive(setup), donate_argnums=(0, 1))
        args = [states[0], empty_metrics(), setup.train, orders[0]]
    else:
        step = jax.jit(jax.vmap(make_drive(setup), in_axes=(0, 0, None, 0, None)), donate_argnums=(0, 1))
        args = [_stack(states), _stack([empty_metrics()] * k), setup.train, jnp.stack(orders)]
    t0 = time.perf_counter()
    compiled = step.lower(*args, 0).compile()
    return compiled, args, time.perf_counter() - t0, config.train.batch_size, setup.steps_per_epoch


def steady_rate(compiled, args, batch_size: int, steps_per_epoch: int, steps: int, repeats: int) -> float:
    """Median images/s of one seed over `repeats` windows of `steps` steps, after one warm-up step."""
    state, totals, split, order = args
    state, totals = compiled(state, totals, split, order, 0)
    jax.block_until_ready(totals)
    rates, index = [], 1
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            state, totals = compiled(state, totals, split, order, index % steps_per_epoch)
            index += 1
        jax.block_until_ready(totals)
        rates.append(steps * batch_size / (time.perf_counter() - t0))
    return statistics.median(rates)


def worker(spec: str, steps: int, repeats: int, go: Path) -> None:
    """One separate run: compile, say so, wait for the go file, time, print the rate as JSON."""
    compiled, args, compile_s, batch, spe = prepare(spec, 1)
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.05)
    print(
        json.dumps({"rate": steady_rate(compiled, args, batch, spe, steps, repeats), "compile_s": compile_s}),
        flush=True,
    )


def separate_runs(spec: str, k: int, steps: int, repeats: int) -> dict:
    """K processes, one seed each, timed together: images/s per seed (mean over the K) and compile time."""
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        command = [
            sys.executable,
            __file__,
            "--experiment",
            spec,
            "--steps",
            str(steps),
            "--repeats",
            str(repeats),
            "--worker",
            str(go),
        ]
        workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(k)]
        for w in workers:
            if w.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker failed before compiling; run it alone to see why")
        go.touch()
        reports = [json.loads(w.communicate()[0].strip().splitlines()[-1]) for w in workers]
    return {
        "per_seed": statistics.mean(r["rate"] for r in reports),
        "compile_s": statistics.median(r["compile_s"] for r in reports),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="experiments/fashion_mnist_cnn.py")
    parser.add_argument("--ks", default="1,2,4,8", help="numbers of seeds, comma-separated")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed window")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows; the median is reported")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/seeds_in_one_program.json"))
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.experiment, args.steps, args.repeats, args.worker)

    rows = []
    for k in (int(x) for x in args.ks.split(",")):
        compiled, step_args, compile_s, batch, spe = prepare(args.experiment, k)
        together = steady_rate(compiled, step_args, batch, spe, args.steps, args.repeats)
        del compiled, step_args
        apart = separate_runs(args.experiment, k, args.steps, args.repeats)
        rows.append(
            {
                "k": k,
                "vmapped_per_seed": together,
                "vmapped_total": together * k,
                "vmapped_compile_s": compile_s,
                "separate_per_seed": apart["per_seed"],
                "separate_compile_s": apart["compile_s"],
                "ratio": together / apart["per_seed"],
            }
        )
        print(
            f"K={k}: one program {together:.0f} img/s per seed (compile {compile_s:.1f} s); "
            f"{k} separate runs {apart['per_seed']:.0f} img/s per seed",
            flush=True,
        )

    print(f"\n{args.experiment}, batch {batch}, {os.cpu_count()} CPU cores, {jax.devices()[0].platform}\n")
    print(
        "| K | one program: img/s per seed | total img/s | compile (s) | K separate runs at once: img/s per seed "
        "| compile (s) | ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['k']} | {r['vmapped_per_seed']:.0f} | {r['vmapped_total']:.0f} | {r['vmapped_compile_s']:.1f} | "
            f"{r['separate_per_seed']:.0f} | {r['separate_compile_s']:.1f} | {r['ratio']:.2f}x |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "experiment": args.experiment,
                "batch_size": batch,
                "steps": args.steps,
                "repeats": args.repeats,
                "rows": rows,
                "provenance": provenance.manifest(),
            },
            indent=1,
        )
    )
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
