"""Where a result came from: code version, packages, devices, command line."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

import jax

from cnn_jax import tuning

PACKAGES = (
    "cnn_jax",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "tensorflow-datasets",
    "numpy",
    "ml_collections",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_state(path: Path = Path(__file__).parent) -> dict[str, object]:
    """Commit and dirty flag of the checkout holding this package (None outside a git checkout)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if commit else None}


def device_info() -> dict[str, object]:
    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "count": len(devices),
        "kind": devices[0].device_kind,
        "process_count": jax.process_count(),
        "host": platform.node(),
        "python": platform.python_version(),
    }


def manifest(command: list[str] | None = None) -> dict[str, object]:
    """Everything needed to say which code, on what, ran a command."""
    return {
        "packages": package_versions(),
        "git": git_state(),
        "device": device_info(),
        "command": list(sys.argv if command is None else command),
        "tuning": tuning.describe(),
    }
