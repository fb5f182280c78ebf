"""A tiny real sweep (2 downsampling levels x 2 seeds on 640 Fashion-MNIST images, evaluated on 500 of each
split) for the sweep tests."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TINY = '''
"""Tiny sweep for tests: max vs avg downsampling."""
from cnn_jax.config import default_config
from cnn_jax.sweep.plan import Axis, Sweep, field_axis

PRESETS = ("default", "other")


def get_config(preset="default"):
    c = default_config()
    c.experiment = "tiny"
    c.model.name = "ablation_net"
    c.model.stages = 2
    c.model.width = 8
    c.dataset.train_subset = 640
    c.dataset.eval_subset = 500
    c.train.batch_size = 64
    c.train.epochs = 2
    c.train.log_every_steps = 5
    c.checkpoint.every_steps = 5
    c.schedule.warmup_epochs = 0.0
    return c


def get_sweep(preset="default"):
    {body}
'''


def experiment(
    tmp_path: Path,
    body: str = "return Sweep(axes=(field_axis('downsample', 'model.downsample', ('max', 'avg')),), seeds=(0, 1))",
    name: str = "tiny.py",
) -> Path:
    path = tmp_path / name
    path.write_text(TINY.replace("{body}", textwrap.dedent(body)))
    return path


def cnn_jax(*args: str, data_dir: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    data = ["--data-dir", str(data_dir)] if data_dir else []
    return subprocess.run(
        [sys.executable, "-m", "cnn_jax.cli", *args, *data],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        **kwargs,
    )


def results(runs_root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (runs_root / "tiny").glob("*/result.json")}


def launch_tiny_sweep(tmp: Path, data_dir: Path) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """Run the tiny sweep locally with two concurrent jobs; returns (experiment file, runs root, output)."""
    path = experiment(tmp)
    out = cnn_jax("sweep", str(path), "--runs-root", str(tmp / "runs"), "--jobs", "2", "--no-report", data_dir=data_dir)
    assert out.returncode == 0, out.stderr + out.stdout
    return path, tmp / "runs", out
