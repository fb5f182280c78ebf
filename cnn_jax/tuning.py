"""The library's speed defaults, and the switch back to the plain formulation.

Three choices speed up the float32 training step on CPU (measured: the README's speed section and
benchmarks/results/train_step_speed.json):

* Convolutions run on oneDNN (forward, input and kernel gradients) where the install built
  cnn_jax/kernels (a C++ compiler and PyPI's oneDNN; otherwise XLA's, and the manifest says why).
  `CNN_JAX_NO_ONEDNN=1` keeps XLA's convolutions and the other two choices.
* XLA's CPU compiler (jaxlib 0.10) hands convolutions to YNNPACK, which runs them on one thread; the
  flag below keeps YNNPACK for reductions, dots and elementwise work but sends convolutions to
  XLA's multi-threaded Eigen kernels. It is a CPU-compiler flag: GPU and TPU programs are untouched.
* Non-overlapping max pooling has a hand-written gradient (`cnn_jax.models.layers.max_pool`) equal to
  `nn.max_pool`'s, ties included, without the reduce-window scatter.

`CNN_JAX_PLAIN=1` in the environment turns all three off (XLA's own defaults, `nn.max_pool`). The XLA flag
is read once, when JAX starts its CPU backend, so it is added to XLA_FLAGS when `cnn_jax` is imported;
a flag of the same name already in XLA_FLAGS wins. Every run's manifest records the result.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
import warnings

PLAIN_ENV = "CNN_JAX_PLAIN"
# name -> (value, jaxlib versions [from, to) known to have the flag); an unknown XLA flag aborts the process, so
# a jaxlib outside the range gets no flag. The range: jaxlib 0.10.2 runs it here; 0.11.2 and 0.12.0.1 carry the
# flag and its LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION value in their compiler (the wheels' strings, unrun).
XLA_CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": ("-individual_convolution", (0, 10), (0, 13))}
_late: list[str] = []  # flags added after JAX had started a backend: not in effect in this process


def plain() -> bool:
    """True when the user asked for the plain formulation (CNN_JAX_PLAIN set to anything but '' or '0')."""
    return os.environ.get(PLAIN_ENV, "") not in ("", "0")


def _jaxlib_version() -> tuple[int, ...]:
    try:
        text = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return ()
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def xla_flags_to_add(current: str, jaxlib_version: tuple[int, ...]) -> list[str]:
    """The tuned flags missing from the XLA_FLAGS string `current` that this jaxlib version is known to have."""
    return [
        f"--{name}={value}"
        for name, (value, first, end) in XLA_CPU_FLAGS.items()
        if first <= jaxlib_version[:2] < end and f"--{name}=" not in current
    ]


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a JAX without this check: assume in time
        return False


def apply_xla_flags(environ=os.environ) -> list[str]:
    """Append the tuned XLA flags to environ['XLA_FLAGS'] unless plain() is asked for; the flags added.
    Warns when JAX has already started a backend in this process (the flags then reach only child processes)."""
    if plain():
        return []
    current = environ.get("XLA_FLAGS", "")
    added = xla_flags_to_add(current, _jaxlib_version())
    if added:
        environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
        if _backend_started():
            _late[:] = added
            warnings.warn(
                f"cnn_jax was imported after JAX started its backend, so {' '.join(added)} is not in "
                "effect here (CPU convolutions stay on one thread): import cnn_jax before using JAX, or put "
                "the flag in XLA_FLAGS yourself",
                stacklevel=2,
            )
    return added


def describe() -> dict[str, object]:
    """What a manifest records: the formulation, XLA_FLAGS, and flags that came too late to take effect."""
    return {
        "formulation": "plain" if plain() else "tuned",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "xla_flags_not_in_effect": list(_late),
    }
