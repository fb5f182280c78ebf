"""`cnn-jax import-weights`: a pretrained weights file as a run-like directory.

The directory has what the tools read from a training run: `config.json` (the model section; dataset
'imagenet'), `manifest.json` (the weights file's record under 'weights', and under 'data' the input size,
class count and the normalization the weights expect) and one checkpoint, step 0, holding the variables.
`inspect`, `export`, `summary`, `plot-filters`, `load_model` and `transfer.source` accept it; it has no
metrics and no result. It is written to a temporary folder and renamed into place, so a failed import
leaves nothing behind.
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cnn_jax import checkpoints, provenance, rundir
from cnn_jax import config as config_lib
from cnn_jax.errors import UserError
from cnn_jax.files import write_json_atomic, write_text_atomic
from cnn_jax.weights.importer import import_weights


def default_out(root: Path, model: str, sha256: str) -> Path:
    return Path(root) / "pretrained" / f"{model}-{sha256[:12]}"


def write_imported_run(spec: str, model_section: Any, out: Path | None = None, root: Path = Path("runs")) -> Path:
    """Import `spec` into the zoo model `model_section` and write it as a run-like directory (default
    runs/pretrained/<model>-<sha256[:12]>); returns the directory."""
    imported = import_weights(spec, model_section)
    section = imported.record["model"]
    out = Path(out) if out else default_out(root, section["name"], imported.record["sha256"])
    if out.exists():
        raise UserError(f"'{out}' already exists; give another --out, or remove it to import again.")
    fields = {"experiment": "pretrained", "dataset.name": "imagenet", "dataset.validation_fraction": 0.0}
    config = config_lib.apply_overrides(
        config_lib.default_config(), {**fields, **{f"model.{k}": v for k, v in section.items()}}
    )
    preprocessing = imported.preprocessing
    size = preprocessing.input_size
    manifest = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **provenance.manifest(),
        "weights": imported.record,
        "data": {
            "name": "imagenet (pretrained weights; not read here)",
            "image_shape": [size, size, 3],
            "classes": [str(i) for i in range(imported.record["num_classes"])],
            "normalization": {"mean": list(preprocessing.mean), "std": list(preprocessing.std)},
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        write_text_atomic(staging / rundir.CONFIG, config_lib.to_json(config))
        write_json_atomic(staging / rundir.MANIFEST, manifest)
        manager = checkpoints.open_manager(staging / "checkpoints", keep=1, best_metric=None)
        checkpoints.save(manager, 0, {"state": imported.variables})
        manager.close()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
