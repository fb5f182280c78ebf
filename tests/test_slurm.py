"""The SLURM backend: the sbatch script it renders, submit's errors, and job arrays on a real local cluster."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnn_jax.errors import UserError
from cnn_jax.sweep.slurm import SlurmOptions, compress_indices, render_script, submit, task_states, time_limit_s

pytest_plugins = ["slurm_cluster"]  # the slurm_cluster fixture
pytestmark = pytest.mark.xdist_group("slurm")  # one worker starts the session's cluster (launch.sh runs pytest-xdist)

FINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}

# Stands in for `cnn_jax.cli run-task`: argv is OUT_DIR MODE [...] --index I. Each attempt appends a
# line to OUT_DIR/I.txt. MODE ok: exit 0. stop-once: exit 143 on the first attempt (as after a
# checkpoint), 0 on the next. wait-signal: on the first attempt wait for SIGTERM, then exit 143.
TASK = r"""
import os, pathlib, signal, sys, time
out, mode, index = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[-1]
record = out / f"{index}.txt"
attempt = len(record.read_text().splitlines()) + 1 if record.exists() else 1
received = []
signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
with record.open("a") as f:
    f.write(f"attempt {attempt} restarts={os.environ.get('SLURM_RESTART_COUNT', 0)} argv={sys.argv[1:]}\n")
print(f"task {index} attempt {attempt}", flush=True)
if mode == "stop-once" and attempt == 1:
    sys.exit(143)
if mode == "wait-signal" and attempt == 1:
    deadline = time.monotonic() + 150
    while not received and time.monotonic() < deadline:
        time.sleep(0.1)
    print(f"task {index} received {received}", flush=True)
    sys.exit(143 if received else 1)
"""


def task_command(out: Path, mode: str) -> list[str]:
    return [sys.executable, "-c", TASK, str(out), mode, "an argument with spaces"]


# --- the rendered script -------------------------------------------------------------------------


def sbatch_lines(script: str) -> dict[str, str]:
    options = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH --"):
            name, _, value = line.removeprefix("#SBATCH ").partition("=")
            options[name] = value
    return options


@pytest.mark.parametrize(
    "indices, expected",
    [
        ([0, 1, 2, 5, 7, 8], "0-2,5,7-8"),
        ([3], "3"),
        ([5, 3, 4, 4], "3-5"),
        ([0, 2, 3], "0,2-3"),
        ([9, 1], "1,9"),
    ],
)
def test_compress_indices(indices, expected):
    assert compress_indices(indices) == expected


def test_negative_index_is_refused():
    with pytest.raises(UserError, match=">= 0"):
        compress_indices([-1, 0])


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("30", 1800),
        ("2:30", 150),
        ("02:00:00", 7200),
        ("1-12", 129600),
        ("1-0:30", 88200),
        ("1-00:00:10", 86410),
        ("UNLIMITED", None),
    ],
)
def test_time_limit_s(text, seconds):
    assert time_limit_s(text) == seconds


def test_bad_time_limit_is_refused():
    with pytest.raises(UserError, match="SLURM format"):
        time_limit_s("2h")


def test_array_list_throttle_and_logs(tmp_path):
    script = render_script([8, 0, 1, 2, 5, 7], ["python"], tmp_path / "logs", tmp_path, SlurmOptions(max_parallel=4))
    options = sbatch_lines(script)
    assert options["--array"] == "0-2,5,7-8%4"
    assert options["--output"] == options["--error"] == f"{tmp_path}/logs/%A_%a.out"
    assert options["--chdir"] == str(tmp_path)
    assert {"--requeue", "--open-mode"} <= set(options) and options["--open-mode"] == "append"
    assert sbatch_lines(render_script([1], ["python"], tmp_path, tmp_path, SlurmOptions()))["--array"] == "1"


def test_paths_with_blanks_and_percent_signs(tmp_path):
    script = render_script([0], ["python"], tmp_path / "log 50%", tmp_path / "work dir", SlurmOptions())
    options = sbatch_lines(script)
    assert options["--output"] == f'"{tmp_path}/log 50%%/%A_%a.out"'
    assert options["--chdir"] == f'"{tmp_path}/work dir"'
    assert f"cd '{tmp_path}/work dir' || exit 1" in script


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = sbatch_lines(render_script([0], ["python"], Path("logs"), Path("."), SlurmOptions()))
    assert options["--output"] == f"{tmp_path}/logs/%A_%a.out"
    assert options["--chdir"] == str(tmp_path)


def test_task_command_is_quoted(tmp_path):
    command = ["python", "-m", "cnn_jax.cli", "run-task", "exp 1.py:small", "--set", "a='b c'", "$HOME", "x;y"]
    script = render_script([0], command, tmp_path, tmp_path, SlurmOptions())
    line = next(line for line in script.splitlines() if line.startswith("python "))
    assert shlex.split(line) == [*command, "--index", "$SLURM_ARRAY_TASK_ID", "&"]
    assert line.endswith('--index "$SLURM_ARRAY_TASK_ID" &')


def test_optional_flags_only_when_set(tmp_path):
    plain = sbatch_lines(render_script([0], ["python"], tmp_path, tmp_path, SlurmOptions()))
    assert not {"--partition", "--gres", "--cpus-per-task", "--mem", "--time", "--signal"} & set(plain)
    assert "%" not in plain["--array"]
    options = SlurmOptions(
        partition="gpu", gpus_per_task=2, cpus_per_task=8, time="02:00:00", mem="16G", job_name="sweep a"
    )
    full = sbatch_lines(render_script([0], ["python"], tmp_path, tmp_path, options))
    assert full["--partition"] == "gpu" and full["--gres"] == "gpu:2" and full["--cpus-per-task"] == "8"
    assert full["--mem"] == "16G" and full["--time"] == "02:00:00" and full["--job-name"] == '"sweep a"'
    assert full["--signal"] == "B:TERM@120"  # B: the batch shell (which runs the task) gets the signal


def test_several_tasks_per_run_become_one_srun_step(tmp_path):
    script = render_script([0], ["python", "task"], tmp_path, tmp_path, SlurmOptions(gpus_per_task=1, tasks_per_run=4))
    options = sbatch_lines(script)
    assert options["--ntasks"] == "4" and options["--gpus-per-task"] == "1" and "--gres" not in options
    assert 'srun --ntasks=4 --kill-on-bad-exit=1 python task --index "$SLURM_ARRAY_TASK_ID" &' in script
    assert "srun" not in render_script([0], ["python"], tmp_path, tmp_path, SlurmOptions())
    with pytest.raises(UserError, match="tasks per run must be >= 1, got 0"):
        render_script([0], ["python"], tmp_path, tmp_path, SlurmOptions(tasks_per_run=0))


def test_signal_lead_is_at_most_half_the_time_limit(tmp_path):
    """Else a short limit would stop every attempt before it makes progress, and requeue it forever."""
    options = sbatch_lines(render_script([0], ["python"], tmp_path, tmp_path, SlurmOptions(time="2")))
    assert options["--signal"] == "B:TERM@60"


def test_requeue_logic_is_in_the_script(tmp_path):
    script = render_script([0], ["python"], tmp_path, tmp_path, SlurmOptions())
    assert 'scontrol requeue "$task"' in script and 'task="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"' in script
    assert "143|130)" in script and "75)" in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # valid bash


def test_nothing_to_submit(tmp_path):
    with pytest.raises(UserError, match="nothing to submit"):
        render_script([], ["python"], tmp_path, tmp_path, SlurmOptions())


def test_bad_throttle(tmp_path):
    with pytest.raises(UserError, match="max_parallel"):
        render_script([0], ["python"], tmp_path, tmp_path, SlurmOptions(max_parallel=0))


def fake_tools(bin_dir: Path, **scripts: str) -> str:
    """Write executable shell scripts named like SLURM tools; returns a PATH holding only them and bash's."""
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin"


@pytest.mark.parametrize(
    "exit_code, state, expected_code, requeued",
    [
        (0, "RUNNING", 0, False),
        (2, "RUNNING", 2, False),
        (3, "RUNNING", 3, False),
        (75, "RUNNING", 0, False),  # held by another live process: success
        (143, "RUNNING", 0, True),  # SIGTERM ahead of the time limit: requeue
        (130, "SIGNALING", 0, True),
        (143, "COMPLETING", 143, False),  # scancel / preemption: the job is ending, SLURM decides
    ],
)
def test_script_exit_codes(tmp_path, exit_code, state, expected_code, requeued):
    """The script's exit-code handling, run by bash with stand-ins for squeue and scontrol."""
    calls = tmp_path / "calls"
    path = fake_tools(tmp_path / "bin", squeue=f"echo {state}", scontrol=f'echo "$@" >> {calls}')
    script = render_script([4], ["bash", "-c", f"exit {exit_code}", "run-task"], tmp_path, tmp_path, SlurmOptions())
    env = {"PATH": path, "SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "4", "SLURM_JOB_ID": "9"}
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == expected_code, done.stdout + done.stderr
    assert (calls.read_text() if calls.exists() else "") == ("requeue 7_4\n" if requeued else "")


def test_script_passes_sigterm_to_the_task(tmp_path):
    """SLURM signals only the batch shell (--signal=B:...); the task must get it and its code must count."""
    calls = tmp_path / "calls"
    path = fake_tools(tmp_path / "bin", squeue="echo RUNNING", scontrol=f'echo "$@" >> {calls}')
    script = render_script([1], task_command(tmp_path, "wait-signal"), tmp_path, tmp_path, SlurmOptions())
    env = {**os.environ, "PATH": path, "SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "1", "SLURM_JOB_ID": "8"}
    shell = subprocess.Popen(
        ["bash", "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "1.txt").exists() and time.monotonic() < deadline:  # its SIGTERM handler is set
        time.sleep(0.05)
    shell.terminate()
    output, _ = shell.communicate(timeout=30)
    assert shell.returncode == 0, output
    assert "received [15]" in output and calls.read_text() == "requeue 7_1\n"


# --- submit --------------------------------------------------------------------------------------


def test_submit_without_sbatch(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="install the SLURM client or use --backend local"):
        submit("#!/bin/bash\n", tmp_path / "job.sh")


def test_submit_reports_sbatch_errors_on_one_line(tmp_path, monkeypatch):
    body = (
        'echo "sbatch: error: invalid partition specified: gpu" >&2\n'
        'echo "sbatch: error: Batch job submission failed: Invalid partition name specified" >&2\nexit 1'
    )
    monkeypatch.setenv("PATH", fake_tools(tmp_path / "bin", sbatch=body))
    with pytest.raises(UserError) as error:
        submit("#!/bin/bash\n", tmp_path / "job.sh")
    assert str(error.value) == (
        "sbatch failed: invalid partition specified: gpu; Batch job submission failed: Invalid partition name specified"
    )


def test_submit_writes_the_script_and_returns_the_job_id(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_tools(tmp_path / "bin", sbatch='echo "$@" > args; echo "42;cluster-a"'))
    monkeypatch.chdir(tmp_path)
    assert submit("#!/bin/bash\necho hi\n", tmp_path / "sub" / "job.sh") == "42"
    assert (tmp_path / "sub" / "job.sh").read_text() == "#!/bin/bash\necho hi\n"
    assert (tmp_path / "args").read_text().split() == ["--parsable", str(tmp_path / "sub" / "job.sh")]


# --- a real cluster ------------------------------------------------------------------------------


@pytest.fixture
def cluster(slurm_cluster, monkeypatch):
    for name, value in slurm_cluster.env.items():
        monkeypatch.setenv(name, value)
    return slurm_cluster


def launch(tmp_path: Path, indices: list[int], mode: str, **options) -> tuple[str, Path, str]:
    """Submit TASK as a job array; returns (job id, log dir, script)."""
    log_dir = tmp_path / "log dir"  # a blank in the path, as users' paths may have
    log_dir.mkdir(exist_ok=True)
    script = render_script(indices, task_command(tmp_path, mode), log_dir, tmp_path, SlurmOptions(**options))
    return submit(script, tmp_path / "job.sh"), log_dir, script


def wait_until_final(cluster, job_id: str, indices: list[int], timeout: float) -> dict[int, str]:
    """Poll squeue until every array task has a final state; fail with the queue and the logs after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = task_states(job_id)
        if set(states) == set(indices) and set(states.values()) <= FINAL_STATES:
            return states
        time.sleep(0.5)
    queue = cluster.run("squeue", "-h", "-r", "-t", "all", "-o", "%i %T %r %S").stdout
    pytest.fail(f"job {job_id} did not finish within {timeout} s; squeue:\n{queue}\n{cluster.log_tail()}")


def log_text(log_dir: Path, job_id: str, index: int) -> str:
    return (log_dir / f"{job_id}_{index}.out").read_text()


@pytest.mark.slow
def test_array_runs_exactly_the_pending_indices(cluster, tmp_path):
    job_id, log_dir, script = launch(tmp_path, [0, 2, 3], "ok", max_parallel=2)
    assert sbatch_lines(script)["--array"] == "0,2-3%2"
    assert wait_until_final(cluster, job_id, [0, 2, 3], timeout=60) == {0: "COMPLETED", 2: "COMPLETED", 3: "COMPLETED"}
    assert sorted(p.name for p in tmp_path.glob("*.txt")) == ["0.txt", "2.txt", "3.txt"]
    for index in (0, 2, 3):
        argv = [str(tmp_path), "ok", "an argument with spaces", "--index", str(index)]
        assert (tmp_path / f"{index}.txt").read_text().splitlines() == [f"attempt 1 restarts=0 argv={argv}"]
        assert f"task {index} attempt 1" in log_text(log_dir, job_id, index)
    assert sorted(p.name for p in log_dir.iterdir()) == [f"{job_id}_{i}.out" for i in (0, 2, 3)]


@pytest.mark.slow
def test_task_stopped_after_a_checkpoint_is_requeued(cluster, tmp_path):
    job_id, log_dir, _ = launch(tmp_path, [1], "stop-once")
    assert wait_until_final(cluster, job_id, [1], timeout=90) == {1: "COMPLETED"}
    attempts = (tmp_path / "1.txt").read_text().splitlines()
    assert [line.split(" argv=")[0] for line in attempts] == ["attempt 1 restarts=0", "attempt 2 restarts=1"]
    log = log_text(log_dir, job_id, 1)  # --open-mode=append: both attempts in one file
    assert log.index("task 1 attempt 1") < log.index("requeueing") < log.index("task 1 attempt 2")
    assert "attempt 1\n" in log and "attempt 2\n" in log


@pytest.mark.slow
def test_time_limit_signal_checkpoints_and_requeues(cluster, tmp_path):
    """--signal=B:TERM@lead reaches the task through the batch shell; the task exits 143 and is requeued."""
    log_dir = tmp_path / "log dir"
    log_dir.mkdir()
    script = render_script([0], task_command(tmp_path, "wait-signal"), log_dir, tmp_path, SlurmOptions(time="2"))
    # the lead is half of this 2-minute limit; 115 s brings the signal within seconds of the start
    job_id = submit(script.replace("--signal=B:TERM@60", "--signal=B:TERM@115"), tmp_path / "job.sh")
    assert wait_until_final(cluster, job_id, [0], timeout=150) == {0: "COMPLETED"}
    log = log_text(log_dir, job_id, 0)
    assert "task 0 received [15]" in log and "requeueing" in log and "task 0 attempt 2" in log


@pytest.mark.slow
def test_scancel_stops_a_task_for_good(cluster, tmp_path):
    """A task that exits 143 because the user cancelled its job is not requeued."""
    job_id, log_dir, _ = launch(tmp_path, [0], "wait-signal")
    deadline = time.monotonic() + 60
    while not (tmp_path / "0.txt").exists() and time.monotonic() < deadline:  # its SIGTERM handler is set
        time.sleep(0.2)
    assert cluster.run("scancel", job_id).returncode == 0
    assert wait_until_final(cluster, job_id, [0], timeout=60) == {0: "CANCELLED"}
    time.sleep(2)
    assert task_states(job_id) == {0: "CANCELLED"}
    log = log_text(log_dir, job_id, 0)
    assert "received [15" in log and "not requeued" in log and "attempt 2" not in log  # scancel: TERM to all


@pytest.mark.slow
def test_task_states_of_an_unknown_job(cluster):
    assert task_states("987654") == {}
