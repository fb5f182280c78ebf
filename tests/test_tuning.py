"""The speed defaults of cnn_jax/tuning.py: the XLA CPU flag, its switch, and equal numerics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnn_jax import tuning
from cnn_jax.kernels import onednn

from conftest import shared

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def test_flag_is_added_unless_the_user_set_one_of_that_name_or_jaxlib_is_outside_the_checked_versions():
    assert tuning.xla_flags_to_add("", (0, 10, 2)) == [FLAG]
    assert tuning.xla_flags_to_add("--xla_force_host_platform_device_count=4", (0, 10, 2)) == [FLAG]
    assert tuning.xla_flags_to_add("--xla_cpu_experimental_ynn_fusion_type=", (0, 10, 2)) == []
    assert tuning.xla_flags_to_add("", (0, 9, 9)) == []
    assert tuning.xla_flags_to_add("", (0, 12, 0)) == [FLAG]  # the flag is in jaxlib 0.12.0.1's compiler
    assert tuning.xla_flags_to_add("", (0, 13, 0)) == []  # not checked: an unknown flag would abort


def test_apply_appends_to_the_environment_and_plain_leaves_it_alone(monkeypatch):
    monkeypatch.delenv(tuning.PLAIN_ENV, raising=False)
    monkeypatch.setattr(tuning, "_jaxlib_version", lambda: (0, 10, 2))
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert tuning.apply_xla_flags(environ) == [FLAG]
    assert environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {FLAG}"
    assert tuning.apply_xla_flags(environ) == []  # idempotent
    monkeypatch.setenv(tuning.PLAIN_ENV, "1")
    environ = {}
    assert tuning.apply_xla_flags(environ) == [] and environ == {}
    assert tuning.describe()["formulation"] == "plain"
    monkeypatch.setenv(tuning.PLAIN_ENV, "0")
    assert not tuning.plain()


def test_importing_cnn_jax_after_jax_started_warns_and_the_manifest_says_so():
    script = (
        "import jax; jax.devices()\nimport warnings; warnings.simplefilter('always')\n"
        "import cnn_jax, json; from cnn_jax import tuning; print(json.dumps(tuning.describe()))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", tuning.PLAIN_ENV)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "imported after JAX started its backend" in done.stderr and "import cnn_jax before using JAX" in done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["xla_flags_not_in_effect"] == [FLAG]


def _probe(fashion: Path, **switches: str) -> dict:
    """tests/tuning_probe.py in a fresh process with the environment variables `switches` (tuned without any;
    XLA_FLAGS as the user's)."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", tuning.PLAIN_ENV, onednn.DISABLE_ENV)}
    env.update(switches)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("tuning_probe.py")), str(fashion)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def probes() -> dict:
    fashion = shared("fashion-mnist")
    return {
        "tuned": _probe(fashion),
        "xla_convs": _probe(fashion, **{onednn.DISABLE_ENV: "1"}),
        "plain": _probe(fashion, **{tuning.PLAIN_ENV: "1"}),
    }


@pytest.mark.slow
def test_tuned_step_keeps_convolutions_out_of_ynnpack_and_plain_does_not(probes):
    tuned, plain = probes["xla_convs"]["convolutions"], probes["plain"]["convolutions"]
    assert tuned["total"] == plain["total"] >= 5  # 3 forward, 3 kernel gradients, 2 input gradients
    assert tuned["in_ynn_fusions"] == 0
    assert plain["in_ynn_fusions"] > 0  # jaxlib 0.10's default, which the flag exists to change
    assert tuned["onednn"] == plain["onednn"] == 0


@pytest.mark.slow
def test_tuned_step_sends_every_convolution_to_onednn_where_it_is_built(probes):
    if not onednn.available():
        pytest.skip(f"the oneDNN convolutions are not in use here: {onednn.status().detail}")
    tuned, xla = probes["tuned"]["convolutions"], probes["xla_convs"]["convolutions"]
    assert tuned["total"] == 0 and tuned["onednn"] == xla["total"] == 8  # 3 forward, 3 kernel and 2 input grads


@pytest.mark.slow
def test_tuned_and_plain_training_agree_to_float_rounding(probes):
    """8 SGD steps of seed_cnn on real Fashion-MNIST: the same falling loss curve, and weights whose
    difference is float32 rounding (measured: 7e-4 of how far the steps moved them; bound 1e-2)."""
    plain = probes["plain"]
    for tuned in (probes["tuned"], probes["xla_convs"]):
        _assert_agree(tuned, plain)


def _assert_agree(tuned: dict, plain: dict) -> None:
    assert tuned["losses"][-1] < tuned["losses"][0] - 0.3  # it learns
    np.testing.assert_allclose(tuned["losses"], plain["losses"], rtol=1e-5)
    final, initial = np.array(tuned["conv2_kernel"]), np.array(tuned["conv2_kernel_initial"])
    moved = np.abs(final - initial).max()
    assert np.array_equal(initial, plain["conv2_kernel_initial"]) and moved > 1e-3
    assert np.abs(final - np.array(plain["conv2_kernel"])).max() < 1e-2 * moved
