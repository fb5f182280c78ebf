"""The registry of published results (experiments/expected.toml) and `cnn-jax reproduce`: the shipped registry
resolves to runs without training, a mistaken registry is a one-line error naming the entry and the field, each
tolerance kind compares as written, and a tiny registry runs end to end, then skips its finished runs."""

from __future__ import annotations

import json
import re

import pytest

from cnn_jax import cli, provenance, rundir
from cnn_jax import config as config_lib
from cnn_jax.errors import UserError
from cnn_jax.reproduce import (
    Options,
    Outcome,
    Tolerance,
    compare,
    expand,
    failures,
    load_registry,
    markdown,
    measure,
    metric_values,
    run_entry,
    skip_reason,
    version_differences,
)

from sweep_helpers import ROOT, TINY, cnn_jax, experiment

DROP = object()  # a field left out of an entry
SINGLE = TINY.split("\n\ndef get_sweep")[0] + "\n"  # the tiny experiment as a single config (no sweep)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for plain text
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def entry(**changes) -> dict:
    fields = {
        "name": "tiny",
        "claim": "the tiny net learns something",
        "source": "tests",
        "experiment": "tiny.py",
        "preset": "default",
        "metric": "final_accuracy",
        "published": 50.0,
        "tolerance": {"minimum": 10.0},
        "seeds": 2,
        "hardware": "cpu",
        "verified": False,
        "budget_minutes": 1,
    }
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not DROP}


def write_registry(path, *entries: dict):
    path.write_text(
        "".join("[[entry]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in e.items()) + "\n" for e in entries)
    )
    return path


def single_config(tmp_path, name="single.py"):
    path = tmp_path / name
    path.write_text(SINGLE)
    return path


# ----------------------------------------------------------------------------- the shipped registry


def test_the_shipped_registry_parses_and_every_entry_resolves_to_its_runs_without_training(monkeypatch):
    monkeypatch.chdir(ROOT)
    entries = {e.name: e for e in load_registry(ROOT / "experiments" / "expected.toml")}
    assert {
        "seed_cnn_fashion_mnist",
        "lenet5_mnist",
        "fashion_mnist_readme_2conv",
        "allcnn_c_cifar10",
        "resnet20_cifar10",
    } <= set(entries)
    for e in entries.values():
        runs = expand(e).runs
        assert len(runs) == e.seeds and {r.variant for r in runs} == {e.variant or ""}
    assert entries["seed_cnn_fashion_mnist"].tolerance == Tolerance("minimum", 91.0)
    assert entries["lenet5_mnist"].tolerance == Tolerance("minimum", 99.0)
    for name, model, error in (("allcnn_c_cifar10", "allcnn_all_c", 9.08), ("resnet20_cifar10", "resnet20", 8.75)):
        e = entries[name]
        assert (e.hardware, e.verified, e.metric, e.published) == ("gpu", False, "final_error", error)
        assert {r.config.model.name for r in expand(e).runs} == {model}
        assert e.command == f"cnn-jax reproduce --only {name} --hardware gpu"
    assert all(e.hardware == "cpu" for n, e in entries.items() if not n.endswith("cifar10"))


def test_seed_0_of_a_single_config_entry_is_the_plain_train_run_so_a_finished_one_is_reused(tmp_path):
    path = single_config(tmp_path)
    runs = expand(load_registry(write_registry(tmp_path / "r.toml", entry(experiment=str(path))))[0]).runs
    assert [(r.name, r.config.seed) for r in runs] == [("seed=0", 0), ("seed=1", 1)]
    assert runs[0].run_id == config_lib.run_id(config_lib.load_experiment(str(path)))


# ----------------------------------------------------------------------------- mistakes in a registry


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"colour": "red"}, "entry 'tiny': unknown field 'colour'"),
        ({"seed": 2}, "entry 'tiny': unknown field 'seed'. Did you mean 'seeds'?"),
        ({"source": DROP}, "entry 'tiny': missing field 'source'"),
        ({"name": "Tiny Net"}, "entry #1: field 'name' must be lower-case"),
        ({"metric": "top1_accuracy"}, "entry 'tiny': field 'metric': unknown value 'top1_accuracy'"),
        ({"hardware": "tpu"}, "entry 'tiny': field 'hardware': unknown value 'tpu'"),
        ({"seeds": 0}, "entry 'tiny': field 'seeds' is how many seeds to run: an integer >= 1, got 0"),
        ({"published": 120.0}, "entry 'tiny': field 'published' must be a percentage from 0 to 100, got 120.0"),
        ({"budget_minutes": 0}, "field 'budget_minutes' must be a number of minutes > 0"),
        ({"verified": ""}, "field 'verified' must be false, true or a note"),
        (
            {"published": DROP, "verified": "2026-11-22, 2-core CPU: 91.70%"},
            "entry 'tiny': a verified entry needs field 'published'",
        ),
        ({"tolerance": {"minimum": 91.0, "absolute": 1.0}}, "field 'tolerance' must be exactly one of"),
        ({"tolerance": 1.0}, "field 'tolerance' must be exactly one of"),
        ({"tolerance": {"within": 1.0}}, "tolerance kind: unknown value 'within'"),
        ({"tolerance": {"absolute": -1.0}}, "tolerance absolute must be a number >= 0, got -1.0"),
        ({"tolerance": {"ci": 95}}, "tolerance ci must be a confidence level between 0 and 1"),
        ({"tolerance": {"ci": 0.95}, "seeds": 1}, "tolerance ci needs a confidence interval, hence seeds >= 2"),
        ({"tolerance": {"absolute": 1.0}, "published": DROP}, "tolerance absolute compares with field 'published'"),
    ],
)
def test_a_mistaken_entry_is_a_one_line_error_naming_the_entry_and_the_field(tmp_path, changes, message):
    path = write_registry(tmp_path / "r.toml", entry(**changes))
    with pytest.raises(UserError, match=re.escape(message)) as caught:
        load_registry(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[entry]\nname = 1\n", "is not valid TOML"),
        ("title = 'x'\n", "unknown top-level key 'title'"),
        ("", "has no [[entry]] tables"),
    ],
)
def test_a_registry_that_is_not_a_list_of_entries_is_refused(tmp_path, text, message):
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(message)):
        load_registry(path)


def test_missing_registries_and_duplicate_names_are_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist; give one with --registry"):
        load_registry(tmp_path / "none.toml")
    with pytest.raises(UserError, match="two entries are named 'tiny'"):
        load_registry(write_registry(tmp_path / "r.toml", entry(), entry()))


@pytest.mark.parametrize(
    "kind, changes, message",
    [
        ("single", {"variant": "downsample=max"}, "single.py' is a single config (no get_sweep): drop field 'variant'"),
        ("sweep", {}, "has 2 variants (downsample=max, downsample=avg); name one in field 'variant'"),
        ("sweep", {"variant": "downsample=maxx"}, "unknown value 'downsample=maxx'. Did you mean 'downsample=max'?"),
        (
            "sweep",
            {"variant": "downsample=max", "seeds": 3},
            "has 2 seeds of variant 'downsample=max' but field 'seeds' asks for 3",
        ),
        ("missing", {}, "registry entry 'tiny': experiment file"),
    ],
)
def test_an_entry_whose_runs_cannot_be_resolved_names_the_entry_and_the_field(tmp_path, kind, changes, message):
    path = {"single": single_config, "sweep": experiment, "missing": lambda tmp: tmp / "missing.py"}[kind](tmp_path)
    registry = write_registry(tmp_path / "r.toml", entry(experiment=str(path), **changes))
    with pytest.raises(UserError, match=re.escape(message)):
        expand(load_registry(registry)[0])


# ----------------------------------------------------------------------------- comparison


@pytest.mark.parametrize(
    "values, published, tolerance, mean, within",
    [
        ([91.5, 91.8], 91.0, Tolerance("minimum", 91.0), 91.65, True),
        ([91.0, 91.0], 91.0, Tolerance("minimum", 91.0), 91.0, True),  # the bound itself passes
        ([90.5, 91.3], 91.0, Tolerance("minimum", 91.0), 90.9, False),
        ([8.5, 9.1], 9.08, Tolerance("maximum", 9.0), 8.8, True),
        ([9.2, 9.4], 9.08, Tolerance("maximum", 9.0), 9.3, False),
        ([92.4, 92.8], 91.6, Tolerance("absolute", 1.0), 92.6, True),  # |92.6 - 91.6| = 1.0, despite binary rounding
        ([92.8, 93.0], 91.6, Tolerance("absolute", 1.0), 92.9, False),
        ([90.0, 91.0], 91.6, Tolerance("absolute", 1.0), 90.5, False),
    ],
)
def test_bound_and_absolute_tolerances_compare_the_mean_over_seeds(values, published, tolerance, mean, within):
    result = compare(values, published, tolerance)
    assert result.mean == pytest.approx(mean) and result.within is within


def test_a_ci_tolerance_asks_whether_the_published_value_lies_in_the_t_interval_of_the_mean():
    # values 1, 2, 3: mean 2, sample std 1, t(0.975, 2 df) = 4.3027, half-width 4.3027 / sqrt(3) = 2.4841
    inside, outside = compare([1, 2, 3], 4.4, Tolerance("ci", 0.95)), compare([1, 2, 3], 4.6, Tolerance("ci", 0.95))
    assert inside.ci == pytest.approx((-0.4841, 4.4841), abs=1e-4) and (inside.within, outside.within) == (True, False)
    # at 50% confidence: t(0.75, 2 df) = 0.8165, half-width 0.4714
    assert compare([1, 2, 3], 2.4, Tolerance("ci", 0.5)).ci == pytest.approx((1.5286, 2.4714), abs=1e-4)
    assert compare([2.0], 2.0, Tolerance("ci", 0.95)).within is None  # one seed has no interval
    assert compare([], 2.0, Tolerance("minimum", 1.0)).within is None


def test_an_error_metric_is_100_minus_the_accuracy_of_each_seed():
    row = {"final_accuracy": {"values": [90.92, 91.08]}, "selected_accuracy": {"values": [91.5, 91.2]}}
    assert metric_values(row, "final_error") == pytest.approx([9.08, 8.92])
    assert metric_values(row, "selected_accuracy") == [91.5, 91.2]


def test_entries_run_only_on_their_hardware_and_within_the_time_budget(tmp_path):
    cpu, gpu = load_registry(
        write_registry(tmp_path / "r.toml", entry(name="c"), entry(name="g", hardware="gpu", budget_minutes=120))
    )
    assert skip_reason(gpu, "cpu", None) == "not run (needs gpu)" and skip_reason(gpu, "all", None) is None
    assert skip_reason(cpu, "gpu", None) == "not run (cpu entry; --hardware gpu)"
    assert skip_reason(gpu, "gpu", 60) == "not run (budget 120 min > --max-minutes 60)"
    assert skip_reason(cpu, "cpu", 60) is None


# ----------------------------------------------------------------------------- reading finished runs


def finish(run_dir, accuracy: float, seconds: float = 60.0) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_result(
        run_dir,
        {
            "final": {"test_accuracy": accuracy, "test_loss": 0.3, "val_accuracy": accuracy},
            "val_best": None,
            "compile_seconds": 2.0,
            "loop_seconds": seconds - 2.0,
            "first_step": 0,
        },
    )


def test_finished_runs_are_read_compared_and_tabulated_without_training(tmp_path):
    path = single_config(tmp_path)
    passing, strict = load_registry(
        write_registry(
            tmp_path / "r.toml",
            entry(experiment=str(path)),
            entry(name="strict", experiment=str(path), tolerance={"minimum": 99.0}),
        )
    )
    runs_root = tmp_path / "runs"
    expanded = expand(passing)
    for run, accuracy in zip(expanded.runs, (0.9165, 0.9175)):
        finish(expanded.plan.run_dir(runs_root, run), accuracy)
    options = Options(runs_root, lambda e: pytest.fail("nothing should be trained"))
    outcome = run_entry(passing, options, log=lambda _: None)
    # mean 91.70, std 0.0707, t(0.975, 1 df) = 12.706: half-width 12.706 * 0.0707 / sqrt(2) = 0.64
    assert (outcome.state, outcome.verdict, outcome.finished, outcome.train_seconds) == ("compared", "yes", 2, 120.0)
    assert outcome.comparison.mean == pytest.approx(91.70)
    table = markdown([outcome, run_entry(strict, options, log=lambda _: None)], tmp_path / "r.toml", "cpu")
    assert "| `tiny` | final test acc. (%) | 50.00 | 91.70 ± 0.64 | 2/2 | mean ≥ 10.00 | yes | 2.0 min |" in table
    assert "| `strict` | final test acc. (%) | 50.00 | 91.70 ± 0.64 | 2/2 | mean ≥ 99.00 | no | 2.0 min |" in table
    assert "Per seed: 91.65, 91.75" in table
    assert failures([outcome, run_entry(strict, options, log=lambda _: None)]) == [
        "strict (obtained 91.70, needs mean ≥ 99.00)"
    ]


def test_an_entry_with_unfinished_runs_is_incomplete_and_counts_as_a_failure(tmp_path):
    e = load_registry(write_registry(tmp_path / "r.toml", entry(experiment=str(single_config(tmp_path)))))[0]
    expanded = expand(e)
    finish(expanded.plan.run_dir(tmp_path / "runs", expanded.runs[0]), 0.9)
    outcome = measure(expanded, tmp_path / "runs")
    assert (outcome.state, outcome.verdict) == ("incomplete", "incomplete (1/2 runs)")
    assert failures([outcome, Outcome(e, "not run (needs gpu)")]) == ["tiny (incomplete (1/2 runs))"]


def test_cli_lists_the_registry_and_dry_run_shows_each_entrys_runs_and_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "allcnn_c_cifar10  [gpu, 3 seeds" in listed and "command:   cnn-jax reproduce --only lenet5_mnist" in listed
    assert (
        cli.main(["reproduce", "--dry-run", "--only", "lenet5_mnist", "resnet20_cifar10", "--runs-root", str(tmp_path)])
        == 0
    )
    out = capsys.readouterr().out
    assert "3 runs: 0 done, 0 running, 0 failed, 3 pending" in out and "--only lenet5_mnist" in out
    assert (
        "resnet20_cifar10: not run (needs gpu); alone it runs with: cnn-jax reproduce --only resnet20_cifar10 "
        "--hardware gpu" in out
    )
    assert not (tmp_path / "reproduce.md").exists()
    assert cli.main(["reproduce", "--only", "lenet5"]) == 2
    assert "Did you mean 'lenet5_mnist'?" in capsys.readouterr().err


# ----------------------------------------------------------------------------- package versions of the runs


def write_manifest(run_dir, packages: dict, lock: dict | None = None, resumes: tuple = ()) -> None:
    manifest = {"packages": packages, **({"lock": lock} if lock is not None else {}), "resumes": list(resumes)}
    (run_dir / rundir.MANIFEST).write_text(json.dumps(manifest))


def test_reproduce_warns_naming_each_package_whose_version_differs_from_the_one_a_run_was_made_with(tmp_path):
    e = load_registry(write_registry(tmp_path / "r.toml", entry(experiment=str(single_config(tmp_path)))))[0]
    runs_root, expanded = tmp_path / "runs", expand(e)
    here, lock = provenance.package_versions(), provenance.lock_record()
    run_dirs = [expanded.plan.run_dir(runs_root, run) for run in expanded.runs]
    for run_dir in run_dirs:
        finish(run_dir, 0.9)
        write_manifest(run_dir, here, lock)
    options = Options(runs_root, lambda e: pytest.fail("nothing should be trained"))
    warnings = []
    assert run_entry(e, options, log=lambda _: None, warn=warnings.append).version_warnings == () and warnings == []

    old_lock = {"file": "locks/py3.11-linux-x86_64.txt", "sha256": "ab" * 32, "matches": True, "differences": {}}
    write_manifest(run_dirs[0], {**here, "flax": "0.11.0"}, lock)
    write_manifest(run_dirs[1], here, lock, resumes=({"packages": {**here, "jax": "0.4.35"}, "lock": old_lock},))
    outcome = run_entry(e, options, log=lambda _: None, warn=warnings.append)
    here_lock = f"{lock['file']} sha256 {lock['sha256'][:12]}" if lock.get("file") else "no lock"
    assert warnings == [
        "warning: tiny: runs made with other versions than this environment's: "
        f"flax 0.11.0 (seed=0) vs {here['flax']} here; jax 0.4.35 (seed=1 resume 1) vs {here['jax']} here; "
        f"lock locks/py3.11-linux-x86_64.txt sha256 abababababab (seed=1 resume 1) vs {here_lock} here."
    ]
    assert outcome.passed  # a warning, not a failure
    assert f"  Warning: {warnings[0].removeprefix('warning: tiny: ')}" in markdown(
        [outcome], tmp_path / "r.toml", "cpu"
    )


def test_version_differences_group_the_runs_by_recorded_version_and_ignore_what_is_not_recorded_here():
    here = {"jax": "0.10.2", "flax": "0.12.8"}
    lock = {"file": None, "why": "no lock for py3.12-linux-x86_64"}
    segments = [(f"seed={i}", {"packages": {"jax": "0.10.1" if i < 4 else "0.10.0", "numpy": "1.0"}}) for i in range(5)]
    segments.append(("seed=5", {"packages": here, "lock": lock}))  # equal, and both without a lock
    assert version_differences(segments, here, lock) == ["jax 0.10.1 (4 runs), 0.10.0 (seed=4) vs 0.10.2 here"]


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_reproduce_trains_a_tiny_registry_compares_and_a_second_call_skips_training(tmp_path, fashion_data_dir):
    path = single_config(tmp_path)
    registry = write_registry(
        tmp_path / "r.toml",
        entry(name="tiny_pass", experiment=str(path), tolerance={"minimum": 1.0}),
        entry(name="tiny_strict", experiment=str(path), tolerance={"minimum": 99.9}),
        entry(name="tiny_gpu", experiment=str(path), hardware="gpu"),
    )
    runs_root = tmp_path / "runs"
    args = ("reproduce", "--registry", str(registry), "--runs-root", str(runs_root), "--jobs", "2")
    first = cnn_jax(*args, data_dir=fashion_data_dir)
    assert first.returncode == 1, first.stderr + first.stdout
    assert re.search(r"not within tolerance: tiny_strict \(obtained \d+\.\d\d, needs mean ≥ 99\.90\)", first.stderr)
    assert re.search(
        r"\| `tiny_pass` \| final test acc\. \(%\) \| 50\.00 \| \d+\.\d\d ± \d+\.\d\d \| 2/2 \| "
        r"mean ≥ 1\.00 \| yes \| \d+\.\d min \|",
        first.stdout,
    ), first.stdout
    assert "| `tiny_gpu` |" in first.stdout and "not run (needs gpu)" in first.stdout
    assert "tiny_strict: " in first.stdout and "2 runs, 2 done or running elsewhere" in first.stdout
    results = sorted(runs_root.glob("tiny/*/result.json"))
    assert len(results) == 2 and (runs_root / "tiny" / "sweep-default.json").exists()
    stamps = [p.stat().st_mtime_ns for p in results]
    obtained = json.loads((runs_root / "reproduce.json").read_text())["entries"][0]["obtained"]

    second = cnn_jax(*args, "--only", "tiny_pass", data_dir=fashion_data_dir)
    assert second.returncode == 0, second.stderr + second.stdout
    assert "tiny_pass: " in second.stdout and "2 runs, 2 done or running elsewhere" in second.stdout
    assert [p.stat().st_mtime_ns for p in results] == stamps
    saved = json.loads((runs_root / "reproduce.json").read_text())["entries"]
    assert [e["name"] for e in saved] == ["tiny_pass"] and saved[0]["obtained"] == obtained
    assert (runs_root / "reproduce.md").read_text().startswith("# Reproduced results")
