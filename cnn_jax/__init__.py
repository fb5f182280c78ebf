"""cnn_jax: careful CNN ablations in functional JAX. The Python API is `cnn_jax.api`; its names are importable
from `cnn_jax` itself."""

from cnn_jax import tuning

__version__ = "0.1.0"

tuning.apply_xla_flags()  # before JAX starts a backend; see cnn_jax/tuning.py

# the public names (cnn_jax/api.py), imported on first use: JAX is slow to import
API = (
    "get_config",
    "run",
    "read_run",
    "RunResult",
    "run_sweep",
    "SweepResult",
    "report",
    "summary",
    "build_model",
    "load_model",
    "data_info",
    "data_paths",
    "import_weights",
    "UserError",
)
__all__ = list(API)


def __getattr__(name: str):
    if name not in API:
        raise AttributeError(f"module 'cnn_jax' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module("cnn_jax.api"), name)
