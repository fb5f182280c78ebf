"""Shared fixtures: the real datasets in ../shared/data (tests skip when absent) and TFDS data dirs."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CNN_JAX_TEST_DATA", ROOT.parent / "shared" / "data"))


_CACHE_KEY = pytest.StashKey[str]()


def pytest_configure(config):
    """Share compiled XLA programs between the suite's processes through JAX's persistent compilation
    cache: the tests compile the same tiny models hundreds of times, in this process and in the
    `cnn-jax` subprocesses they start (which inherit the environment). The cache is new for every
    session, so no test reads a program an earlier session compiled."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    config.stash[_CACHE_KEY] = tempfile.mkdtemp(prefix="cnn_jax_xla_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = config.stash[_CACHE_KEY]
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.1"


def pytest_unconfigure(config):
    if _CACHE_KEY in config.stash:
        shutil.rmtree(config.stash[_CACHE_KEY], ignore_errors=True)


def shared(name: str) -> Path:
    """Path of a real dataset copy, or skip the test saying what is missing."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data '{path}' is absent (set CNN_JAX_TEST_DATA to a folder holding {name}/)")
    return path


@pytest.fixture(scope="session")
def fashion_data_dir(tmp_path_factory) -> Path:
    """A TFDS data dir with Fashion-MNIST imported from the real IDX files (once per session)."""
    from cnn_jax.data import catalog

    source = shared("fashion-mnist")
    data_dir = tmp_path_factory.mktemp("tfds")
    catalog.import_dataset("fashion_mnist", source, data_dir)
    return data_dir


@pytest.fixture(scope="session")
def fashion_paths(fashion_data_dir):
    from cnn_jax.train.setup import DataPaths

    return DataPaths(fashion_data_dir, ())


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory, fashion_data_dir):
    """The tiny sweep of tests/sweep_helpers.py, trained once per session on real Fashion-MNIST."""
    from sweep_helpers import launch_tiny_sweep

    return launch_tiny_sweep(tmp_path_factory.mktemp("sweep"), fashion_data_dir)
