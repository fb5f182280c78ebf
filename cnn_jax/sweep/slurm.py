"""SLURM backend: one job array per sweep, one array task per run; a run stopped by a signal is requeued."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cnn_jax.errors import UserError
from cnn_jax.files import write_text_atomic

SIGNAL_LEAD_S = 120  # with a time limit, SIGTERM comes this long before it (at most half the limit)
CLIENT_TIMEOUT_S = 120  # sbatch and squeue retry for a while when the controller is unreachable


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of each array task; None (or 0 GPUs) leaves the cluster's default."""

    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int | None = None
    time: str | None = None  # SLURM format: "MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS"
    mem: str | None = None  # e.g. "16G"
    max_parallel: int | None = None  # at most this many tasks run at once (the array's %K)
    tasks_per_run: int = 1  # > 1: each run is one `srun` step of this many processes (multi-host data parallel)
    job_name: str = "cnn-jax"


def compress_indices(indices: Sequence[int]) -> str:
    """SLURM array list of the distinct indices: [0, 1, 2, 5, 7, 8] -> "0-2,5,7-8"."""
    values = sorted({int(i) for i in indices})
    if values and values[0] < 0:
        raise UserError(f"array indices must be >= 0, got {values[0]}")
    ranges: list[list[int]] = []
    for value in values:
        if ranges and value == ranges[-1][1] + 1:
            ranges[-1][1] = value
        else:
            ranges.append([value, value])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def time_limit_s(time: str) -> int | None:
    """Seconds in a SLURM time limit ("30" is minutes, "2:00:00", "1-12"); None when unlimited."""
    text = time.strip()
    if text.upper() in ("UNLIMITED", "INFINITE", "-1"):
        return None
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise UserError(f"time limit '{time}' is not in SLURM format (e.g. 30, 02:00:00, 1-12:00:00)")
    days, *fields = match.groups()
    numbers = [int(f) for f in fields if f is not None]
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = (numbers + [0, 0])[:3]
    elif len(numbers) == 3:  # HH:MM:SS
        hours, minutes, seconds = numbers
    else:  # MM, MM:SS
        hours, (minutes, seconds) = 0, (numbers + [0])[:2]
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def _sbatch_value(text: str) -> str:
    """`text` as the value of an #SBATCH option: double-quoted when it holds blanks."""
    if '"' in text or "\n" in text:
        raise UserError(f"'{text}' contains a quote or newline, which an #SBATCH line cannot hold")
    return f'"{text}"' if " " in text or "\t" in text else text


def render_script(
    indices: Sequence[int], task_command: Sequence[str], log_dir: Path, workdir: Path, options: SlurmOptions
) -> str:
    """The sbatch script of one job array: array task I runs `task_command --index I` in `workdir`.

    With `tasks_per_run` > 1 the run is an `srun` step of that many processes (see train/hosts.py).
    Exit 143/130 (stopped by a signal after a checkpoint) while the job still runs requeues the task,
    which resumes later; exit 75 (the run is held by another live process) counts as success.
    SLURM does not create `log_dir`: it must exist when the first task starts."""
    if not indices:
        raise UserError("nothing to submit: the list of runs to launch is empty")
    if options.max_parallel is not None and options.max_parallel < 1:
        raise UserError(f"max_parallel must be >= 1, got {options.max_parallel}")
    if options.tasks_per_run < 1:
        raise UserError(f"tasks per run must be >= 1, got {options.tasks_per_run}")
    several = options.tasks_per_run > 1
    workdir = Path(workdir).absolute()
    # %A_%a: array job id and task index; '%%' makes a '%' in the directory name literal
    log = _sbatch_value(str(Path(log_dir).absolute()).replace("%", "%%") + "/%A_%a.out")
    array = compress_indices(indices) + (f"%{options.max_parallel}" if options.max_parallel else "")
    sbatch = [
        f"--job-name={_sbatch_value(options.job_name)}",
        f"--array={array}",
        f"--output={log}",
        f"--error={log}",
        "--open-mode=append",
        f"--chdir={_sbatch_value(str(workdir))}",
        "--requeue",
        f"--ntasks={options.tasks_per_run}",
    ]
    if options.partition:
        sbatch.append(f"--partition={options.partition}")
    if options.gpus_per_task:  # with one task per job, per node = per task
        sbatch.append(f"--gpus-per-task={options.gpus_per_task}" if several else f"--gres=gpu:{options.gpus_per_task}")
    if options.cpus_per_task:
        sbatch.append(f"--cpus-per-task={options.cpus_per_task}")
    if options.mem:
        sbatch.append(f"--mem={options.mem}")
    if options.time:
        sbatch.append(f"--time={options.time}")
        limit = time_limit_s(options.time)
        if limit:  # B: the batch shell gets the signal; the trap below passes it on to the run
            sbatch.append(f"--signal=B:TERM@{min(SIGNAL_LEAD_S, limit // 2)}")
    header = "\n".join(f"#SBATCH {option}" for option in sbatch)
    # Several tasks: srun starts one process per task; they find each other through SLURM's environment.
    launcher = f"srun --ntasks={options.tasks_per_run} --kill-on-bad-exit=1 " if several else ""
    command = launcher + shlex.join(str(part) for part in task_command)
    return f"""\
#!/bin/bash
# Job array written by cnn_jax: array task I runs run number I of the sweep.
{header}
# A requeued task appends to the same log file, %A_%a.out.

task="${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
echo "[$(date -Is)] task $task on $(hostname), attempt $((${{SLURM_RESTART_COUNT:-0}} + 1))"
# SLURM falls back to /tmp when --chdir is missing on the node: stop rather than run there.
cd {shlex.quote(str(workdir))} || exit 1

# The run goes to the background so that this shell can pass SIGTERM/SIGINT on to it.
{command} --index "$SLURM_ARRAY_TASK_ID" &
{_EPILOGUE}"""


_EPILOGUE = """\
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM
trap 'kill -INT "$child" 2>/dev/null' INT
# A signal makes `wait` return early: wait again until the run has exited, then take its exit code.
while kill -0 "$child" 2>/dev/null; do wait "$child"; done
wait "$child"
code=$?

case "$code" in
  143|130)  # stopped by SIGTERM/SIGINT after saving a checkpoint
    # Requeue while the job still runs (the signal came ahead of the time limit): the next attempt
    # resumes. A job that is ending (scancel, preemption) is left to SLURM, so scancel stops it.
    state=$(squeue -h -j "$SLURM_JOB_ID" -o %T 2>/dev/null)
    case "$state" in
      RUNNING|SIGNALING)
        echo "[$(date -Is)] exit $code after a checkpoint: requeueing $task"
        scontrol requeue "$task" && exit 0
        ;;
      *)
        echo "[$(date -Is)] exit $code after a checkpoint while the job is ${state:-unknown}: not requeued"
        ;;
    esac
    ;;
  75)  # another live process holds this run: nothing to do here
    exit 0
    ;;
esac
exit "$code"
"""


def submit(script: str, script_path: Path) -> str:
    """Write `script` to `script_path` and submit it with sbatch; returns the job id."""
    if shutil.which("sbatch") is None:
        raise UserError("sbatch is not on PATH: install the SLURM client or use --backend local")
    write_text_atomic(Path(script_path), script)
    done = _client(["sbatch", "--parsable", str(script_path)])
    if done.returncode != 0:
        raise UserError(f"sbatch failed: {_one_line(done.stderr) or f'exit code {done.returncode}'}")
    job_id = done.stdout.strip().split(";")[0]
    if not job_id:
        raise UserError(f"sbatch printed no job id (stderr: {_one_line(done.stderr)})")
    return job_id


def task_states(job_id: str) -> dict[int, str]:
    """Array task index -> state (PENDING, RUNNING, COMPLETED, FAILED, ...) as squeue shows it.

    Finished tasks stay listed only for the cluster's MinJobAge (300 s by default); a job the
    controller no longer knows gives {}."""
    done = _client(["squeue", "-h", "-r", "-t", "all", "-j", str(job_id), "-o", "%i %T"])
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:
            return {}
        raise UserError(f"squeue failed: {_one_line(done.stderr) or f'exit code {done.returncode}'}")
    states = {}
    for line in done.stdout.splitlines():
        task, _, state = line.strip().partition(" ")
        _, _, index = task.partition("_")
        if index.isdigit():
            states[int(index)] = state
    return states


def _client(command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UserError(
            f"{command[0]} did not answer within {CLIENT_TIMEOUT_S} s: is the SLURM controller reachable?"
        ) from None


def _one_line(stderr: str) -> str:
    """Non-empty stderr lines on one line, without their "sbatch: error: " prefixes."""
    return "; ".join(re.sub(r"^\w+: error: ", "", line.strip()) for line in stderr.splitlines() if line.strip())
