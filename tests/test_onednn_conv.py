"""The oneDNN convolutions (cnn_jax/kernels): equal to XLA's within float32 rounding on every convolution the
zoo uses, under vmap and on several devices, bitwise repeatable; XLA's own where not built, switched off, or
lowered for another platform; the build's fallback note."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cnn_jax import tuning
from cnn_jax.kernels import conv, onednn
from cnn_jax.models import build_model
from cnn_jax.models.registry import REGISTRY

pytestmark = pytest.mark.skipif(
    not onednn.available(), reason=f"the oneDNN convolutions are not in use here: {onednn.status().detail}"
)

SMALL_MODELS = ("seed_cnn", "resnet20", "allcnn_all_c", "lenet5")
# |oneDNN - XLA| / max|XLA| per result; measured up to 1.2e-6 (another float32 summation order)
ROUNDING = 2e-5


def zoo_geometries(names) -> list[tuple]:
    """The distinct (input shape, kernel shape, strides, pads) the models `names` send to oneDNN, at batch 2."""
    seen = {}
    recorded = conv._conv

    def record(x, w, strides, pads):
        seen[((2, *x.shape[1:]), w.shape, strides, pads)] = None
        return recorded(x, w, strides, pads)

    conv._conv = record
    try:
        for name in names:
            spec = REGISTRY[name]
            model = build_model(name, num_classes=spec.num_classes)
            jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *spec.input_shape)))
    finally:
        conv._conv = recorded
    return list(seen)


def _compare(geometry) -> dict[str, float]:
    """max|oneDNN - XLA| / max|XLA| of the forward, input and kernel gradient at `geometry`, random operands."""
    x_shape, w_shape, strides, pads = geometry
    keys = jax.random.split(jax.random.key(sum(x_shape) + sum(w_shape)), 3)
    x, w = jax.random.normal(keys[0], x_shape), jax.random.normal(keys[1], w_shape)

    @jax.jit
    def both(x, w, dy):
        ours = jax.vjp(lambda x, w: conv._conv(x, w, strides, pads), x, w)
        xla = jax.vjp(lambda x, w: conv._xla(x, w, strides, pads), x, w)
        return (ours[0], *ours[1](dy)), (xla[0], *xla[1](dy))

    dy = jax.random.normal(keys[2], jax.eval_shape(lambda: conv._xla(x, w, strides, pads)).shape)
    ours, xla = both(x, w, dy)
    return {
        name: float(jnp.abs(a - b).max() / jnp.abs(b).max())
        for name, a, b in zip(("forward", "input_grad", "kernel_grad"), ours, xla)
    }


def _assert_equal_to_xla(names) -> int:
    geometries = zoo_geometries(names)
    worst = {geometry: _compare(geometry) for geometry in geometries}
    bad = {g: d for g, d in worst.items() if max(d.values()) > ROUNDING}
    assert not bad, bad
    return len(geometries)


def test_course_models_convolutions_equal_xla_forward_and_both_gradients():
    count = _assert_equal_to_xla(SMALL_MODELS)
    assert count >= 20  # strides 1 and 2, SAME / VALID / explicit pads, kernels 1, 3, 5; 1 to 192 channels


@pytest.mark.slow
def test_every_zoo_model_convolutions_equal_xla_forward_and_both_gradients():
    """Every registered model at its published input size (224x224 ImageNet models included)."""
    assert _assert_equal_to_xla(sorted(REGISTRY)) >= 100


@pytest.mark.parametrize(
    "x_shape, kernel, strides, padding",
    [
        ((3, 15, 15, 8), 3, (2, 2), ((1, 2), (0, 1))),  # asymmetric, odd size
        ((2, 9, 7, 5), 5, (1, 2), "VALID"),  # non-square input and strides
        ((2, 4, 4, 3), 3, (1, 1), ((3, 3), (3, 3))),  # padding wider than the kernel reach
    ],
)
def test_unusual_geometries_equal_xla(x_shape, kernel, strides, padding):
    pads = conv._explicit_pads(padding, x_shape[1:3], (kernel, kernel), strides)
    differences = _compare((x_shape, (kernel, kernel, x_shape[-1], 6), strides, pads))
    assert max(differences.values()) <= ROUNDING, differences


def _loss(conv_fn):
    def loss(x, w):
        y = conv_fn(x, w, (2, 2), "SAME", dimension_numbers=conv.NHWC)
        return jnp.sum(jnp.sin(y))

    return jax.grad(loss, argnums=(0, 1))


def test_gradients_under_vmap_equal_xla():
    keys = jax.random.split(jax.random.key(1), 2)
    xs, ws = jax.random.normal(keys[0], (3, 2, 12, 12, 4)), jax.random.normal(keys[1], (3, 3, 3, 4, 8))
    ours = jax.jit(jax.vmap(_loss(conv.conv_general_dilated)))(xs, ws)
    xla = jax.jit(jax.vmap(_loss(lax.conv_general_dilated)))(xs, ws)
    for a, b in zip(ours, xla):
        assert float(jnp.abs(a - b).max() / jnp.abs(b).max()) <= ROUNDING


def test_results_repeat_bitwise_across_calls_and_compilations():
    keys = jax.random.split(jax.random.key(2), 2)
    x, w = jax.random.normal(keys[0], (16, 16, 16, 32)), jax.random.normal(keys[1], (3, 3, 32, 64))
    first = [np.asarray(g) for g in jax.jit(_loss(conv.conv_general_dilated))(x, w)]
    for _ in range(3):
        again = jax.jit(_loss(conv.conv_general_dilated))(x, w)  # a new compilation each time
        assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(first, again))


def _custom_calls(text: str) -> int:
    return text.count("cnn_jax_conv_")


def test_the_step_calls_onednn_on_cpu_and_xla_when_lowered_for_a_gpu():
    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    grads = jax.jit(_loss(conv.conv_general_dilated))
    assert _custom_calls(grads.lower(x, w).as_text()) == 3  # forward, input and kernel gradient
    exported = jax.export.export(grads, platforms=["cuda"])(x, w)
    assert _custom_calls(exported.mlir_module()) == 0 and "convolution" in exported.mlir_module()


def test_unsupported_convolutions_stay_on_xla():
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 2, 4))
    grouped = jax.jit(lambda x, w: conv.conv_general_dilated(x, w, (1, 1), "SAME", None, None, conv.NHWC, 2))
    assert _custom_calls(grouped.lower(x, w).as_text()) == 0
    crop = ((-1, 0), (0, 0))
    cropped = jax.jit(
        lambda x: conv.conv_general_dilated(x, jnp.ones((3, 3, 4, 4)), (1, 1), crop, None, None, conv.NHWC)
    )
    assert _custom_calls(cropped.lower(x).as_text()) == 0  # negative padding crops: oneDNN has no such thing
    kernel = jnp.ones((3, 3, 4, 4), jnp.bfloat16)
    half = jax.jit(lambda x: conv.conv_general_dilated(x, kernel, (1, 1), "SAME", None, None, conv.NHWC))
    assert _custom_calls(half.lower(x.astype(jnp.bfloat16)).as_text()) == 0


@pytest.mark.parametrize("switch", [onednn.DISABLE_ENV, tuning.PLAIN_ENV])
def test_switches_keep_xla_convolutions_and_the_manifest_says_so(switch):
    script = (
        "import json, jax, jax.numpy as jnp\n"
        "from cnn_jax.kernels import conv, onednn\n"
        "f = jax.jit(lambda x: conv.conv_general_dilated(x, jnp.ones((3, 3, 3, 4)), (1, 1), 'SAME',"
        " dimension_numbers=conv.NHWC))\n"
        "print(json.dumps({'calls': f.lower(jnp.ones((1, 8, 8, 3))).as_text().count('cnn_jax_conv_'),"
        " **onednn.describe()}))\n"
    )
    records = {}
    for value in ("", "1"):
        env = {k: v for k, v in os.environ.items() if k not in (onednn.DISABLE_ENV, tuning.PLAIN_ENV)}
        env[switch] = value
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        records[value] = json.loads(done.stdout.strip().splitlines()[-1])
    assert records[""]["calls"] == 1 and records[""]["onednn_convolutions"] is True
    assert "oneDNN 3." in records[""]["onednn_detail"]
    assert records["1"]["calls"] == 0 and records["1"]["onednn_convolutions"] is False
    assert switch in records["1"]["onednn_detail"]


DEVICES = """
import json, jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from cnn_jax.kernels import conv
keys = jax.random.split(jax.random.key(3), 2)
x, w = jax.random.normal(keys[0], (8, 12, 12, 4)), jax.random.normal(keys[1], (3, 3, 4, 8))
def loss(x, w):
    return jnp.sum(jnp.sin(conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=conv.NHWC)))
grads = jax.grad(loss, (0, 1))
mesh = Mesh(np.array(jax.devices()), ("data",))
sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
whole = jax.device_put(w, NamedSharding(mesh, PartitionSpec()))
many = jax.jit(grads)(sharded, whole)
one = jax.jit(grads)(x, w)
program = jax.jit(grads).lower(sharded, whole).compile().as_text()
print(json.dumps({"devices": jax.device_count(), "differences": [float(jnp.abs(a - b).max() / jnp.abs(b).max())
      for a, b in zip(many, one)], "gathers": program.count("all-gather"), "sums": program.count("all-reduce("),
      "local_calls": program.count("custom-call(") - program.count("f32[8,12,12")}))
"""


def test_a_batch_sharded_over_four_devices_is_split_between_them_with_the_gradients_of_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run([sys.executable, "-c", DEVICES], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4 and max(result["differences"]) <= ROUNDING
    # each device convolves its own 2 rows (no gathered batch); the kernel gradient is summed over devices
    assert result["gathers"] == 0 and result["local_calls"] == 3 and result["sums"] >= 1


def test_without_the_library_status_gives_the_builds_reason(monkeypatch, tmp_path):
    note = tmp_path / onednn.NOT_BUILT_NOTE
    note.write_text("no C++ compiler was found (install g++ or clang++, then reinstall cnn_jax)\n")
    monkeypatch.setattr(onednn, "_installed_file", lambda name: note if name == onednn.NOT_BUILT_NOTE else None)
    onednn.status.cache_clear()
    try:
        status = onednn.status()
        assert not status.available and status.detail.startswith("not built: no C++ compiler was found")
    finally:
        monkeypatch.undo()
        onednn.status.cache_clear()
    assert onednn.status().available


CMAKE = shutil.which("cmake", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def test_a_library_that_does_not_load_warns_and_leaves_xla_convolutions(monkeypatch, tmp_path):
    broken = tmp_path / onednn.LIBRARY
    broken.write_bytes(b"not a shared library")
    monkeypatch.setattr(onednn, "_installed_file", lambda name: broken if name == onednn.LIBRARY else None)
    onednn.status.cache_clear()
    try:
        with pytest.warns(UserWarning, match="could not be loaded.*XLA's own kernels"):
            status = onednn.status()
        assert not status.available and str(broken) in status.detail
    finally:
        monkeypatch.undo()
        onednn.status.cache_clear()
    assert onednn.status().available


@pytest.mark.skipif(CMAKE is None, reason="cmake is not installed")
def test_the_build_installs_its_reason_instead_of_the_library_when_there_is_no_compiler(tmp_path):
    source, build = Path(conv.__file__).parent, tmp_path / "build"
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler")}
    configure = [CMAKE, "-S", str(source), "-B", str(build), f"-DPython_EXECUTABLE={sys.executable}"]
    done = subprocess.run(configure, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "the oneDNN convolutions are not built" in done.stderr and "no C++ compiler was found" in done.stderr
    install = [CMAKE, "--install", str(build), "--prefix", str(tmp_path / "prefix")]
    assert subprocess.run(install, capture_output=True, env=env, timeout=300).returncode == 0
    installed = tmp_path / "prefix" / "cnn_jax" / "kernels"
    assert sorted(p.name for p in installed.iterdir()) == [onednn.NOT_BUILT_NOTE]
    assert (installed / onednn.NOT_BUILT_NOTE).read_text().startswith("no C++ compiler was found")
