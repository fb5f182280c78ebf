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
from cnn_jax.checkpoints import COLLECTIONS, Source, best_step, flatten, locate, model_variables, read_checkpoint
from cnn_jax.errors import UserError

METRIC_NAMES = ("val_loss", "val_accuracy", "test_loss", "test_accuracy")  # the columns of the saved steps
OPTAX_STATES = {  # fields of an optax state -> the transform that keeps it
    frozenset({"count", "mu", "nu"}): "scale_by_adam (moments mu, nu; step count)",
    frozenset({"trace"}): "trace (momentum)",
    frozenset({"count"}): "scale_by_schedule (step count)",
    frozenset({"inner_state"}): "masked (the inner state, for the parameters its mask selects)",
    frozenset({"inner_states"}): "multi_transform (an inner state per parameter label)",
}
INNER_STATES = ("inner_state", "inner_states", "inner_opt_state", "fast_state", "base_optimizer_state")  # hold states
EMPTY_STATE = "empty (a transform without state: clipping, weight decay, scaling, set_to_zero)"


def numeric(leaf: Any) -> np.ndarray | None:
    """The leaf as a float64 array when it holds real numbers (bool, int, float, bfloat16...), else None."""
    if leaf is None or isinstance(leaf, (str, bytes)):
        return None
    try:
        array = np.asarray(leaf)
        return array.astype(np.float64) if array.dtype.kind in "biufV" else None  # V: bfloat16 and kin
    except (TypeError, ValueError):  # a ragged sequence, a structured or opaque dtype
        return None


def tensor_stats(array: Any) -> dict[str, Any]:
    """Shape, dtype, size, mean, std, min, max, L2 norm and the fraction of exact zeros (None where not numbers)."""
    x, unknown = numeric(array), dict.fromkeys(("mean", "std", "min", "max", "l2", "zeros"))
    if x is None:
        return {"shape": [], "dtype": _kind(array), "size": 0, **unknown}
    row = {"shape": list(x.shape), "dtype": str(np.asarray(array).dtype), "size": int(x.size)}
    if x.size == 0:
        return {**row, **unknown}
    return {
        **row,
        "mean": float(x.mean()),
        "std": float(x.std()),
        "min": float(x.min()),
        "max": float(x.max()),
        "l2": float(np.sqrt(np.sum(x * x))),
        "zeros": float(np.mean(x == 0)),
    }


def size(leaf: Any) -> int:
    """Elements of a leaf that holds numbers; 0 for anything else."""
    x = numeric(leaf)
    return 0 if x is None else int(x.size)


def _kind(leaf: Any) -> str:
    """What a leaf that is not an array of numbers is, for a report."""
    if leaf is None:
        return "empty"
    dtype = getattr(leaf, "dtype", None)
    return f"{type(leaf).__name__} of {dtype}" if dtype is not None else type(leaf).__name__


def module_counts(flat: dict[str, Any]) -> list[dict[str, Any]]:
    """Per module (the path without the leaf name): its number of tensors and elements, in key order."""
    modules: dict[str, dict[str, Any]] = {}
    for key, array in flat.items():
        module = key.rsplit("/", 1)[0]
        entry = modules.setdefault(module, {"module": module, "tensors": 0, "elements": 0})
        entry["tensors"] += 1
        entry["elements"] += size(array)
    return list(modules.values())


def optimizer_summary(opt_state: Any, name: str | None) -> dict[str, Any]:
    """The optimizer's states, found by walking the saved tree: per state its transform (guessed from its
    fields) and per field its arrays, elements and L2 norm. Any tree is described, never refused: a state
    or leaf that fits no known kind is named as what it is."""
    states: list[dict[str, Any]] = []
    _collect_states(opt_state, "opt_state", states)
    arrays = [x for x in map(numeric, flatten(opt_state).values()) if x is not None]
    return {"name": name, "states": states, "arrays": len(arrays), "elements": int(sum(x.size for x in arrays))}


def _collect_states(node: Any, path: str, states: list[dict[str, Any]]) -> None:
    """Append the states in `node`: a chain (list) is walked part by part, a state (dict of fields) is one
    entry, and the inner states of wrappers (masked, multi_transform, ...) follow it as entries of their own."""
    if isinstance(node, dict) and node and all(str(key).isdigit() for key in node):
        node = [node[key] for key in sorted(node, key=int)]  # a tuple saved with its indices as keys
    if isinstance(node, (list, tuple)) and node:
        for i, part in enumerate(node):
            _collect_states(part, f"{path}/{i}", states)
    elif isinstance(node, dict) and node:
        names = sorted(map(str, node))
        fields = {str(k): _field_summary(list(flatten(v).values())) for k, v in node.items() if k not in INNER_STATES}
        transform = OPTAX_STATES.get(frozenset(names), f"state with fields {', '.join(names)}")
        states.append({"path": path, "transform": transform, "fields": fields})
        for key in (k for k in node if k in INNER_STATES):
            inner = node[key]
            if key == "inner_states" and isinstance(inner, dict) and inner:  # multi_transform: label -> state
                for label, state in inner.items():
                    _collect_states(state, f"{path}/{key}/{label}", states)
            else:
                _collect_states(inner, f"{path}/{key}", states)
    elif node is None or isinstance(node, (list, tuple, dict)):
        states.append({"path": path, "transform": EMPTY_STATE, "fields": {}})
    else:
        what = "an array" if numeric(node) is not None else _kind(node)
        states.append(
            {
                "path": path,
                "transform": f"not a state with fields: a bare leaf ({what})",
                "fields": {"leaf": _field_summary([node])},
            }
        )


def _field_summary(leaves: list[Any]) -> dict[str, Any]:
    """One field of a state: a scalar's value, else its arrays, elements and L2 norm, plus how many leaves are
    masked out (optax's MaskedNode, saved as None) and the kinds of leaves that are not arrays of numbers."""
    arrays = [x for x in map(numeric, leaves) if x is not None]
    if len(leaves) == 1 and len(arrays) == 1 and arrays[0].ndim == 0:
        return {"value": _scalar(leaves[0])}
    summary: dict[str, Any] = {
        "arrays": len(arrays),
        "elements": int(sum(x.size for x in arrays)),
        "l2": math.sqrt(sum(float(np.sum(x * x)) for x in arrays)) if arrays else None,
    }
    masked = sum(leaf is None for leaf in leaves)
    other = sorted({_kind(leaf) for leaf in leaves if leaf is not None and numeric(leaf) is None})
    return {**summary, **({"masked": masked} if masked else {}), **({"other": other} if other else {})}


def _scalar(leaf: Any) -> bool | int | float:
    """A 0-d array of numbers as the Python number JSON can hold."""
    array = np.asarray(leaf)
    if array.dtype.kind == "b":
        return bool(array)
    return int(array) if array.dtype.kind in "iu" else float(array.astype(np.float64))


def diff_tensors(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Tensor by tensor: max |a - b| and ||a - b|| / ||a||; keys only on one side; shapes (or kinds) that differ."""
    rows, shapes = [], []
    for key in (k for k in first if k in second):
        a, b = numeric(first[key]), numeric(second[key])
        if a is None or b is None or a.shape != b.shape:
            shapes.append({"key": key, "first": _shape(first[key], a), "second": _shape(second[key], b)})
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


def _shape(leaf: Any, array: np.ndarray | None) -> list[int] | str:
    return list(array.shape) if array is not None else _kind(leaf)


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
    """Every saved step with its evaluation metrics (None for mid-epoch checkpoints), best (by validation) and
    latest marked."""
    best, latest = best_step(manager), manager.latest_step()
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
    counts = {name: sum(size(a) for k, a in variables.items() if k.startswith(name + "/")) for name in COLLECTIONS}
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
    return ["saved steps", *_table(("step", *METRIC_NAMES, ""), rows, text_columns=(len(METRIC_NAMES) + 1,))]


def _optimizer_lines(optimizer: dict[str, Any]) -> list[str]:
    name = f" ({optimizer['name']})" if optimizer["name"] else ""
    lines = [f"optimizer state{name}: {optimizer['arrays']} arrays, {optimizer['elements']:,} elements"]
    for state in optimizer["states"]:
        fields = "; ".join(_field_text(field, info) for field, info in state["fields"].items())
        lines.append(f"  {state['path']}  {state['transform']}" + (f": {fields}" if fields else ""))
    return lines


def _field_text(field: str, info: dict[str, Any]) -> str:
    if "value" in info:
        return f"{field}={info['value']}"
    text = f"{field}: {info['arrays']} arrays, {info['elements']:,} elements, L2 {_num(info['l2'])}"
    if info.get("masked"):
        text += f", {info['masked']} masked out"
    return text + (f", not arrays: {', '.join(info['other'])}" if info.get("other") else "")


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
        first, second = _shape_text(entry["first"]), _shape_text(entry["second"])
        lines.append(f"  shape differs: {entry['key']}: {first} vs {second}")
    return lines


def _shape_text(shape: list[int] | str) -> str:
    return shape if isinstance(shape, str) else str(tuple(shape))


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
