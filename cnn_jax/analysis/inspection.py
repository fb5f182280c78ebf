"""Read checkpoints without the dataset or the optimizer: saved steps, tensor statistics, diffs.

A checkpoint is restored as raw arrays (Orbax's `StandardRestore` without a target), so optax
states come back as plain lists and dicts: the optimizer summary names them by their fields.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from cnn_jax import config as config_lib
from cnn_jax.checkpoints import COLLECTIONS, Source, flatten, locate, model_variables, read_checkpoint
from cnn_jax.errors import UserError

METRIC_NAMES = ("eval_loss", "eval_accuracy", "eval_top5")
OPTAX_STATES = {  # fields of an optax state -> the transform that keeps it
    frozenset({"count", "mu", "nu"}): "scale_by_adam (moments mu, nu; step count)",
    frozenset({"trace"}): "trace (momentum)",
    frozenset({"count"}): "scale_by_schedule (step count)",
}


def tensor_stats(array: np.ndarray) -> dict[str, Any]:
    """Shape, dtype, size, mean, std, min, max, L2 norm and the fraction of exact zeros."""
    x = np.asarray(array, np.float64)
    row = {"shape": list(array.shape), "dtype": str(array.dtype), "size": int(array.size)}
    if x.size == 0:
        return {**row, **dict.fromkeys(("mean", "std", "min", "max", "l2", "zeros"))}
    return {
        **row,
        "mean": float(x.mean()),
        "std": float(x.std()),
        "min": float(x.min()),
        "max": float(x.max()),
        "l2": float(np.sqrt(np.sum(x * x))),
        "zeros": float(np.mean(x == 0)),
    }


def module_counts(flat: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per module (the path without the leaf name): its number of tensors and elements, in key order."""
    modules: dict[str, dict[str, Any]] = {}
    for key, array in flat.items():
        module = key.rsplit("/", 1)[0]
        entry = modules.setdefault(module, {"module": module, "tensors": 0, "elements": 0})
        entry["tensors"] += 1
        entry["elements"] += int(array.size)
    return list(modules.values())


def optimizer_summary(opt_state: Any, name: str | None) -> dict[str, Any]:
    """The optimizer's states: per state its transform (guessed from its fields), arrays, elements and norms."""
    groups: dict[str, dict[str, list[np.ndarray]]] = {}
    for key, array in flatten(opt_state, "opt_state").items():
        parts = key.split("/")
        field_at = next((i for i, p in enumerate(parts[1:], 1) if not p.isdigit()), len(parts) - 1)
        groups.setdefault("/".join(parts[:field_at]), {}).setdefault(parts[field_at], []).append(array)
    states = []
    for path, fields in groups.items():
        described = {field: _field_summary(arrays) for field, arrays in fields.items()}
        transform = OPTAX_STATES.get(frozenset(fields), f"state with fields {', '.join(sorted(fields))}")
        states.append({"path": path, "transform": transform, "fields": described})
    leaves = [a for fields in groups.values() for arrays in fields.values() for a in arrays]
    return {"name": name, "states": states, "arrays": len(leaves), "elements": int(sum(a.size for a in leaves))}


def _field_summary(arrays: list[np.ndarray]) -> dict[str, Any]:
    if len(arrays) == 1 and arrays[0].ndim == 0:
        return {"value": arrays[0].item()}
    total = sum(float(np.sum(np.asarray(a, np.float64) ** 2)) for a in arrays)
    return {"arrays": len(arrays), "elements": int(sum(a.size for a in arrays)), "l2": math.sqrt(total)}


def diff_tensors(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> dict[str, Any]:
    """Tensor by tensor: max |a - b| and ||a - b|| / ||a||; keys only on one side; shapes that differ."""
    rows, shapes = [], []
    for key in (k for k in first if k in second):
        a, b = np.asarray(first[key], np.float64), np.asarray(second[key], np.float64)
        if a.shape != b.shape:
            shapes.append({"key": key, "first": list(a.shape), "second": list(b.shape)})
            continue
        delta = float(np.sqrt(np.sum((a - b) ** 2)))
        norm = float(np.sqrt(np.sum(a * a)))
        rows.append(
            {
                "key": key,
                "shape": list(a.shape),
                "max_abs_diff": float(np.max(np.abs(a - b), initial=0.0)),
                "relative_change": delta / norm if norm else (0.0 if delta == 0 else None),
            }
        )
    only_first = [k for k in first if k not in second]
    only_second = [k for k in second if k not in first]
    max_abs = max((r["max_abs_diff"] for r in rows), default=0.0)
    return {
        "tensors": rows,
        "only_in_first": only_first,
        "only_in_second": only_second,
        "shape_differs": shapes,
        "max_abs_diff": max_abs,
        "identical": max_abs == 0 and not (only_first or only_second or shapes),
    }


def config_changes(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The fields of `config` that differ from the defaults (the short form of a run's config)."""
    defaults = _flat_config(config_lib.default_config().to_dict())
    return {k: v for k, v in _flat_config(config.to_dict()).items() if defaults.get(k) != v}


def _flat_config(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat_config(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = list(value) if isinstance(value, (list, tuple)) else value
    return flat


def saved_steps(source: Source, manager: ocp.CheckpointManager) -> list[dict[str, Any]]:
    """Every saved step with its eval metrics (None for mid-epoch checkpoints), best and latest marked."""
    best, latest = manager.best_step(), manager.latest_step()
    return [
        {"step": s, "metrics": manager.metrics(s), "best": s == best, "latest": s == latest}
        for s in sorted(manager.all_steps())
    ]


def inspect_checkpoint(
    path: Path, step: str | int | None = None, diff_with: Path | None = None, diff_step: str | int | None = None
) -> dict[str, Any]:
    """Everything `cnn-jax inspect` shows, as a JSON-ready dict (step default: the latest)."""
    if diff_step is not None and diff_with is None:
        raise UserError("--diff-step needs --diff OTHER: the checkpoint to compare with.")
    source = locate(path)
    manager = source.manager()
    chosen = source.pick(manager, step, "latest")
    payload = read_checkpoint(source, manager, chosen)
    config = source.config()
    variables = flatten(model_variables(payload))
    counts = {name: sum(int(a.size) for k, a in variables.items() if k.startswith(name + "/")) for name in COLLECTIONS}
    c = config.checkpoint if config else config_lib.default_config().checkpoint
    report = {
        "path": str(source.path),
        "checkpoints_dir": str(source.checkpoints_dir),
        "run_dir": str(source.run_dir) if source.run_dir else None,
        "best_by": {"metric": c.best_metric, "mode": c.best_mode},
        "steps": saved_steps(source, manager),
        "step": chosen,
        "config": config_changes(config) if config else None,
        "modules": module_counts(variables),
        "totals": {
            "params": counts["params"],
            "batch_stats": counts["batch_stats"],
            "total": counts["params"] + counts["batch_stats"],
        },
        "tensors": [{"key": key, **tensor_stats(array)} for key, array in variables.items()],
        "optimizer": optimizer_summary(
            payload["state"].get("opt_state", []), config.optimizer.name if config else None
        ),
    }
    if diff_with is not None:
        other = locate(diff_with)
        other_manager = other.manager()
        other_step = other.pick(other_manager, diff_step, "latest")
        other_variables = flatten(model_variables(read_checkpoint(other, other_manager, other_step)))
        report["diff"] = {
            "other": str(other.path),
            "other_step": other_step,
            **diff_tensors(variables, other_variables),
        }
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as text for a terminal."""
    lines = [f"checkpoints in {report['checkpoints_dir']}"]
    if report["config"] is not None:
        lines.append(
            "config (changed from defaults): "
            + ", ".join(f"{k}={v}" for k, v in report["config"].items() if k != "experiment")
        )
    lines += _steps_table(report)
    lines += ["", f"step {report['step']}: variables by module"]
    lines += _table(
        ("module", "tensors", "elements"),
        [(m["module"], str(m["tensors"]), f"{m['elements']:,}") for m in report["modules"]],
    )
    totals = report["totals"]
    lines.append(
        f"total {totals['total']:,} = params (trainable) {totals['params']:,} "
        f"+ batch-norm statistics {totals['batch_stats']:,}"
    )
    lines += ["", "tensors"]
    lines += _table(
        ("key", "shape", "dtype", "mean", "std", "min", "max", "L2", "zeros"),
        [
            (
                t["key"],
                "x".join(map(str, t["shape"])) or "scalar",
                t["dtype"],
                *(_num(t[s]) for s in ("mean", "std", "min", "max", "l2")),
                _pct(t["zeros"]),
            )
            for t in report["tensors"]
        ],
    )
    lines += ["", *_optimizer_lines(report["optimizer"])]
    if "diff" in report:
        lines += ["", *_diff_lines(report)]
    return "\n".join(lines)


def _steps_table(report: dict[str, Any]) -> list[str]:
    best_by = report["best_by"]
    rows = []
    for entry in report["steps"]:
        metrics = entry["metrics"] or {}
        marks = [f"best ({best_by['metric']}, {best_by['mode']})"] * entry["best"] + ["latest"] * entry["latest"]
        rows.append((str(entry["step"]), *(_num(metrics.get(m)) for m in METRIC_NAMES), ", ".join(marks)))
    return ["saved steps", *_table(("step", *METRIC_NAMES, ""), rows, text_columns=(4,))]


def _optimizer_lines(optimizer: dict[str, Any]) -> list[str]:
    name = f" ({optimizer['name']})" if optimizer["name"] else ""
    lines = [f"optimizer state{name}: {optimizer['arrays']} arrays, {optimizer['elements']:,} elements"]
    for state in optimizer["states"]:
        fields = []
        for field, info in state["fields"].items():
            if "value" in info:
                fields.append(f"{field}={info['value']}")
            else:
                fields.append(f"{field}: {info['arrays']} arrays, {info['elements']:,} elements, L2 {_num(info['l2'])}")
        lines.append(f"  {state['path']}  {state['transform']}: {'; '.join(fields)}")
    return lines


def _diff_lines(report: dict[str, Any]) -> list[str]:
    diff = report["diff"]
    head = f"diff: step {report['step']} vs {diff['other']} step {diff['other_step']}"
    if diff["identical"]:
        return [f"{head}: identical ({len(diff['tensors'])} tensors)"]
    lines = [f"{head}: max |a-b| {_num(diff['max_abs_diff'])}"]
    lines += _table(
        ("key", "shape", "max |a-b|", "||a-b||/||a||"),
        [
            (r["key"], "x".join(map(str, r["shape"])) or "scalar", _num(r["max_abs_diff"]), _num(r["relative_change"]))
            for r in diff["tensors"]
        ],
    )
    for key in diff["only_in_first"]:
        lines.append(f"  only in step {report['step']}: {key}")
    for key in diff["only_in_second"]:
        lines.append(f"  only in {diff['other']}: {key}")
    for entry in diff["shape_differs"]:
        lines.append(f"  shape differs: {entry['key']}: {tuple(entry['first'])} vs {tuple(entry['second'])}")
    return lines


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]], text_columns: tuple[int, ...] = ()) -> list[str]:
    """Aligned columns: the first and `text_columns` to the left, numbers to the right."""
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    left = {0, *text_columns}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return ["  " + line(r).rstrip() for r in (head, *rows)]


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
