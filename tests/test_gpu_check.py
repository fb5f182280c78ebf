"""benchmarks/gpu_check.py end to end in its reduced CPU mode, and the pieces of it and of gpu_check.sh and
train_step_speed.py that need no GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, shared

BENCHMARKS = ROOT / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_wheel_folder_holds_the_dependencies_but_jax_jaxlib_and_torch():
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), "--requirements"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    names = [line.split(">")[0].split("=")[0].split("<")[0] for line in done.stdout.split()]
    assert {"flax", "optax", "tensorflow-datasets", "grain", "pytest"} <= set(names)
    assert not {"jax", "jaxlib", "torch"} & set(names)


def test_batch_sizes_take_a_default_and_per_model_sizes():
    speed = _module("train_step_speed")
    assert speed.parse_batch_sizes("128") == (128, {})
    assert speed.parse_batch_sizes("256,resnet50=128") == (256, {"resnet50": 128})
    with pytest.raises(ValueError, match="unknown model 'resnet51'"):
        speed.parse_batch_sizes("resnet51=8")
    with pytest.raises(ValueError, match="not a positive batch size"):
        speed.parse_batch_sizes("0")
    opts = speed.parse_args([])  # the CPU defaults stay as they were
    assert opts.batch_size == 128 and opts.models == "seed_cnn,resnet20,allcnn_all_c" and opts.dtype == "float32"
    assert speed.row_key("torch", "float32") == "torch" and speed.row_key("project:default", "bfloat16") == (
        "project:default@bfloat16"
    )
    assert speed.label("project:default@bfloat16") == "project@bfloat16" and speed.label("project:plain") == (
        "project:plain"
    )


@pytest.mark.slow
def test_the_quick_mode_runs_every_part_on_cpu_and_writes_one_json(tmp_path):
    data = shared("cifar10-jpeg").parent
    out = tmp_path / "gpu_check.json"
    # a budget with room to spare (the quick training stops at 5 epochs), so a slower machine still runs every part
    command = [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--quick", "--budget", "150", "--data", str(data)]
    command += ["--workdir", str(tmp_path / "work"), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.exists(), done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert done.returncode == 0, json.dumps({k: v for k, v in report["parts"].items() if k != "bench"}, indent=1)

    assert report["mode"].startswith("quick") and report["passed"] is True
    assert report["total_s"] < report["budget_s"] + 30
    assert list(report["parts"]) == ["probe", "tests", "bench", "train"]
    for part in report["parts"].values():
        assert part["status"] == "passed" and part["wall_s"] <= part["budget_s"] + 30
    assert report["device"]["jax_backend"] in ("cpu", "gpu", "tpu") and report["device"]["name"]
    assert {"jax", "jaxlib", "flax", "cnn_jax"} <= set(report["versions"]) and report["host"]["python"]

    tests = report["parts"]["tests"]
    assert tests["counts"] == {"passed": 1, "failed": 0, "error": 0, "skipped": 0}
    assert tests["tests"][0]["id"].endswith("test_tiled_max_pool_gradient_under_vmap_and_in_bfloat16")

    bench = report["parts"]["bench"]
    rows = {(r["model"], r["impl"], r["dtype"]): r for r in bench["rows"]}
    assert set(rows) == {("seed_cnn", i, d) for i in ("project", "torch") for d in ("float32", "bfloat16")}
    for row in rows.values():
        assert row["train_img_s"] > 0 and row["eval_img_s"] > 0 and row["first_step_s"] > 0
    assert rows["seed_cnn", "torch", "bfloat16"]["ratio_to_torch_eager"] == pytest.approx(1.0)
    assert "| project@bfloat16 |" in bench["table"] and bench["torch_device"] == "cpu"
    assert set(bench["matmul"]["flops_per_s_by_dtype"]) == {"float32", "bfloat16"}

    train = report["parts"]["train"]
    assert train["shortened"] is True and train["preset_epochs"] == 164 and "SHORTENED" in train["note"]
    assert train["experiment"] == "experiments/resnet_cifar10.py:full" and train["model"] == "resnet20"
    assert 1 <= train["epochs"] <= 5 and 0.0 <= train["test_accuracy"] <= 1.0
    assert train["images_per_sec"] > 0 and train["calibration"]["epoch_s"] > 0
    assert f"--config.train.epochs={train['epochs']}" in train["overrides"]


def test_the_gpu_check_collects_every_file_with_device_tests():
    marked = {
        f"tests/{path.name}"
        for path in (ROOT / "tests").glob("test_*.py")
        if "@pytest.mark.device" in path.read_text() and path.name != "test_gpu_check.py"
    }
    assert marked == set(_module("gpu_check").DEVICE_TEST_FILES)
