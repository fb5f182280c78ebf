"""Who is running a run: an exclusive `flock` on the run directory's lock file.

The kernel drops the lock when its holder dies (crash, kill -9, node loss of a local file system), so
a crashed run can be claimed again without anyone cleaning up. `claim.json` says who holds it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import platform
from collections.abc import Iterator
from pathlib import Path

from cnn_jax.files import write_json_atomic

LOCK, HOLDER, FAILURE = ".claim.lock", "claim.json", "failure.json"


@contextlib.contextmanager
def claim(run_dir: Path) -> Iterator[bool]:
    """Hold the run for the duration of the block; yields False (holding nothing) if someone else has it.
    Folders the claim had to create are removed again if nothing was written into them."""
    run_dir = Path(run_dir)
    created = [d for d in (run_dir, *run_dir.parents) if not d.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        write_json_atomic(run_dir / HOLDER, _holder())
        try:
            yield True
        finally:
            (run_dir / HOLDER).unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
        _remove_if_unused(run_dir, created)


@contextlib.contextmanager
def claim_as_primary(run_dir: Path) -> Iterator[bool]:
    """`claim` for a run trained by several processes: process 0 holds the lock, all learn whether it got it."""
    from cnn_jax.train import hosts

    if hosts.is_primary():
        with claim(run_dir) as held:
            yield hosts.primary_says(held)
    else:
        yield hosts.primary_says(False)


def _remove_if_unused(run_dir: Path, created: list[Path]) -> None:
    if not created or any(p.name != LOCK for p in run_dir.iterdir()):
        return
    (run_dir / LOCK).unlink(missing_ok=True)
    for folder in created:  # deepest first
        try:
            folder.rmdir()
        except OSError:  # another process wrote into it meanwhile
            return


def is_held(run_dir: Path) -> bool:
    """True while a live process holds the run."""
    lock = Path(run_dir) / LOCK
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def holder(run_dir: Path) -> dict | None:
    path = Path(run_dir) / HOLDER
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def record_failure(run_dir: Path, exit_code: int, message: str) -> None:
    write_json_atomic(Path(run_dir) / FAILURE, {"exit_code": exit_code, "message": message, "at": _now(), **_holder()})


def read_failure(run_dir: Path) -> dict | None:
    path = Path(run_dir) / FAILURE
    return json.loads(path.read_text()) if path.exists() else None


def clear_failure(run_dir: Path) -> None:
    (Path(run_dir) / FAILURE).unlink(missing_ok=True)


def _holder() -> dict:
    slurm = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return {
        "host": platform.node(),
        "pid": os.getpid(),
        "since": _now(),
        "slurm_job": f"{slurm}_{task}" if slurm and task else slurm,
    }


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
