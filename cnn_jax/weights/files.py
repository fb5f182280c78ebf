"""Find a weights file (a path, or a file name in the usual download caches) and read it into arrays.

Formats, by file extension:
- `.pth` / `.pt`: a PyTorch state dict (`torch.save`), read with `torch.load(weights_only=True)`, which
  refuses pickled code; needs PyTorch installed. Keys of a `DataParallel` model lose their 'module.'.
- `.safetensors`: a state dict in the safetensors format (no PyTorch needed).
- `.h5` / `.hdf5`: Keras weights: the Keras 2 layout of the Keras applications' files (root or
  'model_weights' group with 'layer_names', each layer listing its 'weight_names') and the Keras 3
  `.weights.h5` layout ('layers/<class>_<n>/vars/<i>', layers named by class and order).

The first two are torchvision's layout (keys 'features.0.weight', arrays NCHW / OIHW); Keras files give
one key per layer weight, '<layer>/<i>' in the layer's own order (kernel 0, bias 1).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_jax.errors import UserError

TORCH, SAFETENSORS, KERAS = "torch", "safetensors", "keras"
EXTENSIONS = {".pth": TORCH, ".pt": TORCH, ".safetensors": SAFETENSORS, ".h5": KERAS, ".hdf5": KERAS}
LAYOUTS = {TORCH: "torchvision", SAFETENSORS: "torchvision", KERAS: "keras"}
# Where the usual files come from (torchvision's model pages, keras.applications' sources): named in the
# error when one is missing. torch.hub saves them in $TORCH_HOME/hub/checkpoints, Keras in ~/.keras/models.
TORCHVISION_URL = "https://download.pytorch.org/models/"
KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
KNOWN_FILES = {
    "vgg11-bbd30ac9.pth": TORCHVISION_URL,
    "vgg13-c768596a.pth": TORCHVISION_URL,
    "vgg16-397923af.pth": TORCHVISION_URL,
    "vgg19-dcbb9e9d.pth": TORCHVISION_URL,
    "vgg11_bn-6002323d.pth": TORCHVISION_URL,
    "vgg13_bn-abd245e5.pth": TORCHVISION_URL,
    "vgg16_bn-6c64b313.pth": TORCHVISION_URL,
    "vgg19_bn-c79401a0.pth": TORCHVISION_URL,
    "resnet18-f37072fd.pth": TORCHVISION_URL,
    "resnet34-b627a593.pth": TORCHVISION_URL,
    "resnet50-0676ba61.pth": TORCHVISION_URL,
    "resnet101-63fe2227.pth": TORCHVISION_URL,
    "resnet152-394f9c45.pth": TORCHVISION_URL,
    "alexnet-owt-7be5be79.pth": TORCHVISION_URL,
    "googlenet-1378be20.pth": TORCHVISION_URL,
    "vgg16_weights_tf_dim_ordering_tf_kernels.h5": KERAS_URL + "vgg16/",
    "vgg19_weights_tf_dim_ordering_tf_kernels.h5": KERAS_URL + "vgg19/",
}


def is_weights_file(spec: str) -> bool:
    """True when `spec` names a weights file by its extension (whether or not it exists)."""
    return Path(spec).suffix.lower() in EXTENSIONS


def cache_dirs() -> list[Path]:
    """Where torch.hub and keras.applications keep downloaded weights, in the order searched."""
    home = Path.home()
    cache = Path(os.environ.get("XDG_CACHE_HOME", home / ".cache"))
    torch_home = Path(os.environ.get("TORCH_HOME", cache / "torch"))
    keras_home = Path(os.environ.get("KERAS_HOME", home / ".keras"))
    return [torch_home / "hub" / "checkpoints", keras_home / "models"]


def locate(spec: str) -> tuple[Path, str]:
    """(path, where it was found) of a weights file given as a path or as a bare file name."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path, "as given"
    if len(path.parts) == 1:
        for folder in cache_dirs():
            if (folder / path.name).is_file():
                return folder / path.name, f"in the cache {folder}"
    looked = " and in " + ", ".join(str(d) for d in cache_dirs()) if len(path.parts) == 1 else ""
    where = KNOWN_FILES.get(path.name)
    get = f"download {where}{path.name}" if where else "download it"
    raise UserError(
        f"weights file '{spec}' not found (looked at the path{looked}); {get} on a machine with internet "
        f"access and copy it to {cache_dirs()[1 if EXTENSIONS.get(path.suffix.lower()) == KERAS else 0]} or give "
        "its path."
    )


@dataclass(frozen=True)
class WeightsFile:
    """The arrays of a weights file, by key, and what identifies the file."""

    path: Path
    found: str  # where locate() found it
    format: str  # torch | safetensors | keras
    arrays: dict[str, np.ndarray]
    sha256: str

    @property
    def layout(self) -> str:
        return LAYOUTS[self.format]

    def record(self) -> dict:
        return {
            "file": str(self.path.resolve()),
            "found": self.found,
            "format": self.format,
            "layout": self.layout,
            "sha256": self.sha256,
            "bytes": self.path.stat().st_size,
        }


def read(spec: str) -> WeightsFile:
    """Locate and read a weights file; a UserError names a missing, unknown, truncated or foreign file."""
    path, found = locate(spec)
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise UserError(
            f"weights file '{path}': unknown extension '{path.suffix}'; give a .pth/.pt (PyTorch state dict), "
            ".safetensors or .h5 (Keras) file."
        )
    reader = {TORCH: _read_torch, SAFETENSORS: _read_safetensors, KERAS: _read_keras}[kind]
    arrays = reader(path)
    if not arrays:
        raise UserError(f"weights file '{path}' holds no arrays.")
    return WeightsFile(path, found, kind, arrays, _sha256(path))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unreadable(path: Path, what: str, exc: Exception) -> UserError:
    message = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return UserError(
        f"weights file '{path}' ({path.stat().st_size:,} bytes) could not be read as {what}: {message}. "
        "Is the download complete, and is the extension right?"
    )


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise UserError(
            f"reading '{path}' (a PyTorch file) needs PyTorch: pip install torch (the CPU build is enough), "
            "or save the state dict as .safetensors."
        ) from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for truncated, foreign or unsafe files
        raise _unreadable(path, "a PyTorch state dict", exc) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # a training checkpoint that holds the state dict
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise UserError(
            f"weights file '{path}' holds a {type(loaded).__name__}, not a state dict of tensors; "
            "save model.state_dict(), not the model."
        )
    return {k.removeprefix("module."): v.detach().cpu().numpy() for k, v in loaded.items()}


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return dict(load_file(path))
    except Exception as exc:  # SafetensorError, or an OSError for an unreadable file
        raise _unreadable(path, "safetensors", exc) from None


def _read_keras(path: Path) -> dict[str, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return _keras_arrays(f, path)
    except UserError:
        raise
    except Exception as exc:  # OSError for a truncated or non-HDF5 file
        raise _unreadable(path, "Keras HDF5 weights", exc) from None


def _keras_arrays(f, path: Path) -> dict[str, np.ndarray]:
    root = f["model_weights"] if "model_weights" in f else f
    if "layer_names" in root.attrs:  # Keras 2 layout, as the Keras applications' files
        arrays = {}
        for layer in root.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else str(layer)
            names = root[layer].attrs.get("weight_names", [])
            for i, name in enumerate(names):
                name = name.decode() if isinstance(name, bytes) else str(name)
                arrays[f"{layer}/{i}"] = np.asarray(root[layer][name])
        return arrays
    if "layers" in f:  # Keras 3 .weights.h5
        return {
            f"{layer}/{i}": np.asarray(group["vars"][str(i)])
            for layer, group in f["layers"].items()
            if "vars" in group
            for i in range(len(group["vars"]))
        }
    raise UserError(
        f"weights file '{path}' is an HDF5 file without Keras weights (no 'layer_names' and no 'layers' group)."
    )
