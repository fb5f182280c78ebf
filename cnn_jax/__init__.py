"""cnn_jax: careful CNN ablations in functional JAX."""

from cnn_jax import tuning

__version__ = "0.1.0"

tuning.apply_xla_flags()  # before JAX starts a backend; see cnn_jax/tuning.py

API = ("get_config", "run", "read_run", "run_sweep", "report", "summary", "build_model", "data_paths")
_LAZY = {
    **dict.fromkeys((*API, "RunResult", "SweepResult"), "cnn_jax.api"),
    "load_model": "cnn_jax.loading",
    "data_info": "cnn_jax.loading",
}  # imported on first use: JAX is slow to import
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'cnn_jax' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
