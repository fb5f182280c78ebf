"""`cnn-jax reproduce`: the registry of published results (experiments/expected.toml), run and compared.

An entry names a published number (a paper's table, a README row), the experiment file, preset and
variant that reproduce it, the metric, a tolerance and the hardware it needs. Running an entry runs
its seeds through the sweep machinery (local backend: finished runs are skipped, interrupted ones
resume), then reads the numbers the report reads, and says whether they are within the tolerance.
It warns (without failing) when the package versions or the lock recorded in a run's manifest differ from
this environment's: numbers made with other versions need not agree to the last digit.
A single-config experiment (no `get_sweep`) is run as a sweep over seeds 0..N-1 of its config.
"""

from __future__ import annotations

import datetime
import re
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cnn_jax import config as config_lib
from cnn_jax import provenance, validation
from cnn_jax.analysis import report, stats
from cnn_jax.errors import UserError, did_you_mean, unknown_choice
from cnn_jax.files import write_json_atomic, write_text_atomic
from cnn_jax.sweep import local
from cnn_jax.sweep.plan import Plan, Run, Sweep, has_sweep, load_plan
from cnn_jax.sweep.status import run_status, status_table

REGISTRY = Path("experiments/expected.toml")
# metric: (label, report metric it comes from, whether it is 100 - that metric)
METRICS = {
    "final_accuracy": ("final test acc. (%)", "final_accuracy", False),
    "selected_accuracy": ("test acc. at best val. (%)", "selected_accuracy", False),
    "final_error": ("final test error (%)", "final_accuracy", True),
}
TOLERANCES = ("minimum", "maximum", "absolute", "ci")
HARDWARE = ("cpu", "gpu")
REQUIRED = (
    "name",
    "claim",
    "source",
    "experiment",
    "preset",
    "metric",
    "tolerance",
    "seeds",
    "hardware",
    "verified",
    "budget_minutes",
)
OPTIONAL = ("variant", "published", "note")
EPS = 1e-9  # comparisons hold up to float rounding: 92.6 - 91.6 is 0.99999... in binary
OUTPUTS = ("reproduce.md", "reproduce.json")


@dataclass(frozen=True)
class Tolerance:
    """minimum / maximum: a bound on the mean; absolute: the largest |mean - published|; ci: the confidence level."""

    kind: str
    value: float

    def describe(self) -> str:
        return {
            "minimum": f"mean ≥ {self.value:.2f}",
            "maximum": f"mean ≤ {self.value:.2f}",
            "absolute": f"published ± {self.value:.2f}",
            "ci": f"published in {100 * self.value:g}% CI",
        }[self.kind]


@dataclass(frozen=True)
class Entry:
    name: str
    claim: str
    source: str
    experiment: str
    preset: str
    metric: str
    tolerance: Tolerance
    seeds: int
    hardware: str
    verified: bool | str
    budget_minutes: float
    variant: str | None = None
    published: float | None = None
    note: str | None = None

    @property
    def spec(self) -> str:
        return f"{self.experiment}:{self.preset}"

    @property
    def command(self) -> str:
        """The command that reproduces this entry alone."""
        return f"cnn-jax reproduce --only {self.name}" + (" --hardware gpu" if self.hardware == "gpu" else "")


@dataclass(frozen=True)
class Comparison:
    values: tuple[float, ...]  # one per finished seed, in %
    mean: float | None
    std: float | None
    ci: tuple[float, float] | None
    confidence: float
    within: bool | None  # None: cannot be decided (no value; a CI from one seed)


@dataclass(frozen=True)
class EntryRuns:
    """An entry expanded: the whole plan (its record is what `cnn-jax report` reads) and the entry's runs."""

    entry: Entry
    plan: Plan
    runs: tuple[Run, ...]


@dataclass(frozen=True)
class Outcome:
    entry: Entry
    state: str  # "compared", "incomplete" or "not run (why)"
    comparison: Comparison | None = None
    finished: int = 0
    train_seconds: float | None = None  # sum over the entry's runs of result.json's compile + loop seconds
    resumed: bool = False  # some run resumed: its train time is its last segment only
    run_dirs: tuple[str, ...] = ()
    device: str | None = None
    version_warnings: tuple[str, ...] = ()  # versions in the runs' manifests that differ from this environment's

    @property
    def verdict(self) -> str:
        """yes / no / undecided, incomplete (k/n runs), or why the entry did not run."""
        if self.state == "compared":
            return {True: "yes", False: "no", None: "undecided"}[self.comparison.within]
        if self.state == "incomplete":
            return f"incomplete ({self.finished}/{self.entry.seeds} runs)"
        return self.state

    @property
    def ran(self) -> bool:
        return self.state in ("compared", "incomplete")

    @property
    def passed(self) -> bool:
        return self.state == "compared" and self.comparison.within is True


@dataclass(frozen=True)
class Options:
    runs_root: Path
    task_command: Callable[[Entry], list[str]]  # argv of one run of an entry, without `--index I`
    hardware: str = "cpu"  # cpu | gpu | all
    max_minutes: float | None = None
    jobs: int = 1
    command: str = ""  # the command line, for the sweep record


# ----------------------------------------------------------------------------- the registry


def load_registry(path: Path = REGISTRY) -> tuple[Entry, ...]:
    """Read and check the registry; every mistake is a one-line UserError naming the entry and the field."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"registry '{path}' does not exist; give one with --registry FILE.toml.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"registry '{path}' is not valid TOML: {exc}.") from None
    extra = sorted(set(data) - {"entry"})
    if extra:
        raise UserError(
            f"registry '{path}': unknown top-level key '{extra[0]}'; write each result as an [[entry]] table."
        )
    tables = data.get("entry")
    if not isinstance(tables, list) or not tables:
        raise UserError(f"registry '{path}' has no [[entry]] tables.")
    entries = [_entry(path, i, table) for i, table in enumerate(tables, 1)]
    names = [e.name for e in entries]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UserError(f"registry '{path}': two entries are named '{duplicate}'; names must be unique.")
    return tuple(entries)


def _entry(path: Path, number: int, table: dict[str, Any]) -> Entry:
    name = table.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]+", name):
        raise UserError(
            f"registry '{path}' entry #{number}: field 'name' must be lower-case letters, digits and _, got {name!r}."
        )
    where = f"registry '{path}' entry '{name}'"
    for key in table:
        if key not in REQUIRED + OPTIONAL:
            raise UserError(
                f"{where}: unknown field '{key}'.{did_you_mean(key, REQUIRED + OPTIONAL)} "
                f"Fields: {', '.join(REQUIRED + OPTIONAL)}."
            )
    missing = [key for key in REQUIRED if key not in table]
    if missing:
        raise UserError(f"{where}: missing field '{missing[0]}' (see the comment at the top of {path.name}).")
    entry = Entry(
        name=name,
        claim=_text(where, table, "claim"),
        source=_text(where, table, "source"),
        experiment=_text(where, table, "experiment"),
        preset=_text(where, table, "preset"),
        metric=_choice(where, table, "metric", METRICS),
        tolerance=_tolerance(where, table["tolerance"]),
        seeds=_count(where, table),
        hardware=_choice(where, table, "hardware", HARDWARE),
        verified=_verified(where, table["verified"]),
        budget_minutes=_number(where, table, "budget_minutes", lambda v: v > 0, "a number of minutes > 0"),
        variant=_text(where, table, "variant") if "variant" in table else None,
        published=_number(where, table, "published", lambda v: 0 <= v <= 100, "a percentage from 0 to 100")
        if "published" in table
        else None,
        note=_text(where, table, "note") if "note" in table else None,
    )
    _check_together(where, entry)
    return entry


def _text(where: str, table: dict[str, Any], key: str) -> str:
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: field '{key}' must be a non-empty string, got {value!r}.")
    return value


def _choice(where: str, table: dict[str, Any], key: str, choices: Sequence[str]) -> str:
    value = _text(where, table, key)
    if value not in choices:
        raise unknown_choice(f"{where}: field '{key}'", value, choices)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(where: str, table: dict[str, Any], key: str, ok: Callable[[float], bool], need: str) -> float:
    value = table[key]
    if not _is_number(value) or not ok(value):
        raise UserError(f"{where}: field '{key}' must be {need}, got {value!r}.")
    return float(value)


def _count(where: str, table: dict[str, Any]) -> int:
    value = table["seeds"]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"{where}: field 'seeds' is how many seeds to run: an integer >= 1, got {value!r}.")
    return value


def _verified(where: str, value: Any) -> bool | str:
    if isinstance(value, bool) or (isinstance(value, str) and value.strip()):
        return value
    raise UserError(f"{where}: field 'verified' must be false, true or a note (date, machine, value), got {value!r}.")


def _tolerance(where: str, value: Any) -> Tolerance:
    shapes = "{ minimum = X }, { maximum = X }, { absolute = X } or { ci = 0.95 }"
    if not isinstance(value, dict) or len(value) != 1:
        raise UserError(f"{where}: field 'tolerance' must be exactly one of {shapes}, got {value!r}.")
    ((kind, bound),) = value.items()
    if kind not in TOLERANCES:
        raise unknown_choice(f"{where}: tolerance kind", kind, TOLERANCES)
    if not _is_number(bound) or (kind == "absolute" and bound < 0) or (kind == "ci" and not 0 < bound < 1):
        need = {"absolute": "a number >= 0", "ci": "a confidence level between 0 and 1, e.g. 0.95"}.get(
            kind, "a number"
        )
        raise UserError(f"{where}: tolerance {kind} must be {need}, got {bound!r}.")
    return Tolerance(kind, float(bound))


def _check_together(where: str, entry: Entry) -> None:
    """Rules between fields: what needs a published value, what needs several seeds."""
    if entry.published is None and entry.verified is not False:
        raise UserError(
            f"{where}: a verified entry needs field 'published' (the value it was checked against); "
            "add it or set verified = false."
        )
    if entry.published is None and entry.tolerance.kind in ("absolute", "ci"):
        raise UserError(f"{where}: tolerance {entry.tolerance.kind} compares with field 'published', which is missing.")
    if entry.tolerance.kind == "ci" and entry.seeds < 2:
        raise UserError(f"{where}: tolerance ci needs a confidence interval, hence seeds >= 2 (got {entry.seeds}).")


def select(entries: Sequence[Entry], only: Sequence[str] | None) -> tuple[Entry, ...]:
    """The entries named by --only (all when None), in registry order."""
    names = [e.name for e in entries]
    for name in only or ():
        if name not in names:
            raise unknown_choice("--only", name, names)
    return tuple(e for e in entries if not only or e.name in only)


def skip_reason(entry: Entry, hardware: str, max_minutes: float | None) -> str | None:
    """Why an entry is not run with these options (None: it runs)."""
    if hardware != "all" and entry.hardware != hardware:
        return "not run (needs gpu)" if entry.hardware == "gpu" else f"not run (cpu entry; --hardware {hardware})"
    if max_minutes is not None and entry.budget_minutes > max_minutes:
        return f"not run (budget {entry.budget_minutes:g} min > --max-minutes {max_minutes:g})"
    return None


# ----------------------------------------------------------------------------- runs of an entry


def expand(entry: Entry) -> EntryRuns:
    """The entry's runs: the first `seeds` runs of its variant in the experiment's sweep, or seeds
    0..seeds-1 of a single-config experiment. Expanding validates every config; nothing is trained."""
    where = f"registry entry '{entry.name}'"
    try:
        if has_sweep(entry.spec):
            plan = load_plan(entry.spec)
            if plan.sweep.tuning:
                raise UserError(
                    f"{plan.spec} tunes its nuisance settings before its final runs; a registry entry "
                    "names a preset with fixed settings (the published recipe)."
                )
        elif entry.variant is not None:
            raise UserError(f"'{entry.experiment}' is a single config (no get_sweep): drop field 'variant'.")
        else:
            plan = seed_plan(entry.spec, entry.seeds)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    variants = list(dict.fromkeys(run.variant for run in plan.runs))
    variant = entry.variant if entry.variant is not None else variants[0] if len(variants) == 1 else None
    if variant is None:
        raise UserError(
            f"{where}: {plan.spec} has {len(variants)} variants ({', '.join(variants)}); name one in field 'variant'."
        )
    if variant not in variants:
        raise unknown_choice(f"{where}: field 'variant' of {plan.spec}", variant, variants)
    runs = tuple(run for run in plan.runs if run.variant == variant)[: entry.seeds]
    if len(runs) < entry.seeds:
        raise UserError(
            f"{where}: {plan.spec} has {len(runs)} seeds of variant '{variant}' but field 'seeds' asks "
            f"for {entry.seeds}; lower it or add seeds to get_sweep."
        )
    return EntryRuns(entry, plan, runs)


def seed_plan(spec: str, seeds: int) -> Plan:
    """A single-config experiment as a sweep with no axes over seeds 0..seeds-1: seed 0 is the plain
    `cnn-jax train FILE` run (same config, same run id), so a finished one is reused."""
    module, path, preset = config_lib.open_experiment(spec)
    base = config_lib.load_experiment(f"{path}:{preset}")
    runs = []
    for seed in range(seeds):
        config = config_lib.apply_overrides(base, {"seed": seed})
        validation.validate(config)
        runs.append(Run(seed, {}, seed, config, config_lib.run_id(config)))
    doc = (module.__doc__ or "").strip()
    return Plan(
        spec=f"{path}:{preset}",
        experiment_file=str(path),
        preset=preset,
        experiment=base.experiment,
        question=doc.splitlines()[0] if doc else base.experiment,
        sweep=Sweep(axes=(), seeds=tuple(range(seeds))),
        baseline={},
        overrides={},
        runs=tuple(runs),
    )


def run_task(entry: Entry, index: int, runs_root: Path, paths) -> str:
    """One run of an entry, as a child of `run_entry` executes it (claim, skip if finished, train or resume)."""
    from cnn_jax.sweep import task

    return task.run_task(expand(entry).plan, index, runs_root, paths)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def run_entry(entry: Entry, options: Options, log=print, warn=_stderr) -> Outcome:
    """Train the entry's unfinished runs (local backend), then compare what its runs obtained; `warn` gets a line
    when the versions its runs were made with differ from this environment's."""
    reason = skip_reason(entry, options.hardware, options.max_minutes)
    if reason:
        return Outcome(entry, reason)
    expanded = expand(entry)
    plan, runs_root = expanded.plan, Path(options.runs_root)
    todo = [run for run in expanded.runs if run_status(plan, runs_root, run).state in ("pending", "failed")]
    done = len(expanded.runs) - len(todo)
    log(f"{entry.name}: {plan.spec}, {len(expanded.runs)} runs, {done} done or running elsewhere")
    if todo:
        plan.write_record(runs_root, options.command)
        local.run_local(plan, runs_root, todo, options.task_command(entry), options.jobs, log)
    outcome = measure(expanded, runs_root)
    for line in outcome.version_warnings:
        warn(f"warning: {entry.name}: {line}")
    return outcome


def measure(expanded: EntryRuns, runs_root: Path) -> Outcome:
    """What the entry's finished runs obtained, read as `cnn-jax report` reads a sweep's runs."""
    entry, plan = expanded.entry, expanded.plan
    indices = {run.index for run in expanded.runs}
    record = plan.record(command="")
    sweep = {**record, "runs": [r for r in record["runs"] if r["index"] in indices]}
    loaded = report.load_runs(sweep, plan.experiment_dir(runs_root))
    data = report.build_report(sweep, loaded)
    results = [r["result"] for r in loaded if r["result"]]
    seconds = [r.get("compile_seconds", 0) + r.get("loop_seconds", 0) for r in results]
    return Outcome(
        entry,
        "compared" if len(results) == len(loaded) else "incomplete",
        compare(metric_values(data["variants"][0], entry.metric), entry.published, entry.tolerance),
        finished=len(results),
        train_seconds=sum(seconds) if seconds else None,
        resumed=any(r.get("first_step") for r in results),
        run_dirs=tuple(str(plan.run_dir(runs_root, run)) for run in expanded.runs),
        device="; ".join(data["provenance"]["device"]) or None,
        version_warnings=version_warnings(loaded),
    )


def manifest_segments(runs: Sequence[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(label, record) of every process that wrote one of the runs: its first start and each resume."""
    return [
        (r["name"] if i == 0 else f"{r['name']} resume {i}", info)
        for r in runs
        if r.get("manifest")
        for i, info in enumerate([r["manifest"], *r["manifest"].get("resumes", [])])
    ]


def lock_label(lock: dict[str, Any] | None) -> str:
    """A manifest's lock record in a few words: its file and the start of its sha256, or 'no lock'."""
    if not lock or not lock.get("file"):
        return "no lock"
    return f"{lock['file']} sha256 {lock['sha256'][:12]}"


def version_differences(
    segments: Sequence[tuple[str, dict[str, Any]]], packages: dict[str, str], lock: dict[str, Any]
) -> list[str]:
    """'NAME RECORDED (runs) vs CURRENT here' for each package, and the lock, whose version in some run's manifest
    is not this environment's (`packages`: name -> version here; `lock`: provenance.lock_record())."""
    here = {**packages, "lock": lock_label(lock)}
    found: dict[str, dict[str, list[str]]] = {}
    for label, info in segments:
        recorded = dict(info.get("packages") or {})
        if "lock" in info:  # manifests written before the lock have no record of it
            recorded["lock"] = lock_label(info["lock"])
        for name, version in recorded.items():
            if name in here and version != here[name]:
                found.setdefault(name, {}).setdefault(version, []).append(label)
    return [
        f"{name} "
        + ", ".join(f"{version} ({_runs(labels)})" for version, labels in versions.items())
        + f" vs {here[name]} here"
        for name, versions in found.items()
    ]


def _runs(labels: Sequence[str]) -> str:
    return ", ".join(labels) if len(labels) <= 3 else f"{len(labels)} runs"


def version_warnings(runs: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """A warning line when the runs (as report.load_runs gives them) were made with other versions than this
    environment's; empty when they agree or no run has a manifest."""
    segments = manifest_segments(runs)
    if not segments:
        return ()
    names = tuple(sorted({name for _, info in segments for name in info.get("packages") or {}}))
    differences = version_differences(segments, provenance.package_versions(names), provenance.lock_record())
    if not differences:
        return ()
    return ("runs made with other versions than this environment's: " + "; ".join(differences) + ".",)


def metric_values(variant_row: dict[str, Any], metric: str) -> list[float]:
    """An entry's metric per finished seed, in %, from a report variant row."""
    _, source, is_error = METRICS[metric]
    values = variant_row[source]["values"]
    return [100.0 - v for v in values] if is_error else list(values)


def compare(values: Sequence[float], published: float | None, tolerance: Tolerance) -> Comparison:
    """Mean and t-CI of `values` and whether they meet the tolerance (pure; numbers in %)."""
    confidence = tolerance.value if tolerance.kind == "ci" else stats.CONFIDENCE
    d = stats.describe(values, confidence)
    if d.mean is None:
        within = None
    elif tolerance.kind == "minimum":
        within = d.mean >= tolerance.value - EPS
    elif tolerance.kind == "maximum":
        within = d.mean <= tolerance.value + EPS
    elif tolerance.kind == "absolute":
        within = abs(d.mean - published) <= tolerance.value + EPS
    else:
        within = None if d.ci is None else d.ci[0] - EPS <= published <= d.ci[1] + EPS
    return Comparison(tuple(float(v) for v in values), d.mean, d.std, d.ci, confidence, within)


def run_entries(entries: Sequence[Entry], options: Options, log=print, warn=_stderr) -> list[Outcome]:
    return [run_entry(entry, options, log, warn) for entry in entries]


def failures(outcomes: Sequence[Outcome]) -> list[str]:
    """One phrase per entry that ran but is not within its tolerance (or could not be decided)."""
    return [f"{o.entry.name} ({_shortfall(o)})" for o in outcomes if o.ran and not o.passed]


def _shortfall(o: Outcome) -> str:
    if o.state == "compared" and o.comparison.within is False:
        return f"obtained {o.comparison.mean:.2f}, needs {o.entry.tolerance.describe()}"
    return o.verdict


# ----------------------------------------------------------------------------- output


def markdown(outcomes: Sequence[Outcome], registry: Path, hardware: str) -> str:
    """The reproduce table and, per entry, its claim, source, values and command."""
    header = [
        "entry",
        "metric",
        "published",
        "obtained (mean ± CI)",
        "seeds",
        "tolerance",
        "within tolerance",
        "train time (sum of runs)",
    ]
    rows = [
        [
            f"`{o.entry.name}`",
            METRICS[o.entry.metric][0],
            _pct(o.entry.published),
            _obtained(o.comparison),
            f"{o.finished}/{o.entry.seeds}",
            o.entry.tolerance.describe(),
            o.verdict,
            _minutes(o),
        ]
        for o in outcomes
    ]
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    parts = [
        "# Reproduced results\n",
        f"Registry `{registry}`, hardware `{hardware}`, {date}.\n",
        report.markdown_table(header, rows, "llrrrllr"),
        "Obtained: mean over seeds ± half-width of the Student-t confidence interval of the mean (95%, or the "
        "entry's `ci` level); one seed gives no interval. Train time: sum over the entry's runs of compile, "
        "training and evaluation seconds from result.json (*: a run was resumed, only its last segment counts).\n",
    ]
    parts += [_details(o) for o in outcomes]
    return "\n".join(parts)


def _pct(x: float | None) -> str:
    return report.DASH if x is None else f"{x:.2f}"


def _obtained(c: Comparison | None) -> str:
    if c is None or c.mean is None:
        return report.DASH
    if c.ci is None:
        return f"{c.mean:.2f} (1 seed)"
    return f"{c.mean:.2f} ± {(c.ci[1] - c.ci[0]) / 2:.2f}"


def _minutes(o: Outcome) -> str:
    return report.DASH if o.train_seconds is None else f"{o.train_seconds / 60:.1f} min" + ("*" if o.resumed else "")


def _details(o: Outcome) -> str:
    e = o.entry
    lines = [
        f"- **`{e.name}`** ({e.hardware}): {e.claim}",
        f"  Source: {e.source}.",
        f"  Runs: `{e.spec}`" + (f", variant `{e.variant}`" if e.variant else "") + f", {e.seeds} seeds; "
        f"command `{e.command}`.",
    ]
    if o.comparison and o.comparison.values:
        lines.append(
            f"  Per seed: {', '.join(f'{v:.2f}' for v in o.comparison.values)}"
            + (f"; device: {o.device}" if o.device else "")
            + "."
        )
    lines += [f"  Warning: {line}" for line in o.version_warnings]
    lines.append(f"  {_verified_text(e).capitalize()}." + (f" Note: {e.note}" if e.note else ""))
    return "\n".join(lines)


def _verified_text(e: Entry) -> str:
    return {False: "not verified", True: "verified"}.get(e.verified, f"verified {e.verified}")


def to_json(outcomes: Sequence[Outcome], registry: Path, hardware: str) -> dict[str, Any]:
    return {
        "registry": str(registry),
        "hardware": hardware,
        "entries": [
            {
                **asdict(o.entry),
                "command": o.entry.command,
                "state": o.state,
                "within": o.verdict,
                "finished": o.finished,
                "obtained": asdict(o.comparison) if o.comparison else None,
                "train_seconds": o.train_seconds,
                "resumed": o.resumed,
                "run_dirs": list(o.run_dirs),
                "device": o.device,
                "version_warnings": list(o.version_warnings),
            }
            for o in outcomes
        ],
    }


def write_outputs(outcomes: Sequence[Outcome], registry: Path, hardware: str, runs_root: Path) -> tuple[Path, Path]:
    """runs/reproduce.md and runs/reproduce.json, each written atomically."""
    md, js = (Path(runs_root) / name for name in OUTPUTS)
    write_text_atomic(md, markdown(outcomes, registry, hardware))
    write_json_atomic(js, to_json(outcomes, registry, hardware))
    return md, js


def describe_registry(entries: Sequence[Entry]) -> str:
    """`--list`: every entry with what it claims, where from, how it is checked and its command."""
    blocks = []
    for e in entries:
        blocks.append(
            "\n".join(
                [
                    f"{e.name}  [{e.hardware}, {e.seeds} seeds, ~{e.budget_minutes:g} min, {_verified_text(e)}]",
                    f"  claim:     {e.claim}",
                    f"  source:    {e.source}",
                    f"  runs:      {e.spec}" + (f", variant {e.variant}" if e.variant else ""),
                    f"  check:     {e.metric}, published {_pct(e.published)}, {e.tolerance.describe()}",
                    f"  command:   {e.command}",
                    *([f"  note:      {e.note}"] if e.note else []),
                ]
            )
        )
    return "\n\n".join(blocks)


def dry_run(entries: Sequence[Entry], options: Options) -> str:
    """`--dry-run`: per entry, its runs and their state and the command each would run, or why it would not run."""
    import shlex

    parts = []
    for entry in entries:
        reason = skip_reason(entry, options.hardware, options.max_minutes)
        if reason:
            parts.append(f"{entry.name}: {reason}; alone it runs with: {entry.command}")
            continue
        expanded = expand(entry)
        statuses = [run_status(expanded.plan, Path(options.runs_root), run) for run in expanded.runs]
        todo = sum(s.state in ("pending", "failed") for s in statuses)
        parts.append(
            f"{entry.name} ({entry.hardware}, budget ~{entry.budget_minutes:g} min): {expanded.plan.spec}\n"
            f"{status_table(statuses)}\nwould run {todo} runs, {options.jobs} at a time, each as:\n"
            f"  {shlex.join(options.task_command(entry))} --index I"
        )
    return "\n\n".join(parts)


def task_command(registry: Path, runs_root: Path, extra_args: Sequence[str]) -> Callable[[Entry], list[str]]:
    """The argv of one run of an entry: `cnn-jax reproduce --only NAME` in a child process (+ `--index I`)."""
    return lambda entry: [
        sys.executable,
        "-m",
        "cnn_jax.cli",
        "reproduce",
        "--registry",
        str(Path(registry).resolve()),
        "--only",
        entry.name,
        "--runs-root",
        str(runs_root),
        *extra_args,
    ]
