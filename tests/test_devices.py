"""Data parallelism: the same config on 4 (virtual CPU) devices trains like on 1; batches must divide."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from cnn_jax import config as config_lib
from cnn_jax.errors import UserError
from cnn_jax.train.devices import data_mesh

TRAIN = """
import json, sys
from pathlib import Path
import jax, numpy as np
from flax import traverse_util
from cnn_jax import config as config_lib
from cnn_jax.loading import load_model
from cnn_jax.train.loop import train
from cnn_jax.train.setup import DataPaths

out = Path(sys.argv[2])
config = config_lib.apply_overrides(config_lib.default_config(), json.loads(sys.argv[3]))
train(config, out / "run", DataPaths(Path(sys.argv[1]), ()), progress=False, log=lambda *a: None)
_, variables = load_model(out / "run", "latest")
flat = traverse_util.flatten_dict(jax.device_get(variables), sep="/")
np.savez(out / "variables.npz", **{k: np.asarray(v) for k, v in flat.items()})
print(jax.device_count())
"""

CONFIG = {"experiment": "devices", "model.name": "ablation_net", "model.stages": 2, "model.width": 8,
          "model.batch_norm": True, "dataset.train_subset": 640, "train.batch_size": 32, "train.epochs": 1,
          "train.log_every_steps": 5, "schedule.warmup_epochs": 0.0}


def run_on(devices: int, tmp_path, data_dir) -> tuple[dict, list[dict]]:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    out = tmp_path / f"d{devices}"
    done = subprocess.run([sys.executable, "-c", TRAIN, str(data_dir), str(out), json.dumps(CONFIG)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == str(devices)
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    return dict(np.load(out / "variables.npz")), records


@pytest.mark.slow
def test_twenty_steps_on_four_devices_match_one_device(tmp_path, fashion_data_dir):
    one, one_log = run_on(1, tmp_path, fashion_data_dir)
    four, four_log = run_on(4, tmp_path, fashion_data_dir)
    assert [r["step"] for r in four_log] == [5, 10, 15, 20]
    assert one.keys() == four.keys() and any(k.startswith("batch_stats") or "mean" in k for k in one)
    for key in one:
        np.testing.assert_allclose(four[key], one[key], atol=1e-5, rtol=0, err_msg=key)
    for a, b in zip(one_log, four_log):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-5
    assert abs(one_log[-1]["eval_accuracy"] - four_log[-1]["eval_accuracy"]) <= 1e-4  # one image in 10,000


def test_a_batch_that_does_not_divide_across_devices_is_refused():
    config = config_lib.apply_overrides(config_lib.default_config(), {"train.batch_size": 30})
    with pytest.raises(UserError, match=r"'train.batch_size' = 30 does not divide across the 4 cpu devices; "
                                        r"use a multiple of 4, e.g. 28"):
        data_mesh(config, jax.devices() * 4)
    assert data_mesh(config).size == jax.local_device_count()
