"""The Python API (`cnn_jax.get_config`, `run`, `run_sweep`, `report`, `summary`, ...): what the commands
do, returned as objects, silent, with errors as exceptions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

import cnn_jax
from cnn_jax import rundir
from cnn_jax.errors import UserError

from conftest import ROOT

TINY = {
    "experiment": "api",
    "model.name": "ablation_net",
    "model.stages": 2,
    "model.width": 8,
    "dataset.train_subset": 640,
    "dataset.eval_subset": 500,
    "train.batch_size": 64,
    "train.epochs": 2,
    "train.log_every_steps": 5,
    "checkpoint.every_steps": 5,
}


def test_importing_cnn_jax_does_not_import_jax_and_every_public_name_resolves():
    code = "import sys, cnn_jax; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
    for name in cnn_jax.__all__:
        assert getattr(cnn_jax, name).__doc__, name


def test_get_config_applies_overrides_and_names_a_wrong_field():
    config = cnn_jax.get_config(ROOT / "experiments/fashion_mnist_cnn.py", "quick", {"train.epochs": 1})
    assert config.train.epochs == 1 and config.experiment == "fashion_mnist_cnn"
    with pytest.raises(UserError, match="unknown config field 'train.epoch'.*train.epochs"):
        cnn_jax.get_config(ROOT / "experiments/fashion_mnist_cnn.py", "quick", {"train.epoch": 1})
    with pytest.raises(UserError, match="no preset 'nope'|'nope'"):
        cnn_jax.get_config(ROOT / "experiments/fashion_mnist_cnn.py", "nope")


def test_run_trains_silently_and_returns_the_result_history_and_directory(tmp_path, fashion_data_dir, capsys):
    config = cnn_jax.get_config(ROOT / "experiments/fashion_mnist_cnn.py", overrides=TINY)
    run = cnn_jax.run(config, runs_root=tmp_path, data_dir=fashion_data_dir)
    assert capsys.readouterr().out == ""
    assert run.run_dir.parent == tmp_path / "api" and run.record == rundir.read_result(run.run_dir)
    assert run.final["test_accuracy"] == run.history[-1]["test_accuracy"]
    assert [row["epoch"] for row in run.history] == [1.0, 2.0]
    assert run.selected["selected_by"] == "val_accuracy (max)"
    assert f"test acc {100 * run.final['test_accuracy']:.2f}%" in str(run)
    assert "| epoch |" in run._repr_markdown_() and "val_accuracy" in run._repr_markdown_()
    again = cnn_jax.run(config, runs_root=tmp_path, data_dir=fashion_data_dir)  # finished: read back
    assert again.record == run.record
    assert cnn_jax.read_run(run.run_dir).history == run.history
    lines = []
    cnn_jax.run(config, workdir=tmp_path / "logged", data_dir=fashion_data_dir, log=lines.append)
    assert any("epoch 2/2" in line for line in lines)


def test_read_run_of_an_unfinished_directory_says_so(tmp_path):
    with pytest.raises(UserError, match="has no result.json: the run is unfinished"):
        cnn_jax.read_run(tmp_path)


def test_run_sweep_refuses_no_jobs_before_writing_anything(tmp_path):
    with pytest.raises(UserError, match="jobs = 0: must be >= 1"):
        cnn_jax.run_sweep(ROOT / "experiments/pool_vs_stride.py", "cpu", runs_root=tmp_path, jobs=0)
    assert list(tmp_path.iterdir()) == []


def test_summary_and_build_model_take_the_models_fields():
    table = cnn_jax.summary("lenet5")
    assert table.total_params == 61_706 and table.input_shape == (32, 32, 1)
    assert str(table) == table.table() and "61,706" in table._repr_markdown_()
    wide = cnn_jax.summary("ablation_net", (28, 28, 1), 10, width=8, stages=2)
    assert wide.rows[0].output_shape[-1] == 8
    assert cnn_jax.build_model("ablation_net", downsample="avg").downsample == "avg"
    with pytest.raises(UserError, match="downsampel.*downsample"):
        cnn_jax.build_model("ablation_net", downsampel="avg")


def test_run_sweep_skips_finished_runs_and_returns_the_report(tmp_path, finished_sweep, fashion_data_dir):
    path, runs_root, _ = finished_sweep
    shutil.copytree(runs_root, tmp_path / "runs")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("result.json")}
    result = cnn_jax.run_sweep(path, runs_root=tmp_path / "runs", data_dir=fashion_data_dir, jobs=2)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("result.json")} == before  # nothing retrained
    assert result.finished and not result.failed
    variants = [v["variant"] for v in result.report.data["variants"]]
    assert variants == ["downsample=max", "downsample=avg"]
    assert result._repr_markdown_() == result.report.markdown
    assert result.report.paths["report.md"].read_text() == result.report.markdown
    again = cnn_jax.report(tmp_path / "runs" / "tiny")
    assert json.dumps(again.data, default=str) == json.dumps(result.report.data, default=str)


def test_the_api_reference_builds_without_warnings_and_documents_every_public_name(tmp_path):
    import warnings

    import pdoc

    from cnn_jax import api

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc("cnn_jax.api", output_directory=tmp_path)
    assert not [str(w.message) for w in caught if "pdoc" in (w.filename or "")]
    page = (tmp_path / "cnn_jax" / "api.html").read_text()
    for name in api.__all__:
        assert f'id="{name}"' in page, name
        assert getattr(api, name).__doc__, name
