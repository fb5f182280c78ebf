"""The GPU check: the device-dependent tests, the train-step benchmark against PyTorch, and a fixed-time
CIFAR-10 training, in one command that stays inside a time budget and writes one JSON.

    python benchmarks/gpu_check.py [--budget 450] [--data DIR] [--out benchmarks/results/gpu_check.json]
        [--workdir DIR] [--parts tests,bench,train] [--quick]

benchmarks/gpu_check.sh sets up the environment on a machine without internet and runs this; see there.
The parts run one after another, each in its own processes, and fail independently (a failed part is
recorded, the others still run); the JSON is rewritten after every part.

  probe  device, driver, package versions (jax, jaxlib and its CUDA plugin, torch, ...), git commit.
  tests  `pytest -m device`: the tests whose outcome depends on the device: exact resume bitwise, the
         bfloat16 step, the hand-written max-pool gradient against nn.max_pool's, seeds vmapped in one
         program against each seed alone. They need the real Fashion-MNIST IDX files in
         DATA/fashion-mnist/ (tests skip without them, and the part then counts as incomplete).
  bench  benchmarks/train_step_speed.py: seed_cnn (batch 256), ResNet-20 (256) and ResNet-50 at 224x224
         with 1000 classes (128), float32 and bfloat16, cnn_jax against PyTorch eager and torch.compile
         on the same GPU; the rows not started within the part's time are recorded as skipped.
  train  experiments/resnet_cifar10.py:full (ResNet-20, the paper's recipe, bfloat16) on the CIFAR-10
         JPEG copy (DATA/cifar10-jpeg/cifar10-jpeg.tgz, imported once into WORKDIR while the tests run),
         SHORTENED to the part's time: a 2-epoch run measures the fixed time (start, compiles) and a
         steady epoch's (training, evaluation, checkpoint), then a fresh run trains the number of epochs
         that fits, with the learning-rate steps at the same fractions of the run as the preset's
         (epochs 82 and 123 of 164). Its test accuracy is what this many epochs reach, not the paper's
         result; the JSON gives it with the epochs, images/s and wall time.

The budget (seconds, from this script's start) is shared out as the parts start: each part gets what is
left minus the reserve of the parts after it (tests at most --tests-share of the budget). `--quick`
is the reduced mode for a machine without a GPU (the test suite runs it on CPU): seed_cnn only, tiny
steps, one test that needs no data, and a training of at most 5 epochs (about 20 seconds) on 600 CIFAR-10
images.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = 1
EXPERIMENT = "experiments/resnet_cifar10.py"
PRESET = "full"
PRESET_EPOCHS = 164  # experiments/resnet_cifar10.py: the paper's 64k iterations
BOUNDARY_FRACTIONS = (82 / 164, 123 / 164)  # its learning-rate steps, as fractions of the run
CALIBRATION_EPOCHS = 2  # the second epoch is a steady one: no compile in it
EPOCH_LINE = re.compile(r"^epoch (\d+)/\d+:")  # what `cnn-jax train --no-progress` prints at each epoch's end
CIFAR_ARCHIVE = Path("cifar10-jpeg") / "cifar10-jpeg.tgz"
FASHION = "fashion-mnist"
QUICK_TEST = "tests/test_models.py::test_tiled_max_pool_gradient_under_vmap_and_in_bfloat16"
# the files holding tests marked `device` (collecting only these: other test files import optional packages)
DEVICE_TEST_FILES = (
    "tests/test_models.py",
    "tests/test_mixed_precision.py",
    "tests/test_training.py",
    "tests/test_seed_group.py",
)
QUICK_DATASET = "cifar10_quick"  # a 50 + 10 images per class cut of the JPEG copy, for --quick
CLI = "import sys; from cnn_jax.cli import main; sys.exit(main())"
PACKAGES = (
    "cnn_jax",
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda12-pjrt",
    "jax-cuda13-plugin",
    "jax-cuda13-pjrt",
    "flax",
    "optax",
    "orbax-checkpoint",
    "tensorflow-datasets",
    "grain",
    "array-record",
    "numpy",
    "torch",
    "torchvision",
    "triton",
    "keras",
    "pytest",
)
OUTCOME = re.compile(r"^(tests/\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")

# Full-mode settings of each part; --quick replaces them (QUICK).
FULL = {
    "reserve": {"bench": 190.0, "train": 150.0},  # seconds kept for the parts after one that starts
    "import_before_bench": True,  # the CIFAR-10 import must not share the CPU with the measurements
    "max_epochs": PRESET_EPOCHS,
    "bench_args": [
        "--models",
        "seed_cnn,resnet20,resnet50",
        "--impls",
        "project,torch,torch_compile",
        "--variant",
        "default",
        "--dtype",
        "float32,bfloat16",
        "--batch-size",
        "256,resnet50=128",
        "--steps",
        "10",
        "--repeats",
        "5",
        "--warmup",
        "3",
        "--epoch-images",
        "0",
        "--matmul-size",
        "8192",
        "--order",
        "impl",
    ],
    "train_overrides": [],
}
QUICK = {
    "reserve": {"bench": 22.0, "train": 32.0},
    "max_epochs": 5,
    "import_before_bench": False,
    "images_per_class": {"train": 50, "test": 10},
    "bench_args": [
        "--models",
        "seed_cnn",
        "--impls",
        "project,torch",
        "--variant",
        "default",
        "--dtype",
        "float32,bfloat16",
        "--batch-size",
        "32",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "1",
        "--epoch-images",
        "0",
        "--matmul-size",
        "256",
        "--order",
        "impl",
    ],
    "train_overrides": [
        f"--config.dataset.name={QUICK_DATASET}",
        "--config.dataset.eval_subset=50",
        "--config.train.log_every_steps=5",
    ],
}


# ----------------------------------------------------------------------------- helpers


def now() -> float:
    return time.monotonic()


def run(command: list[str], timeout: float | None, env: dict | None = None, cwd: Path = ROOT) -> dict:
    """Run `command` in its own process group: {'returncode', 'stdout', 'stderr', 'lines', 'seconds', 'timed_out'};
    'lines' are the stdout lines with the seconds since the start at which each arrived. At `timeout` the group
    gets SIGTERM (a training run saves its step and exits), then SIGKILL 10 s later."""
    t0 = now()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    lines: list[tuple[float, str]] = []
    errors: list[str] = []

    def pump(stream, stamped: bool) -> None:
        for line in stream:
            if stamped:
                lines.append((now() - t0, line.rstrip("\n")))
            else:
                errors.append(line)

    readers = [threading.Thread(target=pump, args=(process.stdout, True), daemon=True)]
    readers.append(threading.Thread(target=pump, args=(process.stderr, False), daemon=True))
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        process.wait(timeout=None if timeout is None else max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        timed_out = True
        stop_group(process)
    except BaseException:
        stop_group(process)
        raise
    for reader in readers:
        reader.join(timeout=10)
    return {
        "returncode": process.returncode,
        "stdout": "\n".join(text for _, text in lines),
        "stderr": "".join(errors),
        "lines": lines,
        "seconds": now() - t0,
        "timed_out": timed_out,
    }


def stop_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the process group, SIGKILL after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def default_data_dir() -> Path | None:
    """$CNN_JAX_TEST_DATA, ../shared/data beside the checkout, or .gpu_data in it: the first that exists."""
    candidates = [os.environ.get("CNN_JAX_TEST_DATA"), ROOT.parent / "shared" / "data", ROOT / ".gpu_data"]
    return next((Path(c) for c in candidates if c and Path(c).is_dir()), None)


# ----------------------------------------------------------------------------- probe

PROBE_CODE = r"""
import importlib.metadata, json, os, platform, subprocess, sys
out = {"python": platform.python_version(), "executable": sys.executable, "cpu_count": os.cpu_count()}
try:
    out["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except Exception:
    out["cpu"] = platform.processor()
versions = {}
for name in PACKAGES:
    try:
        versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pass
out["versions"] = versions
import cnn_jax  # first: it sets its XLA flags before JAX starts a backend
import jax
from cnn_jax import provenance, tuning
devices = jax.devices()
out["jax"] = {"backend": jax.default_backend(), "devices": [f"{d.platform}: {d.device_kind}" for d in devices]}
out["tuning"] = tuning.describe()
out["git"] = provenance.git_state()
try:
    import torch
    cuda = torch.cuda.is_available()
    out["torch"] = {
        "cuda_available": cuda,
        "device": torch.cuda.get_device_name() if cuda else None,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
    }
except ImportError:
    out["torch"] = None
try:
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=30,
    )
    out["nvidia_smi"] = smi.stdout.strip() if smi.returncode == 0 else None
except (OSError, subprocess.TimeoutExpired):
    out["nvidia_smi"] = None
print("PROBE " + json.dumps(out))
"""


def probe(env: dict, timeout: float) -> dict:
    """Versions and devices, from a fresh process (this one never imports JAX or torch)."""
    code = PROBE_CODE.replace("PACKAGES", repr(PACKAGES))
    done = run([sys.executable, "-c", code], timeout, {**env, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"})
    lines = [line[6:] for line in done["stdout"].splitlines() if line.startswith("PROBE ")]
    if done["returncode"] != 0 or not lines:
        raise RuntimeError(f"the probe failed (exit {done['returncode']}): {tail(done['stderr'], 8)}")
    return json.loads(lines[-1])


def probe_with_fallback(env: dict, timeout: float) -> tuple[dict, str | None]:
    """The probe; if JAX aborts on cnn_jax's CPU XLA flag (a jaxlib that lacks it), again with CNN_JAX_PLAIN=1,
    which every later part then inherits: (probe result, the reason for the fallback or None)."""
    try:
        return probe(env, timeout), None
    except RuntimeError as error:
        if "flag" not in str(error).lower() or env.get("CNN_JAX_PLAIN"):
            raise
        env["CNN_JAX_PLAIN"] = "1"
        return probe(env, timeout), f"CNN_JAX_PLAIN=1 set for every part: {error}"


# ----------------------------------------------------------------------------- tests


def tests_part(opts, env: dict, data: Path | None, budget: float) -> dict:
    """pytest on the `device` marker (--quick: one test that needs no data); per-test outcomes."""
    selection = [QUICK_TEST] if opts.quick else ["-m", "device", *DEVICE_TEST_FILES]
    junit = opts.workdir / "tests_junit.xml"
    command = [sys.executable, "-m", "pytest", *selection, "-v", "-p", "no:cacheprovider", f"--junitxml={junit}"]
    test_env = dict(env)
    if data is not None:
        test_env["CNN_JAX_TEST_DATA"] = str(data)
    done = run(command, budget, test_env)
    outcomes = {}
    for line in done["stdout"].splitlines():
        match = OUTCOME.match(line)
        if match:
            outcomes[match.group(1)] = match.group(2).lower()
    tests = [{"id": k, "outcome": v} for k, v in outcomes.items()]
    details = junit_details(junit) if junit.exists() and not done["timed_out"] else {}
    for test in tests:
        test.update(details.get(test["id"], {}))
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    if done["timed_out"]:
        status = "incomplete"
    elif counts["failed"] or counts["error"] or done["returncode"] not in (0, 1, 5) or not tests:
        status = "failed"
    elif counts["skipped"]:
        status = "incomplete"
    else:
        status = "passed" if done["returncode"] == 0 else "failed"
    return {
        "status": status,
        "command": " ".join(command[1:]),
        "data": str(data) if data else None,
        "exit_code": done["returncode"],
        "timed_out": done["timed_out"],
        "counts": counts,
        "tests": tests,
        "output_tail": tail(done["stdout"], 15 if status == "passed" else 60),
    }


def junit_details(path: Path) -> dict[str, dict]:
    """{node id: {'seconds', 'message'}} from pytest's JUnit XML."""
    import xml.etree.ElementTree as ET

    details = {}
    for case in ET.parse(path).iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        node = f"{module}.py::{case.get('name')}"
        info = {"seconds": float(case.get("time", 0))}
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                info["message"] = (found.get("message") or found.text or "")[:2000]
        details[node] = info
    return details


# ----------------------------------------------------------------------------- bench


def bench_part(opts, env: dict, settings: dict, budget: float) -> dict:
    """benchmarks/train_step_speed.py under its own --budget; its table, rows and JSON."""
    out = opts.workdir / "train_step_speed.json"
    out.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "train_step_speed.py"),
        *settings["bench_args"],
        "--budget",
        f"{max(budget - min(15.0, max(3.0, 0.1 * budget)), 1.0):.0f}",  # room for the driver's table and JSON
        "--out",
        str(out),
    ]
    done = run(command, budget + 30.0, env)
    if not out.exists():
        raise RuntimeError(f"train_step_speed.py wrote no JSON (exit {done['returncode']}): {tail(done['stderr'], 8)}")
    result = json.loads(out.read_text())
    rows = []
    for model, info in result["models"].items():
        for key, row in info["rows"].items():
            impl, _, dtype = key.partition("@")
            torch_row = info["rows"].get("torch" + (f"@{dtype}" if dtype else ""), {})
            entry = {"model": model, "impl": impl.replace("project:default", "project"), "dtype": dtype or "float32"}
            if "error" in row:
                entry["error"] = row["error"]
            else:
                entry.update(
                    {
                        "train_img_s": row["train_img_s"],
                        "eval_img_s": row["eval_img_s"],
                        "ratio_to_torch_eager": row["train_img_s"] / torch_row["train_img_s"]
                        if torch_row.get("train_img_s")
                        else None,
                        "first_step_s": row["first_step_s"],
                        "compile_s": row.get("compile_s"),
                        "device_peak_mb": row.get("device_peak_mb"),
                        "pct_of_matmul_peak": row.get("pct_of_matmul_peak"),
                        "device": row.get("device"),
                    }
                )
            rows.append(entry)
    measured = [r for r in rows if "error" not in r]
    table = done["stdout"].split("\n\n", 1)[-1].rsplit("written:", 1)[0].strip()
    status = "passed" if measured and len(measured) == len(rows) else ("incomplete" if measured else "failed")
    return {
        "status": status,
        "command": " ".join(command[1:]),
        "exit_code": done["returncode"],
        "rows_measured": len(measured),
        "rows": rows,
        "table": table,
        "matmul": result.get("matmul"),
        "torch_device": result.get("torch_device"),
        "result": {k: v for k, v in result.items() if k != "provenance"},
        **({"stderr_tail": tail(done["stderr"], 20)} if done["returncode"] else {}),
    }


# ----------------------------------------------------------------------------- train


def quick_images(archive: Path, target: Path, per_class: dict[str, int]) -> Path:
    """An image folder of the first `per_class[split]` JPEGs of each class of the CIFAR-10 archive (--quick)."""
    if target.is_dir():
        return target
    partial = target.with_name(target.name + ".partial")
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts[-3:]
            if not member.isfile() or len(parts) != 3 or parts[0] not in per_class:
                continue
            if taken.get(parts[:2], 0) < per_class[parts[0]]:
                taken[parts[:2]] = taken.get(parts[:2], 0) + 1
                path = partial.joinpath(*parts)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(tar.extractfile(member).read())
    partial.rename(target)
    return target


def start_import(opts, env: dict, data: Path | None) -> dict:
    """Start importing the training data into WORKDIR/tfds on the CPU (it runs while the tests do)."""
    tfds_dir = opts.workdir / "tfds"
    state = {"tfds_dir": tfds_dir, "process": None, "started": now(), "log": opts.workdir / "import.log"}
    if data is None or not (data / CIFAR_ARCHIVE).is_file():
        state["error"] = f"the CIFAR-10 JPEG archive {CIFAR_ARCHIVE} is not in the data folder ({data})"
        return state
    name, source = "cifar10", data / CIFAR_ARCHIVE
    if opts.quick:
        name = QUICK_DATASET
        source = quick_images(data / CIFAR_ARCHIVE, opts.workdir / "images" / QUICK_DATASET, QUICK["images_per_class"])
    state["dataset"] = name
    if (tfds_dir / "cnn_jax_imported" / name).is_dir():
        state["reused"] = True
        return state
    command = [sys.executable, "-c", CLI, "data", "import", name, "--from", str(source), "--data-dir", str(tfds_dir)]
    log = state["log"].open("w")
    state["process"] = subprocess.Popen(
        command, cwd=ROOT, env={**env, "JAX_PLATFORMS": "cpu"}, stdout=log, stderr=subprocess.STDOUT
    )
    return state


def wait_import(state: dict, timeout: float) -> None:
    """Wait for the import started by start_import; raise with its log when it failed."""
    process = state.get("process")
    if "error" in state:
        raise RuntimeError(state["error"])
    if process is None:
        return
    try:
        process.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise RuntimeError(f"importing {state['dataset']} took longer than {timeout:.0f} s") from None
    state.setdefault("seconds", now() - state["started"])
    if process.returncode != 0:
        raise RuntimeError(f"importing {state['dataset']} failed: {tail(state['log'].read_text(), 8)}")


def train_command(opts, state: dict, run_dir: Path, epochs: int, extra: list[str]) -> list[str]:
    boundaries = ",".join(f"{f * epochs:g}" for f in BOUNDARY_FRACTIONS)
    return [
        sys.executable,
        "-c",
        CLI,
        "train",
        f"{EXPERIMENT}:{PRESET}",
        "--workdir",
        str(run_dir),
        "--data-dir",
        str(state["tfds_dir"]),
        "--no-progress",
        f"--config.train.epochs={epochs}",
        f"--config.schedule.boundaries_epochs={boundaries},",
        *extra,
    ]


def last_epoch(run_dir: Path) -> dict | None:
    """The last epoch-end record of a run's metrics.jsonl (what a stopped run reached)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ends = [r for r in records if "test_accuracy" in r]
    return ends[-1] if ends else None


def calibration_times(done: dict, result: dict) -> dict:
    """From a CALIBRATION_EPOCHS-epoch run: one steady epoch (training, evaluation, checkpoint: the time between
    the two epoch lines) and the fixed rest (process start, data, compiles, the final writes)."""
    ends = {int(m.group(1)): t for t, line in done["lines"] if (m := EPOCH_LINE.match(line))}
    if {1, 2} <= set(ends):
        epoch_s = ends[2] - ends[1]
    else:  # no epoch lines: the loop's mean, the first evaluation's compile included (an overestimate)
        epoch_s = result["loop_seconds"] / CALIBRATION_EPOCHS
    return {
        "epoch_s": epoch_s,
        "fixed_s": done["seconds"] - CALIBRATION_EPOCHS * epoch_s,
        "compile_s": result["compile_seconds"],
        "wall_s": done["seconds"],
        "images_per_sec": result.get("images_per_sec_median"),
        f"test_accuracy_after_{CALIBRATION_EPOCHS}_epochs": result["final"].get("test_accuracy"),
    }


def train_part(opts, env: dict, settings: dict, state: dict, deadline: float) -> dict:
    """Calibrate (a 2-epoch run: fixed and per-epoch seconds), then train the preset afresh for the epochs that fit
    by `deadline`, its learning-rate steps at the preset's fractions of the run."""
    import shutil

    t0 = now()
    wait_import(state, deadline - now())
    import_wait_s = now() - t0
    extra = settings["train_overrides"]
    env = {**env, "JAX_COMPILATION_CACHE_DIR": str(opts.workdir / "jax_cache")}
    calibrate_dir, run_dir = opts.workdir / "train_calibrate", opts.workdir / "train_run"
    for path in (calibrate_dir, run_dir):
        shutil.rmtree(path, ignore_errors=True)
    done = run(train_command(opts, state, calibrate_dir, CALIBRATION_EPOCHS, extra), deadline - now(), env)
    if done["returncode"] != 0 or not (calibrate_dir / "result.json").exists():
        raise RuntimeError(f"the calibration run failed (exit {done['returncode']}): {tail(done['stderr'], 10)}")
    calibration = calibration_times(done, json.loads((calibrate_dir / "result.json").read_text()))
    left = deadline - now()
    margin = 5.0 + 0.05 * left
    epochs = min(settings["max_epochs"], math.floor((left - margin - calibration["fixed_s"]) / calibration["epoch_s"]))
    report = {
        "experiment": f"{EXPERIMENT}:{PRESET}",
        "model": json.loads((calibrate_dir / "config.json").read_text())["model"]["name"],
        "dataset": state["dataset"] + (" (a 600-image cut of the JPEG copy: --quick)" if opts.quick else ""),
        "data_label": "CIFAR-10 (JPEG copy)",
        "shortened": True,
        "preset_epochs": PRESET_EPOCHS,
        "data_import_s": state.get("seconds"),
        "data_import_reused": state.get("reused", False),
        "data_import_wait_s": import_wait_s,
        "calibration": calibration,
    }
    if epochs < 1:
        key = f"test_accuracy_after_{CALIBRATION_EPOCHS}_epochs"
        return {
            **report,
            "status": "incomplete",
            "epochs": CALIBRATION_EPOCHS,
            "note": f"SHORTENED: no time left after the {CALIBRATION_EPOCHS}-epoch calibration ({left:.0f} s left; "
            f"a run needs {calibration['fixed_s']:.0f} s + {calibration['epoch_s']:.1f} s per epoch): the accuracy is "
            "the calibration run's",
            "test_accuracy": calibration[key],
        }
    command = train_command(opts, state, run_dir, epochs, extra)
    done = run(command, deadline - now(), env)
    boundaries = [round(f * epochs, 3) for f in BOUNDARY_FRACTIONS]
    report.update(
        {
            "epochs": epochs,
            "predicted_s": calibration["fixed_s"] + epochs * calibration["epoch_s"],
            "command": " ".join(command[3:]),
            "overrides": [a for a in command if a.startswith("--config.")],
            "note": f"SHORTENED: {epochs} of the preset's {PRESET_EPOCHS} epochs (learning rate x0.1 after epochs "
            f"{boundaries[0]:g} and {boundaries[1]:g}, the preset's fractions), sized to the time left; "
            "the accuracy is what this short run reaches, not the paper's result",
            "run_s": done["seconds"],
        }
    )
    result_path = run_dir / "result.json"
    if done["returncode"] == 0 and result_path.exists():
        result = json.loads(result_path.read_text())
        final = result["final"]
        return {
            **report,
            "status": "passed",
            "test_accuracy": final.get("test_accuracy"),
            "test_top5": final.get("test_top5"),
            "val_accuracy": final.get("val_accuracy"),
            "val_best": result.get("val_best"),
            "steps": result["steps"],
            "images_per_sec": result.get("images_per_sec_median"),
            "compile_s": result.get("compile_seconds"),
            "loop_s": result.get("loop_seconds"),
        }
    reached = last_epoch(run_dir)
    return {
        **report,
        "status": "incomplete" if done["timed_out"] and reached else "failed",
        "error": ("stopped at the time budget" if done["timed_out"] else f"exit {done['returncode']}")
        + f": {tail(done['stderr'], 10)}",
        "reached": reached,
        "test_accuracy": reached.get("test_accuracy") if reached else None,
    }


# ----------------------------------------------------------------------------- driver


def write(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(report, indent=1, default=str))
    partial.replace(out)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds for everything (default 465 less the setup; --quick 70)"
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="folder holding fashion-mnist/ and cifar10-jpeg/ (default: see doc)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cnn_jax_gpu_check"), help="imports and runs")
    parser.add_argument("--parts", default="tests,bench,train", help="comma-separated, of tests, bench, train")
    parser.add_argument("--tests-share", type=float, default=0.25, help="the tests' most, as a share of the budget")
    parser.add_argument("--quick", action="store_true", help="the reduced CPU mode (see above)")
    parser.add_argument("--setup-s", type=float, default=0.0, help=argparse.SUPPRESS)  # gpu_check.sh's setup time
    opts = parser.parse_args(argv)
    parts = opts.parts.split(",")
    unknown = [p for p in parts if p not in ("tests", "bench", "train")]
    if unknown:
        parser.error(f"--parts: unknown {unknown[0]!r}; allowed: tests, bench, train")
    opts.parts = parts
    # the default keeps gpu_check.sh's setup and this script together under 8 minutes
    opts.budget = opts.budget or (70.0 if opts.quick else max(465.0 - opts.setup_s, 120.0))
    opts.data = opts.data or default_data_dir()
    opts.workdir = opts.workdir.resolve()
    return opts


def main(argv=None) -> int:
    opts = parse_args(argv)
    started, wall_start = now(), datetime.datetime.now(datetime.UTC)
    deadline = started + opts.budget
    settings = QUICK if opts.quick else FULL
    opts.workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_PREALLOCATE"}
    env["PYTHONUNBUFFERED"] = "1"  # the lines a part printed before a timeout stopped it still arrive
    report = {
        "schema": SCHEMA,
        "mode": "quick (reduced CPU mode)" if opts.quick else "full",
        "started": wall_start.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
        "budget_s": opts.budget,
        "setup_s": opts.setup_s,
        "data": str(opts.data) if opts.data else None,
        "parts": {},
        "notes": [],
    }
    say = print

    def record(name: str, fn, budget: float) -> None:
        """Run one part, recording its result, status and time whatever happens."""
        t0 = now()
        say(f"[gpu_check] {name}: up to {budget:.0f} s", flush=True)
        try:
            result = fn(budget)
        except Exception as error:  # a part fails alone: record it and go on
            result = {"status": "error", "error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()}
        result["wall_s"], result["budget_s"] = now() - t0, budget
        report["parts"][name] = result
        say(f"[gpu_check] {name}: {result['status']} in {result['wall_s']:.0f} s", flush=True)
        write(opts.out, report)

    def probe_part(budget: float) -> dict:
        info, fallback = probe_with_fallback(env, budget)
        report.update(
            {
                "device": {
                    "jax_backend": info["jax"]["backend"],
                    "jax_devices": info["jax"]["devices"],
                    "name": (info.get("torch") or {}).get("device") or info["jax"]["devices"][0],
                    "torch": info.get("torch"),
                    "nvidia_smi": info.get("nvidia_smi"),
                },
                "versions": info["versions"],
                "host": {"python": info["python"], "cpu": info["cpu"], "cpu_count": info["cpu_count"]},
                "git": info["git"],
                "tuning": info["tuning"],
                "plain_fallback": fallback,
            }
        )
        return {"status": "passed"}

    def left_for(part: str) -> float:
        later = opts.parts[opts.parts.index(part) + 1 :]
        return deadline - now() - sum(settings["reserve"].get(p, 0.0) for p in later)

    record("probe", probe_part, min(120.0, max(deadline - now(), 1.0)))
    imports = start_import(opts, env, opts.data) if "train" in opts.parts else None
    try:
        if "tests" in opts.parts:
            budget = min(opts.tests_share * opts.budget, left_for("tests"))
            record("tests", lambda b: tests_part(opts, env, opts.data, b), max(budget, 1.0))
        if imports and imports.get("process") and "bench" in opts.parts and settings["import_before_bench"]:
            # the import decodes on the CPU: let it finish before the benchmark measures, if there is time
            try:
                imports["process"].wait(timeout=max(left_for("bench") - settings["reserve"]["bench"], 1.0))
            except subprocess.TimeoutExpired:
                report["notes"].append("the CIFAR-10 import was still running when the benchmark started")
        if "bench" in opts.parts:
            record("bench", lambda b: bench_part(opts, env, settings, b), max(left_for("bench"), 1.0))
        if "train" in opts.parts:
            record("train", lambda b: train_part(opts, env, settings, imports, now() + b), max(deadline - now(), 1.0))
    finally:
        if imports is not None and imports.get("process") is not None and imports["process"].poll() is None:
            imports["process"].kill()
            imports["process"].wait()
    statuses = {name: part["status"] for name, part in report["parts"].items()}
    report["passed"] = all(s == "passed" for s in statuses.values())
    report["total_s"] = now() - started
    report["total_with_setup_s"] = report["total_s"] + opts.setup_s
    write(opts.out, report)
    say(
        f"[gpu_check] {'all parts passed' if report['passed'] else statuses} in {report['total_s']:.0f} s "
        f"(budget {opts.budget:.0f} s); written: {opts.out}",
        flush=True,
    )
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
