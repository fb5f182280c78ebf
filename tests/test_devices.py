"""Data parallelism: the same config on 4 (virtual CPU) devices, or on 2 processes of 2 devices each,
trains like on 1 device; batches must divide."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from cnn_jax import config as config_lib
from cnn_jax.errors import UserError
from cnn_jax.train import hosts
from cnn_jax.train.devices import data_mesh

TRAIN = """
import json, sys
from pathlib import Path
import jax, numpy as np
from flax import traverse_util
from cnn_jax import config as config_lib
from cnn_jax.data import loader
from cnn_jax.loading import load_model
from cnn_jax.train import hosts
from cnn_jax.train.loop import train
from cnn_jax.train.setup import DataPaths

out = Path(sys.argv[2])
config = config_lib.apply_overrides(config_lib.default_config(), json.loads(sys.argv[3]))
if len(sys.argv) > 4:  # coordinator, number of processes, this process
    hosts.initialize(sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
read = []  # training examples this process decoded (streamed data, read in this process: workers 0)
decode = loader.read_examples
loader.read_examples = lambda split, positions, *rest: read.append(len(positions)) or decode(split, positions, *rest)
train(config, out / "run", DataPaths(Path(sys.argv[1]), ()), progress=False)
_, variables = load_model(out / "run", "latest")
flat = traverse_util.flatten_dict(jax.device_get(variables), sep="/")
np.savez(out / f"variables{jax.process_index()}.npz", **{k: np.asarray(v) for k, v in flat.items()})
print("read", sum(read))
print(jax.device_count())
"""

CONFIG = {
    "experiment": "devices",
    "model.name": "ablation_net",
    "model.stages": 2,
    "model.width": 8,
    "model.batch_norm": True,
    "dataset.train_subset": 640,
    "dataset.eval_subset": 500,
    "train.batch_size": 32,
    "train.epochs": 1,
    "train.log_every_steps": 5,
    "schedule.warmup_epochs": 0.0,
}


def _start(out, data_dir, devices: int, *process_args, config=CONFIG) -> subprocess.Popen:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN, str(data_dir), str(out), json.dumps(config), *process_args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finished(process: subprocess.Popen) -> str:
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def _results(out, process: int = 0) -> tuple[dict, list[dict]]:
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    return dict(np.load(out / f"variables{process}.npz")), records


def run_on(devices: int, out, data_dir) -> tuple[dict, list[dict]]:
    assert _finished(_start(out, data_dir, devices)).split()[-1] == str(devices)
    return _results(out)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory, fashion_data_dir):
    return run_on(1, tmp_path_factory.mktemp("d1"), fashion_data_dir)


def assert_same_training(reference, other) -> None:
    (one, one_log), (many, many_log) = reference, other
    assert [r["step"] for r in many_log] == [5, 10, 15, 20]  # each record once
    assert one.keys() == many.keys() and any(k.startswith("batch_stats") or "mean" in k for k in one)
    for key in one:
        # float32 rounding, grown over 20 steps: the devices sum kernel gradients in another order than one device
        # (with oneDNN's convolutions, each device its own rows; measured up to 4.7e-5 relative, 3.6e-5 absolute)
        np.testing.assert_allclose(many[key], one[key], atol=1e-4, rtol=2e-4, err_msg=key)
    for a, b in zip(one_log, many_log):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-5
    assert abs(one_log[-1]["test_accuracy"] - many_log[-1]["test_accuracy"]) <= 1e-4  # one image in 10,000


@pytest.mark.slow
def test_twenty_steps_on_four_devices_match_one_device(one_device, tmp_path, fashion_data_dir):
    assert_same_training(one_device, run_on(4, tmp_path, fashion_data_dir))


@pytest.mark.slow
def test_two_processes_train_one_run_together_like_one_device(one_device, tmp_path, fashion_data_dir):
    """Two processes on this machine, 2 devices each, joined by jax.distributed over localhost (gloo)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    processes = [_start(tmp_path, fashion_data_dir, 2, f"127.0.0.1:{port}", "2", str(i)) for i in (0, 1)]
    outputs = [_finished(p) for p in processes]
    assert all(o.split()[-1] == "4" for o in outputs)  # each process sees the 4 devices of the run
    assert "Compiled the train step" in outputs[0] and "Compiled" not in outputs[1]  # process 0 alone logs
    assert_same_training(one_device, _results(tmp_path, 0))
    second, _ = _results(tmp_path, 1)
    for key, value in second.items():  # both processes hold the same replicated state
        np.testing.assert_array_equal(value, _results(tmp_path, 0)[0][key])
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (manifest["processes"], manifest["devices"]) == (2, 4)
    assert json.loads((tmp_path / "run" / "result.json").read_text())["steps"] == 20


@pytest.mark.slow
def test_two_processes_streaming_each_read_only_their_rows_and_train_like_one_device(
    one_device, tmp_path, fashion_data_dir
):
    """The run above with the data streamed: each process decodes only the half of every batch its two devices
    take, and JAX joins the halves into one batch; the result is the device-resident run's on one device."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = {**CONFIG, "dataset.source": "stream"}
    processes = [_start(tmp_path, fashion_data_dir, 2, f"127.0.0.1:{port}", "2", str(i), config=config) for i in (0, 1)]
    outputs = [_finished(p) for p in processes]
    assert all("read 320\n" in o for o in outputs)  # 20 steps x 16 of each 32-image batch
    assert_same_training(one_device, _results(tmp_path, 0))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["data"]["pipeline"]["pipeline"] == "stream" and manifest["processes"] == 2


def test_a_batch_that_does_not_divide_across_devices_is_refused():
    config = config_lib.apply_overrides(config_lib.default_config(), {"train.batch_size": 30})
    with pytest.raises(
        UserError,
        match=r"'train.batch_size' = 30 does not divide across the 4 cpu devices; "
        r"use a multiple of 4, e.g. 28",
    ):
        data_mesh(config, jax.devices() * 4)
    assert data_mesh(config).size == jax.local_device_count()


def test_multi_process_flags_come_all_together_and_in_range():
    with pytest.raises(UserError, match="needs all of --coordinator HOST:PORT, --num-processes N and --process-id I"):
        hosts.initialize("127.0.0.1:1234", None, None)
    with pytest.raises(UserError, match=r"--process-id 2 is outside 0..1 \(--num-processes 2\)"):
        hosts.initialize("127.0.0.1:1234", 2, 2)
    assert jax.process_count() == 1  # nothing was joined
