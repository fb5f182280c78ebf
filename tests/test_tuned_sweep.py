"""Tuned comparisons: nuisance axes tuned per scientific level on validation, then the final seeds at the
chosen setting; both phases through the launcher, status and report."""

from __future__ import annotations

import json

import pytest

from cnn_jax import rundir
from cnn_jax.analysis.report import _tuning_section
from cnn_jax.errors import UserError
from cnn_jax.sweep.plan import load_plan

from sweep_helpers import cnn_jax, experiment

TUNED = """return Sweep(axes=(field_axis('downsample', 'model.downsample', ('max', 'avg')),), seeds=(0, 1),
                 tuning=Tuning(axes=(field_axis('lr', 'optimizer.lr', (0.0003, 0.01)),), seeds=(100,),
                               overrides={'train.epochs': 1}))"""


def tuned_experiment(tmp_path, body: str = TUNED):
    path = experiment(tmp_path, body)
    text = path.read_text().replace("import Axis, Sweep, field_axis", "import Axis, Sweep, Tuning, field_axis")
    path.write_text(text)
    return path


def test_tuning_runs_come_first_and_final_runs_wait_for_them(tmp_path):
    plan = load_plan(str(tuned_experiment(tmp_path)), runs_root=tmp_path / "runs")
    assert [r.name for r in plan.runs] == [
        "tune:downsample=max,lr=0.0003,seed=100",
        "tune:downsample=max,lr=0.01,seed=100",
        "tune:downsample=avg,lr=0.0003,seed=100",
        "tune:downsample=avg,lr=0.01,seed=100",
    ]
    assert all(r.config.train.epochs == 1 and r.config.seed == 100 for r in plan.runs)
    assert plan.waiting == ("downsample=max", "downsample=avg") and plan.final_runs_planned == 4
    with pytest.raises(UserError, match="--index 5 .* final run whose tuning has not finished"):
        plan.run(5)
    with pytest.raises(UserError, match="--index 8: the sweep .* has runs 0..7"):
        plan.run(8)


def _finish(plan, runs_root, val: dict[tuple[str, str], float]) -> None:
    """Fake results for the tuning runs (only the launcher test trains for real)."""
    for run in plan.tuning_runs:
        run_dir = plan.run_dir(runs_root, run)
        run_dir.mkdir(parents=True)
        value = val[(run.levels["downsample"], run.levels["lr"])]
        rundir.write_result(run_dir, {"final": {"val_accuracy": value, "test_accuracy": value, "test_loss": 1.0}})


def test_each_level_gets_its_own_best_setting_by_mean_validation_metric(tmp_path):
    path, runs_root = tuned_experiment(tmp_path), tmp_path / "runs"
    plan = load_plan(str(path), runs_root=runs_root)
    _finish(
        plan, runs_root, {("max", "0.0003"): 0.8, ("max", "0.01"): 0.9, ("avg", "0.0003"): 0.7, ("avg", "0.01"): 0.6}
    )
    plan = load_plan(str(path), runs_root=runs_root)
    assert plan.waiting == ()
    assert {v: c.levels for v, c in plan.choices.items()} == {
        "downsample=max": {"lr": "0.01"},
        "downsample=avg": {"lr": "0.0003"},
    }
    finals = plan.final_runs
    assert [r.name for r in finals] == [
        "downsample=max,seed=0",
        "downsample=max,seed=1",
        "downsample=avg,seed=0",
        "downsample=avg,seed=1",
    ]
    assert [r.index for r in finals] == [4, 5, 6, 7]
    assert [r.config.optimizer.lr for r in finals] == [0.01, 0.01, 0.0003, 0.0003]
    assert all(r.config.train.epochs == 2 for r in finals)  # the tuning overrides stay in the tuning runs
    assert plan.choices["downsample=max"].edges == ["lr"]  # a two-point grid: every choice is at its edge
    record = plan.record("cmd")
    assert [r["name"] for r in record["runs"]] == [r.name for r in finals]
    assert record["tuning"]["choices"]["downsample=avg"]["table"][0] == {
        "levels": {"lr": "0.0003"},
        "values": [0.7],
        "mean": 0.7,
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (TUNED.replace("seeds=(100,)", "seeds=(1, 100)"), r"tuning seeds \[1, 100\] share \[1\] with the final seeds"),
        (
            TUNED.replace("'lr', 'optimizer.lr'", "'pool', 'model.downsample'"),
            "sets model.downsample, which scientific axis 'downsample' sets too",
        ),
        (
            TUNED.replace("overrides=", "metric='test_accuracy', overrides="),
            "tuning metric .*never test.*'test_accuracy'",
        ),
        (
            TUNED.replace("overrides={'train.epochs': 1}", "overrides={'optimizer.lr': 0.1}"),
            "sets 'optimizer.lr', which is also overridden",
        ),
        (
            TUNED.replace("overrides={'train.epochs': 1}", "overrides={'dataset.validation_fraction': 0.0}"),
            "tunes on the validation split.*validation_fraction = 0",
        ),
    ],
)
def test_a_tuning_that_would_select_badly_is_refused_before_anything_runs(tmp_path, body, message):
    path = tuned_experiment(tmp_path, body)
    with pytest.raises(UserError, match=message):
        load_plan(str(path))
    out = cnn_jax("sweep", str(path), "--runs-root", str(tmp_path / "runs"))
    assert out.returncode == 2 and not (tmp_path / "runs").exists(), out.stderr


@pytest.mark.slow
def test_the_launcher_tunes_then_runs_the_final_seeds_and_the_report_shows_the_choice(tmp_path, fashion_data_dir):
    path, runs_root = tuned_experiment(tmp_path), tmp_path / "runs"
    dry = cnn_jax("sweep", str(path), "--runs-root", str(runs_root), "--dry-run", data_dir=fashion_data_dir)
    assert dry.returncode == 0, dry.stderr
    assert "4 tuning runs (0 done or running elsewhere), then 4 final runs" in dry.stdout
    assert "4 final runs wait for their tuning runs (downsample=max, downsample=avg)" in dry.stdout
    out = cnn_jax("sweep", str(path), "--runs-root", str(runs_root), "--jobs", "2", data_dir=fashion_data_dir)
    assert out.returncode == 0, out.stderr + out.stdout
    assert out.stdout.count("tuned downsample=") == 2 and "at the edge of its grid: lr" in out.stdout
    plan = load_plan(str(path), runs_root=runs_root)
    assert not plan.waiting and all(rundir.read_result(plan.run_dir(runs_root, r)) for r in plan.runs)
    for run in plan.final_runs:  # each final run trained at its level's chosen rate, for the full epochs
        config = rundir.load_config(plan.run_dir(runs_root, run))
        assert config.optimizer.lr == plan.choices[run.variant].fields["optimizer.lr"] and config.train.epochs == 2
    report = json.loads((runs_root / "tiny" / "report-default" / "report.json").read_text())
    assert [v["variant"] for v in report["variants"]] == ["downsample=max", "downsample=avg"]
    assert report["tuning"]["choices"]["downsample=max"]["levels"] == plan.choices["downsample=max"].levels
    markdown = (runs_root / "tiny" / "report-default" / "report.md").read_text()
    assert "## Tuning" in markdown and "chosen at the edge of the grid:** lr for downsample=" in markdown
    assert "| tuned setting |" in markdown
    status = cnn_jax("status", str(path), "--runs-root", str(runs_root))
    assert status.returncode == 0 and "8 runs: 8 done" in status.stdout, status.stdout


def test_a_diverged_tuning_run_is_an_outcome_never_chosen_nor_retried(tmp_path):
    from cnn_jax.sweep import claims, launch
    from cnn_jax.sweep.status import status_table, sweep_status

    path, runs_root = tuned_experiment(tmp_path), tmp_path / "runs"
    plan = load_plan(str(path), runs_root=runs_root)
    _finish(
        plan, runs_root, {("max", "0.0003"): 0.8, ("max", "0.01"): 0.9, ("avg", "0.0003"): 0.7, ("avg", "0.01"): 0.6}
    )
    diverged = plan.run_dir(runs_root, plan.tuning_runs[1])  # max at 0.01, the better value
    (diverged / "result.json").unlink()
    claims.record_failure(diverged, 3, "the training loss is not finite at step 7")
    plan = load_plan(str(path), runs_root=runs_root)
    assert plan.choices["downsample=max"].levels == {"lr": "0.0003"}
    assert plan.choices["downsample=max"].table[1]["mean"] is None
    section = "".join(_tuning_section(plan.record("cmd")["tuning"]))
    assert "| downsample=max | lr=0.01 | 1 | diverged |  |" in section
    assert "| downsample=max | lr=0.0003 | 1 | 80.00 | chosen |" in section
    states = {s.run.name: s.state for s in sweep_status(plan, runs_root) if s.run.phase == "tune"}
    assert states["tune:downsample=max,lr=0.01,seed=100"] == "diverged"
    assert all(r.phase == "final" for r in launch.todo(plan, runs_root))
    assert "8 runs: 3 done, 1 diverged, 0 running, 0 failed, 4 pending" in status_table(sweep_status(plan, runs_root))
    for run in plan.tuning_runs[:2]:  # every setting of a level diverged: nothing to choose from
        run_dir = plan.run_dir(runs_root, run)
        (run_dir / "result.json").unlink(missing_ok=True)
        claims.record_failure(run_dir, 3, "not finite")
    with pytest.raises(UserError, match="every tuning setting of downsample=max diverged"):
        load_plan(str(path), runs_root=runs_root)
