"""Export a checkpoint's model variables to a portable file (npz or safetensors) with a JSON sidecar.

Keys are '/'-joined paths, `params/...` and `batch_stats/...`; the sidecar `<file>.json` holds the
run's config, class names and the normalization inputs need (safetensors files carry it too).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn_jax import config as config_lib
from cnn_jax.checkpoints import flatten
from cnn_jax.errors import unknown_choice
from cnn_jax.files import write_bytes_atomic, write_json_atomic
from cnn_jax.loading import LoadedRun, load_run

FORMATS = ("npz", "safetensors")
PREPROCESS = "x = (uint8_image / 255 - mean) / std, per channel, images NHWC"


@dataclass(frozen=True)
class Exported:
    path: Path
    sidecar: Path
    step: int
    tensors: int


def export_run(run_dir: Path, step: str | int | None = None, fmt: str = "npz", out: Path | None = None) -> Exported:
    """Write the variables of checkpoint `step` (default: best) of `run_dir` to `out` and `<out>.json`."""
    if fmt not in FORMATS:
        raise unknown_choice("--format", fmt, FORMATS)
    encode = _safetensors_encoder() if fmt == "safetensors" else _npz_bytes
    loaded = load_run(run_dir, step)
    out = Path(out) if out else loaded.run_dir / "export" / f"step{loaded.step}.{fmt}"
    tensors = flat_variables(loaded.variables)
    info = describe(loaded, out.name, fmt)
    write_bytes_atomic(out, encode(tensors, info))
    sidecar = out.with_name(out.name + ".json")
    write_json_atomic(
        sidecar, {**info, "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in tensors.items()}}
    )
    return Exported(out, sidecar, loaded.step, len(tensors))


def flat_variables(variables: dict[str, Any]) -> dict[str, np.ndarray]:
    """{"params/stage1/.../kernel": array, ...} from nested variables."""
    return {key: np.asarray(value) for key, value in flatten(variables).items()}


def unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    """Nested variables from '/'-joined keys, ready for `model.apply`."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def read_export(path: Path) -> dict[str, Any]:
    """The nested variables of an exported .npz or .safetensors file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return unflatten(load_file(str(path)))
    with np.load(path) as data:
        return unflatten({key: data[key] for key in data.files})


def describe(loaded: LoadedRun, file_name: str, fmt: str) -> dict[str, Any]:
    """What a user of the file needs besides the tensors: model config, classes, normalization."""
    info = loaded.info
    return {
        "file": file_name,
        "format": fmt,
        "run_dir": str(loaded.run_dir),
        "step": loaded.step,
        "model": loaded.config.model.name,
        "config": json.loads(config_lib.to_json(loaded.config)),
        "data": {"name": info.name, "image_shape": list(info.image_shape), "classes": list(info.classes)},
        "normalization": {"mean": info.mean.tolist(), "std": info.std.tolist(), "preprocess": PREPROCESS},
    }


def _npz_bytes(tensors: dict[str, np.ndarray], info: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **tensors)
    return buffer.getvalue()


def _safetensors_encoder():
    from safetensors.numpy import save

    def encode(tensors: dict[str, np.ndarray], info: dict[str, Any]) -> bytes:
        metadata = {key: json.dumps(value) for key, value in info.items()}  # safetensors metadata is str -> str
        return save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata)

    return encode
