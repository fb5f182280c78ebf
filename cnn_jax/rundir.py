"""The one place that writes run directories: config, manifest, metrics, result."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import ml_collections

from cnn_jax import config as config_lib
from cnn_jax.errors import UserError
from cnn_jax.files import write_json_atomic, write_text_atomic

CONFIG, MANIFEST, METRICS, RESULT = "config.json", "manifest.json", "metrics.jsonl", "result.json"


def default_run_dir(config: ml_collections.ConfigDict, root: Path = Path("runs")) -> Path:
    return root / config.experiment / config_lib.run_id(config)


def open_run_dir(run_dir: Path, config: ml_collections.ConfigDict, force: bool = False) -> bool:
    """Create `run_dir` or check it belongs to `config`; returns True when it already existed."""
    run_dir = Path(run_dir)
    existing = run_dir / CONFIG
    if existing.exists():
        saved = config_lib.from_json(existing.read_text())
        changed = config_lib.diff(saved, config)
        differences = [d for d in changed if d.split(":")[0] not in config_lib.EXECUTION_FIELDS]
        if changed and not differences:  # a resume that reads the data another way: same run
            write_text_atomic(existing, config_lib.to_json(config))
        if differences and not force:
            raise UserError(
                f"run directory '{run_dir}' was created by a different config ({'; '.join(differences)}). "
                "Use another --workdir, or --force to continue it with the new config."
            )
        if differences:
            write_text_atomic(existing, config_lib.to_json(config))
        return True
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(existing, config_lib.to_json(config))
    return False


def load_config(run_dir: Path) -> ml_collections.ConfigDict:
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise UserError(f"'{run_dir}' is not a run directory (no {CONFIG}). Give the directory a training run printed.")
    return config_lib.from_json(path.read_text())


def record_start(run_dir: Path, info: dict[str, Any], resumed_from: int | None) -> None:
    """Write the manifest on the first start; on a resume, append this start to its list of restarts."""
    path = Path(run_dir) / MANIFEST
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    if path.exists() and resumed_from is not None:
        manifest = json.loads(path.read_text())
        manifest.setdefault("resumes", []).append({"at": now, "from_step": resumed_from, **info})
    else:
        manifest = {"started": now, **info}
    write_json_atomic(path, manifest)


def is_imported(run_dir: Path) -> bool:
    """True for a directory `cnn-jax import-weights` wrote: pretrained weights, no training."""
    path = Path(run_dir) / MANIFEST
    return path.exists() and "weights" in json.loads(path.read_text())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """Drop records after `last_step`, so a resumed run logs each step once."""
    kept = [r for r in read_metrics(run_dir) if r["step"] <= last_step]
    write_text_atomic(Path(run_dir) / METRICS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with open(Path(run_dir) / METRICS, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    write_json_atomic(Path(run_dir) / RESULT, result)


def read_result(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RESULT
    return json.loads(path.read_text()) if path.exists() else None


def result_summary(result: dict[str, Any]) -> str:
    """One line for a finished run: final validation (if held out) and test accuracy, and test loss."""
    final = result["final"]
    val = f"val acc {100 * final['val_accuracy']:.2f}%, " if "val_accuracy" in final else ""
    return f"{val}test acc {100 * final['test_accuracy']:.2f}% (loss {final['test_loss']:.4f})"
