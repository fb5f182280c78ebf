"""Loads the oneDNN convolution library (onednn_conv.cc, built by the project's install) into XLA's CPU backend.

The install builds `libcnn_jax_onednn.so` where a C++ compiler, oneDNN (PyPI `onednn-devel-cpu-gomp`) and
jaxlib's FFI headers are present; otherwise it installs a note saying why not (CMakeLists.txt). `status()` says
which happened, `describe()` puts it in run manifests; `available()` is what kernels/conv.py asks.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import jax

from cnn_jax import tuning

LIBRARY = "libcnn_jax_onednn.so"
NOT_BUILT_NOTE = "onednn_not_built.txt"  # written by CMakeLists.txt with the reason, instead of the library
ONEDNN_RUNTIME = "onednn-cpu-gomp"  # the PyPI distribution that carries libdnnl.so.3
TARGETS = ("forward", "input_grad", "kernel_grad")  # FFI handlers: cnn_jax_conv_<name>
DISABLE_ENV = "CNN_JAX_NO_ONEDNN"  # set (not '' or '0'): XLA's own convolutions even where the library is built


@dataclass(frozen=True)
class Status:
    available: bool
    detail: str  # the library's path and oneDNN's version, or why it is not in use


def _installed_file(name: str) -> Path | None:
    """`name` beside this module, or where the install put it (an editable install keeps built files elsewhere)."""
    here = Path(__file__).with_name(name)
    if here.exists():
        return here
    for distribution in importlib.metadata.distributions(name="cnn_jax"):
        for entry in distribution.files or []:
            if entry.name == name and Path(entry.locate()).exists():
                return Path(entry.locate())
    return None


def _onednn_runtime() -> Path | None:
    """libdnnl.so.3 of the onednn-cpu-gomp wheel (installed under the environment's lib/), if present."""
    try:
        files = importlib.metadata.files(ONEDNN_RUNTIME) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    return next((Path(f.locate()) for f in files if f.name == "libdnnl.so.3"), None)


@functools.cache
def status() -> Status:
    """Loads the library and registers its FFI targets for the CPU, once per process; what came of it."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return Status(False, f"switched off by {DISABLE_ENV}")
    library = _installed_file(LIBRARY)
    if library is None:
        note = _installed_file(NOT_BUILT_NOTE)
        reason = note.read_text().strip() if note else "the install did not build it (no build note found)"
        return Status(False, f"not built: {reason}")
    runtime = _onednn_runtime()
    if runtime is None:
        return Status(False, f"{library} needs libdnnl.so.3 from the {ONEDNN_RUNTIME} package, which is not installed")
    try:
        ctypes.CDLL(str(runtime), mode=ctypes.RTLD_GLOBAL)  # so that the loader finds it for the library below
        handle = ctypes.CDLL(str(library))
        for target in TARGETS:
            capsule = jax.ffi.pycapsule(getattr(handle, f"cnn_jax_conv_{target}"))
            jax.ffi.register_ffi_target(f"cnn_jax_conv_{target}", capsule, platform="cpu")
        handle.cnn_jax_onednn_version.restype = ctypes.c_char_p
        version = handle.cnn_jax_onednn_version().decode()
    except (OSError, AttributeError) as error:
        detail = f"{library} could not be loaded: {error}"
        advice = "convolutions run on XLA's own kernels (reinstall cnn_jax to rebuild it)"
        warnings.warn(f"cnn_jax: {detail}; {advice}", stacklevel=2)
        return Status(False, detail)
    return Status(True, f"{library} (oneDNN {version}, {sys.platform})")


def available() -> bool:
    """Whether convolutions go to oneDNN: the library is loaded and the plain formulation is not asked for."""
    return not tuning.plain() and status().available


def describe() -> dict[str, object]:
    """What a manifest records: whether CPU convolutions run on oneDNN, with the library and version, or why not."""
    if tuning.plain():
        return {"onednn_convolutions": False, "onednn_detail": f"not used: {tuning.PLAIN_ENV} is set"}
    return {"onednn_convolutions": status().available, "onednn_detail": status().detail}
