"""The local backend: run a sweep's unfinished runs as child processes, `jobs` at a time.

Each child is `cnn-jax run-task ... --index I`, the same command a SLURM array task runs; it claims its
run, so two launchers on one sweep never train the same run at once. With several GPUs, each slot is
pinned to one device. SIGINT/SIGTERM are passed on to the children, which checkpoint and stop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cnn_jax import rundir
from cnn_jax.errors import SweepStopped
from cnn_jax.sweep.plan import Plan, Run
from cnn_jax.sweep.task import EXIT_HELD
from cnn_jax.sweep.tuned import DIVERGED

POLL_SECONDS = 0.5
LOG = "train.log"


def task_command(plan: Plan, runs_root: Path, extra_args: Sequence[str], vmap_seeds: int = 1) -> list[str]:
    """The argv that runs one run of `plan`, or one group of `vmap_seeds` seeds (the caller appends `--index I`)."""
    group = ["--vmap-seeds", str(vmap_seeds)] if vmap_seeds > 1 else []
    return [
        sys.executable,
        "-m",
        "cnn_jax.cli",
        "run-task",
        plan.spec,
        "--runs-root",
        str(runs_root),
        *group,
        *extra_args,
    ]


def gpu_ids() -> list[str]:
    """The GPUs this process may use: $CUDA_VISIBLE_DEVICES, else those nvidia-smi lists, else none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()]
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.split() if out.returncode == 0 else []


def slot_env(slot: int, gpus: Sequence[str]) -> dict[str, str]:
    """Environment of a child in `slot`: one GPU of its own when there are GPUs."""
    env = dict(os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    return env


@dataclass
class _Child:
    run: Run
    slot: int
    process: subprocess.Popen
    started: float


def run_local(
    plan: Plan, runs_root: Path, runs: Sequence[Run], command: Sequence[str], jobs: int, log=print
) -> dict[str, list[Run]]:
    """Run `runs` (each claimed by its child); returns them grouped as finished / failed / held / stopped."""
    gpus = gpu_ids()
    queue, active, outcome = list(runs), [], {"finished": [], "failed": [], "held": [], "stopped": []}
    received: list[int] = []
    forwarded = False
    previous = {
        s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while queue or active:
            while queue and len(active) < jobs and not received:
                slot = min(set(range(jobs)) - {c.slot for c in active})
                active.append(_start(plan, runs_root, queue.pop(0), slot, command, gpus))
            if received and not forwarded:
                outcome["stopped"] += queue
                queue, forwarded = [], True
                for child in active:
                    child.process.send_signal(received[0])
            time.sleep(POLL_SECONDS)
            for child in [c for c in active if c.process.poll() is not None]:
                active.remove(child)
                kind = _outcome(child.process.returncode)
                outcome[kind].append(child.run)
                done = sum(len(v) for v in outcome.values())
                log(f"[{done}/{len(runs)}] {child.run.name}: {_describe(plan, runs_root, child, kind)}")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        raise SweepStopped(received[0])
    return outcome


def _start(plan: Plan, runs_root: Path, run: Run, slot: int, command: Sequence[str], gpus: Sequence[str]) -> _Child:
    run_dir = plan.run_dir(runs_root, run)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOG, "ab") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [*command, "--index", str(run.index)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=slot_env(slot, gpus),
            start_new_session=True,
        )
    return _Child(run, slot, process, time.perf_counter())


def _outcome(code: int) -> str:
    if code == 0:
        return "finished"
    if code == EXIT_HELD:
        return "held"
    return "stopped" if code < 0 or code >= 128 else "failed"  # < 0: killed by a signal


def _describe(plan: Plan, runs_root: Path, child: _Child, kind: str) -> str:
    seconds = time.perf_counter() - child.started
    run_dir = plan.run_dir(runs_root, child.run)
    if kind == "finished":
        result = rundir.read_result(run_dir)
        return f"done, {rundir.result_summary(result) + ', ' if result else ''}{seconds:.0f} s"
    if kind == "held":
        return "running in another launcher; skipped"
    code = child.process.returncode
    tail = _tail(run_dir / LOG)
    if child.run.phase == "tune" and code == DIVERGED:
        return f"diverged after {seconds:.0f} s ({tail}): this setting is not chosen"
    state = "stopped" if kind == "stopped" else "FAILED"
    return f"{state} (exit {code}) after {seconds:.0f} s: {tail} [log: {run_dir / LOG}]"


def _tail(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return ""
    return lines[-1][:200] if lines else ""
