"""`cnn-jax report`: a sweep's runs aggregated over seeds into tables, figures and a reproduce block."""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn_jax import rundir
from cnn_jax.analysis import plots, stats
from cnn_jax.errors import UserError, did_you_mean
from cnn_jax.files import write_json_atomic, write_text_atomic

# name: (label, part of result.json, key, scale, decimals)
# The test split never selects: "at best val." is the test metric of the checkpoint chosen by validation.
METRICS = {
    "final_accuracy": ("final test acc. (%)", "final", "test_accuracy", 100.0, 2),
    "selected_accuracy": ("test acc. at best val. (%)", "val_best", "test_accuracy", 100.0, 2),
    "final_val_accuracy": ("final val. acc. (%)", "final", "val_accuracy", 100.0, 2),
    "final_loss": ("final test loss", "final", "test_loss", 1.0, 4),
}
PAIRED_METRICS = ("final_accuracy", "final_loss")
FILES = (
    "report.md",
    "report.json",
    "summary.csv",
    "paired.csv",
    "summary.tex",
    "paired.tex",
    "learning_curves.png",
    "intervals.png",
)
DASH = "—"
NO_AXES = "one config (no axes)"  # the variant name of a sweep of seeds only, whose runs have no levels
LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "—": "---",
    "−": "$-$",
    "Δ": r"$\Delta$",
    "×": r"$\times$",
}


@dataclass(frozen=True)
class Report:
    """A written report: its Markdown, every number behind it (`data`), and the files written (`paths`)."""

    markdown: str
    data: dict[str, Any]
    paths: dict[str, Path]

    def _repr_markdown_(self) -> str:  # a notebook renders the report
        return self.markdown


def find_sweep(path: Path, preset: str | None = None) -> Path:
    """The sweep file: `path` itself, `path/sweep-<preset>.json`, or the only sweep file in `path`."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(
            f"'{path}' does not exist. Give runs/<experiment> (the folder a sweep wrote) "
            "or one of its sweep-<preset>.json files."
        )
    found = sorted(p.name[len("sweep-") : -len(".json")] for p in path.glob("sweep-*.json"))
    if preset in found or (preset is None and len(found) == 1):
        return path / f"sweep-{preset or found[0]}.json"
    if not found:
        raise UserError(
            f"no sweep-<preset>.json in '{path}': run the sweep first (./launch.sh experiments/<name>.py PRESET)."
        )
    if preset is not None:
        raise UserError(
            f"no sweep-{preset}.json in '{path}'.{did_you_mean(preset, found)} "
            f"Found presets: {', '.join(found)}; pass one with --preset NAME."
        )
    raise UserError(f"'{path}' holds sweeps for several presets ({', '.join(found)}): pass --preset NAME to pick one.")


def load_sweep(experiment_dir: Path, preset: str | None = None) -> dict[str, Any]:
    """The launcher's sweep record (see `find_sweep` for which file)."""
    path = find_sweep(experiment_dir, preset)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"'{path}' is not a sweep file ({e}). Give the sweep-<preset>.json a launcher wrote.") from e


def write_report(path: Path, preset: str | None = None, out_dir: Path | None = None) -> Report:
    """Build the report of a sweep and write it (default: runs/<experiment>/report-<preset>/)."""
    sweep_file = find_sweep(path, preset)
    sweep = load_sweep(sweep_file)
    runs = load_runs(sweep, sweep_file.parent)
    data = build_report(sweep, runs)
    out = Path(out_dir) if out_dir is not None else sweep_file.parent / f"report-{sweep['preset']}"
    paths = {name: out / name for name in FILES}
    markdown = render_markdown(data)
    write_text_atomic(paths["report.md"], markdown)
    _write_csv(paths["summary.csv"], [_flat_variant(v) for v in data["variants"]])
    _write_csv(paths["paired.csv"], [_flat_paired(p) for p in data["paired"]])
    write_text_atomic(paths["summary.tex"], latex_table(*summary_table(data)))
    write_text_atomic(paths["paired.tex"], latex_table(*paired_table(data)))
    _plot_curves(data, runs, paths["learning_curves.png"])
    _plot_intervals(data, paths["intervals.png"])
    write_json_atomic(paths["report.json"], {**data, "files": list(FILES)})
    return Report(markdown, data, paths)


def build_report(sweep: dict[str, Any], runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """All numbers of the report (runs from `load_runs`): variants, paired comparisons, missing runs, provenance."""
    baseline = sweep.get("baseline") or {}
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(_variant(run), []).append(run)
    full = {name: {**baseline, **group[0]["levels"]} for name, group in groups.items()}
    base = next((name for name in groups if full[name] == baseline), None)
    order = sorted(groups, key=lambda name: name != base)
    return {
        "title": sweep.get("question") or sweep["experiment"],
        "experiment": sweep["experiment"],
        "preset": sweep["preset"],
        "question": sweep.get("question"),
        "baseline": baseline,
        "baseline_variant": base,
        "seeds": sweep.get("seeds"),
        "planned": len(runs),
        "finished": sum(r["result"] is not None for r in runs),
        "variants": [_variant_row(name, groups[name], name == base) for name in order],
        "paired": _with_holm(
            [
                _paired_row(v, axis, ref, metric, groups[v], groups[ref])
                for v, axis, ref in _comparisons(order, full, baseline, base)
                for metric in PAIRED_METRICS
            ]
        ),
        "missing": [
            {"name": r["name"], "run_id": r["run_id"], "state": r["state"]} for r in runs if r["result"] is None
        ],
        "without_validation": [r["name"] for r in runs if r["result"] and "val_accuracy" not in r["result"]["final"]],
        "eval_subsets": sorted(
            {(r["manifest"] or {}).get("data", {}).get("eval_subset") or 0 for r in runs if r["result"]} - {0}
        ),
        "provenance": _provenance(sweep, runs),
        "tuning": sweep.get("tuning"),
    }


def _variant(run: dict[str, Any]) -> str:
    """The run's variant name; a sweep without axes has one variant, which needs a name in tables and plots."""
    return run["variant"] or NO_AXES


def load_runs(sweep: dict[str, Any], experiment_dir: Path) -> list[dict[str, Any]]:
    """The sweep's runs in order, each with what its run directory holds so far."""
    return [_load_run(Path(experiment_dir), entry) for entry in sweep["runs"]]


def _load_run(experiment_dir: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """A sweep entry with its result (None while unfinished), metrics, manifest and progress."""
    run_dir = experiment_dir / entry["run_id"]
    result = rundir.read_result(run_dir)
    manifest_path = run_dir / rundir.MANIFEST
    return {
        **entry,
        "result": result,
        "metrics": rundir.read_metrics(run_dir) if result else [],
        "manifest": json.loads(manifest_path.read_text()) if manifest_path.exists() else None,
        "state": "finished" if result else _progress(run_dir),
    }


def _progress(run_dir: Path) -> str:
    """How far an unfinished run got, from its last complete metrics line."""
    if not run_dir.exists():
        return "not started"
    path = run_dir / rundir.METRICS
    for line in reversed(path.read_text().splitlines() if path.exists() else []):
        try:
            return f"unfinished, last logged epoch {json.loads(line)['epoch']:.2f}"
        except (ValueError, KeyError, TypeError):
            continue
    return "unfinished, nothing logged yet"


def _metric(result: dict[str, Any], metric: str) -> float | None:
    _, part, key, scale, _ = METRICS[metric]
    value = (result.get(part) or {}).get(key)
    return None if value is None else value * scale


def _by_seed(runs: Sequence[dict[str, Any]], metric: str) -> dict[int, float]:
    """Finished runs' values of `metric`, keyed by seed."""
    values = {r["seed"]: _metric(r["result"], metric) for r in runs if r["result"]}
    return {seed: value for seed, value in values.items() if value is not None}


def _variant_row(name: str, runs: Sequence[dict[str, Any]], is_baseline: bool) -> dict[str, Any]:
    results = [r["result"] for r in runs if r["result"]]
    fresh = [r["loop_seconds"] for r in results if not r.get("first_step") and r.get("loop_seconds") is not None]
    rates = [r["images_per_sec_median"] for r in results if r.get("images_per_sec_median") is not None]
    row = {
        "variant": name,
        "levels": runs[0]["levels"],
        "baseline": is_baseline,
        "planned": len(runs),
        "finished": len(results),
        "seeds": [r["seed"] for r in runs if r["result"]],
        "params": _same([(r.get("model_summary") or {}).get("params") for r in results]),
        "flops": _same([(r.get("model_summary") or {}).get("flops") for r in results]),
        "train_seconds_median": statistics.median(fresh) if fresh else None,
        "resumed_runs": len(results) - len(fresh),
        "images_per_sec_median": statistics.median(rates) if rates else None,
    }
    for metric in METRICS:
        values = list(_by_seed(runs, metric).values())
        row[metric] = {**asdict(stats.describe(values)), "values": values}
    return row


def _same(values: Sequence[Any]) -> Any:
    """The value all runs share, or None when it is missing or differs between runs."""
    return values[0] if values and all(v == values[0] for v in values) else None


def _comparisons(
    order: Sequence[str], full: dict[str, dict[str, str]], baseline: dict[str, str], base: str | None
) -> list[tuple[str, str, str]]:
    """(variant, axis, reference): one axis moved back to its baseline level; else against the baseline."""
    by_levels = {json.dumps(levels, sort_keys=True): name for name, levels in full.items()}
    found = []
    for name in order:
        changed = [axis for axis, level in full[name].items() if level != baseline.get(axis)]
        refs = [
            (axis, by_levels.get(json.dumps({**full[name], axis: baseline.get(axis)}, sort_keys=True)))
            for axis in changed
        ]
        refs = [(axis, ref) for axis, ref in refs if ref is not None]
        if not refs and changed and base is not None:
            refs = [(",".join(changed), base)]
        found += [(name, axis, ref) for axis, ref in refs]
    return found


def _paired_row(
    variant: str,
    axis: str,
    reference: str,
    metric: str,
    runs: Sequence[dict[str, Any]],
    reference_runs: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    a, b = _by_seed(runs, metric), _by_seed(reference_runs, metric)
    seeds = sorted(a.keys() & b.keys())
    result = stats.paired([a[s] for s in seeds], [b[s] for s in seeds])
    return {
        "variant": variant,
        "reference": reference,
        "axis": axis,
        "metric": metric,
        "seeds": seeds,
        **asdict(result),
    }


def _with_holm(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adds `p_holm` to each row: Holm's correction over all the rows of its metric (one family per metric)."""
    for metric in PAIRED_METRICS:
        family = [row for row in rows if row["metric"] == metric]
        for row, p_holm in zip(family, stats.holm([row["p_value"] for row in family])):
            row["p_holm"] = p_holm
    return rows


def _provenance(sweep: dict[str, Any], runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Command, code, packages, device and data of every process that wrote a run (resumes included)."""
    segments = [
        (r["name"] if i == 0 else f"{r['name']} resume {i}", info)
        for r in runs
        if r["manifest"]
        for i, info in enumerate([r["manifest"], *r["manifest"].get("resumes", [])])
    ]
    names = sorted({name for _, info in segments for name in info.get("packages", {})})
    return {
        "command": sweep.get("command"),
        "experiment_file": sweep.get("experiment_file"),
        "overrides": sweep.get("overrides", {}),
        "code": _distinct(segments, _code),
        "device": _distinct(segments, _device),
        "formulation": _distinct(segments, _formulation),
        "data": _distinct(segments, _data),
        "packages": {n: _distinct(segments, lambda m, n=n: m.get("packages", {}).get(n, "?")) for n in names},
    }


def _distinct(segments: Sequence[tuple[str, dict]], describe: Callable[[dict], str]) -> dict[str, list[str]]:
    """Each distinct description among the segments, with the segments that have it."""
    found: dict[str, list[str]] = {}
    for label, info in segments:
        found.setdefault(describe(info), []).append(label)
    return found


def _code(manifest: dict[str, Any]) -> str:
    git = manifest.get("git") or {}
    if not git.get("commit"):
        return "not a git checkout"
    return f"git {git['commit']} ({'dirty: uncommitted changes' if git.get('dirty') else 'clean'})"


def _device(manifest: dict[str, Any]) -> str:
    d = manifest.get("device") or {}
    return f"{d.get('backend', '?')} ×{d.get('count', '?')} ({d.get('kind', '?')}) on {d.get('host', '?')}" + (
        f", Python {d['python']}" if d.get("python") else ""
    )


def _formulation(manifest: dict[str, Any]) -> str:
    """cnn_jax/tuning.py's record: tuned or plain, the XLA flags the process started with, and whether its CPU
    convolutions ran on oneDNN (cnn_jax/kernels; not recorded by runs before them)."""
    t = manifest.get("tuning")
    if t is None:
        return "not recorded (runs before cnn_jax/tuning.py: XLA defaults, reshape max pooling)"
    late = f"; not in effect: {' '.join(t['xla_flags_not_in_effect'])}" if t.get("xla_flags_not_in_effect") else ""
    convolutions = ""
    if "onednn_convolutions" in t:
        version = re.search(r"oneDNN [\d.]+", t.get("onednn_detail", ""))
        on = f"oneDNN ({version.group(0) if version else 'version not recorded'})"
        convolutions = f"; CPU convolutions: {on if t['onednn_convolutions'] else 'XLA'}"
    return f"{t['formulation']}, XLA_FLAGS '{t.get('xla_flags', '')}'{late}{convolutions}"


def _data(manifest: dict[str, Any]) -> str:
    d = manifest.get("data") or {}
    prints = ", ".join(f"{split} sha256 {fp}" for split, fp in sorted((d.get("fingerprints") or {}).items()))
    used = f", {d['train_examples_used']} training examples used" if d.get("train_examples_used") else ""
    return f"{d.get('name', '?')} ({d.get('source', '?')}): {prints or 'no fingerprints'}{used}"


def _one(found: dict[str, list[str]]) -> str:
    """The shared value, or each value with the runs that have it when runs differ."""
    if len(found) <= 1:
        return next(iter(found), DASH)
    return "**runs differ:** " + "; ".join(
        f"{value} ({', '.join(labels) if len(labels) <= 3 else f'{len(labels)} runs'})"
        for value, labels in found.items()
    )


def _fmt(x: float | None, decimals: int, sign: bool = False) -> str:
    return DASH if x is None else f"{x:{'+' if sign else ''}.{decimals}f}"


def _interval(ci: Sequence[float] | None, decimals: int, sign: bool = False) -> str:
    return DASH if ci is None else f"[{_fmt(ci[0], decimals, sign)}, {_fmt(ci[1], decimals, sign)}]"


def _p(p: float | None) -> str:
    return DASH if p is None else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _si(x: float | None, unit: str = "") -> str:
    if x is None:
        return DASH
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.2f} {prefix}{unit}"
    return f"{x:g}"


def summary_table(data: dict[str, Any]) -> tuple[list[str], list[list[str]], str]:
    """Header, rows and column alignment of the per-variant table."""
    choices = (data["tuning"] or {}).get("choices")
    tuned = ["tuned setting"] if choices is not None else []
    header = ["variant", *tuned, "runs", *(METRICS[m][0] for m in METRICS), "params", "FLOPs/image", "train s/run"]
    header.append("img/s")
    rows = []
    for v in data["variants"]:
        cells = [_mean_cell(v[m], METRICS[m][4]) for m in METRICS]
        setting = [_levels(choices[v["variant"]]["levels"]) if v["variant"] in choices else DASH] if tuned else []
        rows.append(
            [
                v["variant"] + (" (baseline)" if v["baseline"] else ""),
                *setting,
                f"{v['finished']}/{v['planned']}",
                *cells,
                DASH if v["params"] is None else f"{v['params']:,}",
                _si(v["flops"]),
                _fmt(v["train_seconds_median"], 0),
                _fmt(v["images_per_sec_median"], 0),
            ]
        )
    return header, rows, "l" * (1 + len(tuned)) + "r" * (len(header) - 1 - len(tuned))


def _mean_cell(d: dict[str, Any], decimals: int) -> str:
    """'mean ± std [CI]', leaving out what one or no run cannot give."""
    if d["mean"] is None:
        return DASH
    ci = f" {_interval(d['ci'], decimals)}" if d["ci"] else ""
    return f"{_fmt(d['mean'], decimals)} ± {_fmt(d['std'], decimals)}{ci}"


def paired_table(data: dict[str, Any]) -> tuple[list[str], list[list[str]], str]:
    """Header, rows and column alignment of the paired-differences table."""
    header = [
        "comparison",
        "metric",
        "pairs",
        "mean Δ",
        "95% CI (t)",
        "p (paired t)",
        "p (Holm)",
        "95% CI (bootstrap)",
        "MDD (80%)",
        "seeds for Δ",
    ]
    rows = []
    for p in data["paired"]:
        label, decimals = METRICS[p["metric"]][0], METRICS[p["metric"]][4]
        rows.append(
            [
                f"{p['variant']} − {p['reference']}",
                label.replace("(%)", "(pp)"),
                str(p["n"]),
                _fmt(p["mean"], decimals, True),
                _interval(p["ci"], decimals, True),
                _p(p["p_value"]),
                _p(p["p_holm"]),
                _interval(p["bootstrap_ci"], decimals, True),
                _fmt(p["mdd"], decimals),
                DASH if p["seeds_needed"] is None else f"{p['seeds_needed']:,}",
            ]
        )
    return header, rows, "ll" + "r" * (len(header) - 2)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A GitHub-flavoured Markdown table."""
    line = lambda cells: "| " + " | ".join(str(c).replace("|", r"\|") for c in cells) + " |"  # noqa: E731
    rule = "|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|"
    return "\n".join([line(header), rule, *map(line, rows)]) + "\n"


def latex_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A booktabs LaTeX tabular with every cell escaped."""
    line = lambda cells: " & ".join(latex_escape(c) for c in cells) + r" \\"  # noqa: E731
    return (
        "\n".join(
            [
                r"% needs \usepackage{booktabs}",
                rf"\begin{{tabular}}{{{align}}}",
                r"\toprule",
                line(header),
                r"\midrule",
                *map(line, rows),
                r"\bottomrule",
                r"\end{tabular}",
            ]
        )
        + "\n"
    )


def latex_escape(text: str) -> str:
    """Text safe in LaTeX: specials escaped, ± — − Δ × in math or dashes."""
    return "".join(LATEX.get(c, c) for c in str(text))


def render_markdown(data: dict[str, Any]) -> str:
    """The report as Markdown: tables, what the numbers mean, missing runs and how to reproduce."""
    prov = data["provenance"]
    seeds = ", ".join(map(str, data["seeds"] or []))
    parts = [
        f"# {data['title']}\n",
        f"Experiment `{data['experiment']}`, preset `{data['preset']}`: {data['finished']} of {data['planned']} "
        f"runs finished (seeds {seeds}). Baseline: {_levels(data['baseline'])}.\n",
    ]
    if data["missing"]:
        parts.append(
            f"**Missing:** {len(data['missing'])} run(s) have no result.json and are left out of every "
            "number below: "
            + "; ".join(f"`{m['name']}` ({m['run_id']}, {m['state']})" for m in data["missing"])
            + ".\n"
        )
    if data["without_validation"]:
        parts.append(
            f"**Warning: no validation split** in {len(data['without_validation'])} run(s) "
            "(dataset.validation_fraction = 0): nothing in them was selected, and 'test acc. at best val.' is "
            "empty for them. Only their final metrics can be compared.\n"
        )
    if data["eval_subsets"]:
        parts.append(
            f"**Warning: evaluated on a subset** of {' / '.join(map(str, data['eval_subsets']))} examples per split "
            "(dataset.eval_subset): quick-check numbers, not the test set's; do not publish them.\n"
        )
    parts += [
        "## Variants\n",
        markdown_table(*summary_table(data)),
        "Cells: mean ± sample std over seeds [95% confidence interval of the mean], a dash where one run "
        "gives no spread. Train s/run: median wall "
        "time of training and evaluation without compilation, over runs that did not resume.\n",
        "## Paired differences\n",
    ]
    if data["paired"]:
        parts += [
            markdown_table(*paired_table(data)),
            "Δ = variant − reference, taken seed by seed over the seeds both finished (pairs); "
            "accuracy in percentage points (pp).\n",
        ]
    else:
        parts.append(
            f"No comparisons: no variant matches the baseline {_levels(data['baseline'])}, "
            "or the sweep has a single variant.\n"
        )
    if data["tuning"]:
        parts += _tuning_section(data["tuning"])
    parts += [
        "## How to read this\n",
        LEGEND,
        "## Reproduce\n",
        _reproduce(prov),
        "Figures: `learning_curves.png` (validation and test accuracy per epoch, train loss per log interval; "
        "mean and min..max over seeds), "
        "`intervals.png` (final test accuracy: mean, 95% CI, each seed).\n",
    ]
    return "\n".join(parts)


LEGEND = """\
- **val. and test**: the validation split is held out of the train split (dataset.validation_fraction, \
class-stratified, the same examples in every run of the sweep); only it selects: the best checkpoint, and tuned \
settings. The test split is evaluated at every epoch but never chooses anything. **test acc. at best val.** is \
the test accuracy of the checkpoint with the best validation metric (checkpoint.best_metric).
- **95% CI (t)**: if the experiment were repeated with new seeds, intervals built this way would contain the \
true mean in 95% of repetitions. It uses the Student t distribution, so with 3 seeds it is wide (about 2.5 std \
either side of the mean); a dash means one run, where no spread can be measured.
- **Paired**: a variant and its reference share seeds, so each seed gives one difference; pairing removes what \
a seed does to both runs alike. The reference moves one axis back to its baseline level.
- **p (paired t)**: the chance of a mean difference at least this far from 0 if the two variants were really \
equal (two-sided paired t-test). It is not the chance that the variant is better; p ≥ 0.05 with few seeds \
often means too few seeds, not no effect. A dash: fewer than 2 pairs, or all differences equal.
- **p (Holm)**: the p-value corrected for making several comparisons at once: among many comparisons, some \
reach p < 0.05 by chance alone. The family is every comparison in the table for the same metric (those with a \
p-value); Holm's method multiplies the smallest p by the number of comparisons, the next smallest by one fewer, \
and so on, keeping the order of the raw p-values and capping at 1. Reading only p (Holm) < 0.05 as a difference \
keeps the chance of any false alarm in the family at 5% or less. It is never below the raw p.
- **95% CI (bootstrap)**: percentile bootstrap of the mean difference (9,999 resamples, fixed seed 0, so it is \
the same every time). It needs no normality assumption but is too narrow with few seeds: with 3 it cannot \
reach beyond the smallest and largest difference. Prefer the t interval there.
- **MDD (80%)**: minimum detectable difference: the smallest true mean difference that this many pairs would \
detect (p < 0.05, two-sided paired t-test) in 80% of repeated experiments, taking the spread of the differences \
as measured. It is in the metric's units, as the table shows them (percentage points for accuracy). A mean Δ \
below the MDD with p ≥ 0.05 does not show that the variants are equal, only that a difference that small \
could not be seen; the std from few seeds is itself uncertain, so read the MDD as a rough size. A dash: as for p.
- **seeds for Δ**: how many seeds (pairs) the paired t-test would need to detect the mean Δ in 80% of \
repeated experiments (p < 0.05, two-sided), were that Δ and the measured spread of the differences the true \
ones. Far more than were run: a difference this small is hard to tell from seed-to-seed noise. Like the MDD it \
rests on a std from few seeds, so it is a rough guide. A dash: fewer than 2 pairs, all differences equal, or a \
mean Δ of 0.
"""


def _tuning_section(tuning: dict[str, Any]) -> list[str]:
    """How each variant's nuisance setting was chosen: the rule, the choices, edge warnings, the whole grid."""
    axes = ", ".join(f"{a['name']} ({', '.join(a['levels'])})" for a in tuning["axes"])
    changed = ", ".join(f"{k}={v}" for k, v in sorted(tuning["overrides"].items())) or "nothing"
    parts = [
        "## Tuning\n",
        f"Each variant was compared at its own setting of the nuisance axes {axes}: the grid point with the best "
        f"mean {tuning['metric']} ({tuning['mode']}) over tuning seeds {', '.join(map(str, tuning['seeds']))}, "
        f"on the validation split (tuning runs changed: {changed}); the final seeds then ran at that setting.\n",
    ]
    if tuning["waiting"]:
        parts.append(f"**Tuning unfinished** for {', '.join(tuning['waiting'])}: no setting chosen yet.\n")
    rows, edges = [], []
    for variant, choice in tuning["choices"].items():
        for point in choice["table"]:
            chosen = point["levels"] == choice["levels"]
            rows.append(
                [
                    variant,
                    _levels(point["levels"]),
                    str(len(point["values"])),
                    _tuning_mean(point["mean"], tuning["metric"]),
                    "chosen" if chosen else "",
                ]
            )
        edges += [f"{axis} for {variant}" for axis in choice["edges"]]
    if edges:
        parts.append(
            f"**Warning: chosen at the edge of the grid:** {'; '.join(edges)}. The best setting may lie beyond "
            "it; widen the grid before trusting the comparison.\n"
        )
    metric = f"mean {tuning['metric']}" + (" (%)" if "accuracy" in tuning["metric"] else "")
    parts.append(markdown_table(["variant", "setting", "seeds", metric, ""], rows, "llrrl"))
    return parts


def _tuning_mean(mean: float | None, metric: str) -> str:
    """A grid point's mean (accuracy in %), or 'diverged' when a tuning seed diverged there."""
    if mean is None:
        return "diverged"
    return _fmt(100 * mean if "accuracy" in metric else mean, 2)


def _reproduce(prov: dict[str, Any]) -> str:
    packages = ", ".join(f"{name} {_one(found)}" for name, found in prov["packages"].items())
    overrides = ", ".join(f"{k}={v}" for k, v in sorted((prov["overrides"] or {}).items())) or "none"
    return (
        f"```\n{prov['command'] or DASH}\n```\n\n"
        f"- Experiment file: `{prov['experiment_file'] or DASH}`; preset overrides: {overrides}\n"
        f"- Code: {_one(prov['code'])}\n- Packages: {packages or DASH}\n- Device: {_one(prov['device'])}\n"
        f"- Formulation: {_one(prov['formulation'])}\n"
        f"- Data: {_one(prov['data'])}\n"
    )


def _levels(levels: dict[str, str]) -> str:
    return ", ".join(f"{axis}={level}" for axis, level in levels.items()) or DASH


def _flat_variant(v: dict[str, Any]) -> dict[str, Any]:
    """One CSV row of numbers for a variant."""
    row = {
        "variant": v["variant"],
        "baseline": v["baseline"],
        "finished": v["finished"],
        "planned": v["planned"],
        "seeds": " ".join(map(str, v["seeds"])),
    }
    for m in METRICS:
        ci = v[m]["ci"] or (None, None)
        row.update(
            {
                f"{m}_n": v[m]["n"],
                f"{m}_mean": v[m]["mean"],
                f"{m}_std": v[m]["std"],
                f"{m}_ci_low": ci[0],
                f"{m}_ci_high": ci[1],
            }
        )
    return {**row, **{k: v[k] for k in ("params", "flops", "train_seconds_median", "images_per_sec_median")}}


def _flat_paired(p: dict[str, Any]) -> dict[str, Any]:
    """One CSV row of numbers for a paired comparison."""
    ci, boot = p["ci"] or (None, None), p["bootstrap_ci"] or (None, None)
    return {
        "variant": p["variant"],
        "reference": p["reference"],
        "axis": p["axis"],
        "metric": p["metric"],
        "n": p["n"],
        "seeds": " ".join(map(str, p["seeds"])),
        "mean": p["mean"],
        "std": p["std"],
        "ci_low": ci[0],
        "ci_high": ci[1],
        "p_value": p["p_value"],
        "p_holm": p["p_holm"],
        "bootstrap_low": boot[0],
        "bootstrap_high": boot[1],
        "mdd": p["mdd"],
        "seeds_needed": p["seeds_needed"],
    }


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rows as CSV (empty cells for missing numbers); a header-less empty file when there are none."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def _plot_curves(data: dict[str, Any], runs: Sequence[dict[str, Any]], path: Path) -> None:
    """Validation and test accuracy per epoch and train loss per log interval for each variant: mean and
    min..max over finished seeds."""
    accuracy, loss = {}, {}
    for v in data["variants"]:
        metrics = [r["metrics"] for r in runs if _variant(r) == v["variant"] and r["result"]]
        splits = {
            split: _band([{m["epoch"]: 100 * m[key] for m in ms if key in m} for ms in metrics])
            for split, key in (("val", "val_accuracy"), ("test", "test_accuracy"))
        }
        train = _band([{m["epoch"]: m["train_loss"] for m in ms} for ms in metrics])
        if any(splits.values()):
            accuracy[v["variant"]] = {split: band for split, band in splits.items() if band}
        if train:
            loss[v["variant"]] = train
    plots.learning_curves(accuracy, loss, data["title"], path)


def _plot_intervals(data: dict[str, Any], path: Path) -> None:
    """Final test accuracy per variant: mean, 95% t-CI and each seed, with the baseline mean as a line."""
    rows = [
        (v["variant"], v["final_accuracy"]["mean"], v["final_accuracy"]["ci"], v["final_accuracy"]["values"])
        for v in data["variants"]
    ]
    reference = data["variants"][0]["final_accuracy"]["mean"] if data["baseline_variant"] else None
    plots.intervals(rows, reference, "final test accuracy (%): mean, 95% t-CI, seeds", data["title"], path)


def _band(series: Sequence[dict[float, float]]) -> plots.Band | None:
    """Mean, min and max over series at the x values they all have (None when there are none)."""
    xs = sorted(set.intersection(*(set(s) for s in series))) if series else []
    if not xs:
        return None
    y = np.array([[s[x] for x in xs] for s in series])
    return xs, y.mean(axis=0), y.min(axis=0), y.max(axis=0)
