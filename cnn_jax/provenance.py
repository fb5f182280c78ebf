"""Where a result came from: code version, packages, the lock they were installed from, devices, command line."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import re
import subprocess
import sys
from pathlib import Path

import jax

from cnn_jax import tuning
from cnn_jax.kernels import onednn

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
CHECKOUT = Path(__file__).resolve().parent.parent  # the checkout holding this package, when it is one
# one exact pin of a lock file: name, optional extras, ==version; an environment marker may follow after ';'
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;]+)")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def normalize(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): lower case, each run of '-', '_', '.' as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_key(version: tuple[int, ...] = tuple(sys.version_info[:2]), system: str = sys.platform) -> str:
    """The name of the lock that fits an interpreter, as launch.sh picks it: pyX.Y-PLATFORM-MACHINE."""
    return f"py{version[0]}.{version[1]}-{system}-{platform.machine()}"


def read_lock(text: str, source: str = "lock") -> dict[str, str]:
    """The exact pins of a requirements lock (normalized name -> version); hashes, options, comments are skipped."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip().removesuffix("\\").strip()
        if not line or line.startswith(("#", "-")):  # a comment, a `--hash=` continuation, a pip option
            continue
        match = PIN.fullmatch(line.split(" --", 1)[0].split(";", 1)[0].strip())  # without options and marker
        if match is None:
            raise ValueError(f"{source}, line {number}: {line!r} is not an exact pin 'name==version'.")
        name = normalize(match.group(1))
        if name in pins:
            raise ValueError(f"{source}, line {number}: {match.group(1)} is pinned twice.")
        pins[name] = match.group(3)
    return pins


def installed_versions() -> dict[str, str]:
    """Every distribution this interpreter imports from (normalized name -> version), the first on sys.path winning."""
    versions: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions.setdefault(normalize(name), dist.version)
    return versions


def lock_differences(pins: dict[str, str], installed: dict[str, str]) -> dict[str, dict[str, str]]:
    """The locked packages whose installed version is another one (or none): name -> {locked, installed}."""
    return {
        name: {"locked": version, "installed": installed.get(name, "not installed")}
        for name, version in sorted(pins.items())
        if installed.get(name) != version
    }


def lock_record(checkout: Path = CHECKOUT, key: str | None = None) -> dict[str, object]:
    """What a manifest records of the lock that fits this interpreter: its file, sha256, and whether the installed
    versions equal its pins (with the differences); file None and why where no lock applies."""
    key = key or lock_key()
    locks = checkout / "locks"
    if not (checkout / "pyproject.toml").is_file() or not locks.is_dir():
        return {
            "file": None,
            "why": "not run from a checkout with locks/ (an installed package: pyproject.toml's ranges)",
        }
    path = locks / f"{key}.txt"
    if not path.is_file():
        have = ", ".join(sorted(p.stem for p in locks.glob("*.txt"))) or "none"
        return {"file": None, "why": f"no lock for {key} (locks/ has: {have})"}
    data = path.read_bytes()
    record = {"file": f"locks/{path.name}", "sha256": hashlib.sha256(data).hexdigest()}
    try:
        pins = read_lock(data.decode(), record["file"])
    except ValueError as exc:  # a damaged lock is recorded, not allowed to stop a run
        return {**record, "matches": None, "why": str(exc)}
    differences = lock_differences(pins, installed_versions())
    return {**record, "matches": not differences, "differences": differences}


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
        "lock": lock_record(),
        "git": git_state(),
        "device": device_info(),
        "command": list(sys.argv if command is None else command),
        "tuning": {**tuning.describe(), **onednn.describe()},
    }
