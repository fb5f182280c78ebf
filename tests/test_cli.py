"""The command line: user errors are one line on stderr, exit code 2, and nothing is written; an internal
error (a bug) is one line naming the file that holds its traceback, exit code 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cnn_jax import cli

from conftest import ROOT, shared

EXPERIMENT = str(ROOT / "experiments" / "fashion_mnist_cnn.py")


@pytest.mark.parametrize(
    "args, message",
    [
        ([EXPERIMENT + ":fast"], "unknown value 'fast'"),
        ([EXPERIMENT, "--config.optimizer.lr=-1"], "'optimizer.lr' = -1.0: must be > 0"),
        ([EXPERIMENT, "--config.train.batch_size=0"], "'train.batch_size' = 0: must be > 0"),
        ([EXPERIMENT, "--config.model.name=lenet6"], "unknown value 'lenet6'"),
        ([EXPERIMENT, "--config.model.widht=3"], "model 'seed_cnn' has no field 'model.widht'"),
        ([EXPERIMENT, "--config.optimizer.name=rmsprp"], "unknown value 'rmsprp'"),
        ([EXPERIMENT, "--config.dataset.name=fashion_mnsit"], "Did you mean 'fashion_mnist'"),
        ([EXPERIMENT, "--config.optimizer.lr"], "malformed override"),
        ([EXPERIMENT, "--lr=0.1"], "unrecognized arguments: --lr=0.1"),
        (["missing.py"], "does not exist"),
    ],
)
def test_train_user_errors_exit_2_with_one_line_and_write_nothing(args, message, tmp_path, capsys):
    """Caught before any data is read: these never need a dataset (the data dir is empty)."""
    assert_user_error(
        ["train", *args, "--runs-root", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "none")], message, capsys
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_batch_larger_than_the_train_split_is_a_user_error(tmp_path, capsys, fashion_data_dir):
    assert_user_error(
        [
            "train",
            EXPERIMENT,
            "--config.train.batch_size=100000",
            "--runs-root",
            str(tmp_path / "runs"),
            "--data-dir",
            str(fashion_data_dir),
        ],
        "larger than the train split",
        capsys,
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args", [["models", "--config.model.name=x"], ["inspect", "runs", "--lr=1"]])
def test_commands_without_config_fields_refuse_extra_arguments(args, capsys):
    assert_user_error(args, f"unrecognized arguments: {args[-1]}", capsys)


def assert_user_error(args: list[str], message: str, capsys) -> None:
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_print_config_shows_the_resolved_config_and_run_dir(capsys, tmp_path):
    code = cli.main(["train", EXPERIMENT + ":quick", "--config.seed=3", "--print-config", "--runs-root", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and '"seed": 3' in out and f"-> {tmp_path}/fashion_mnist_cnn/" in out


def test_eval_of_a_missing_run_dir_is_a_user_error(tmp_path, capsys):
    assert cli.main(["eval", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_data_import_and_list(tmp_path, capsys):
    source = shared("mnist")
    assert cli.main(["data", "import", "mnist", "--from", str(source), "--data-dir", str(tmp_path)]) == 0
    assert "imported 'mnist' (28, 28, 1) {'test': 10000, 'train': 60000}" in capsys.readouterr().out
    assert cli.main(["data", "import", "mnist", "--from", str(source), "--data-dir", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli.main(["data", "locate", "mnist", "--data-dir", str(tmp_path)]) == 0
    assert cli.main(["data", "locate", "cifar100", "--data-dir", str(tmp_path), "--local-data", str(tmp_path)]) == 1


def test_models_lists_the_registry(capsys):
    assert cli.main(["models"]) == 0
    assert "seed_cnn" in capsys.readouterr().out.split()


def test_console_script_reports_user_errors_without_a_traceback(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnn_jax.cli",
            "train",
            EXPERIMENT,
            "--config.optimizer.lrr=1",
            "--runs-root",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == "error: unknown config field 'optimizer.lrr'. Did you mean 'optimizer.lr'?"


def _raise_bug(args, extra):
    raise RuntimeError("boom\nsecond line")


def test_an_internal_error_is_one_line_naming_the_traceback_file(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "models", _raise_bug)
    assert cli.main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("internal error (a bug in cnn_jax): RuntimeError: boom; traceback written to ")
    assert err.endswith("; please report it\n") and err.count("\n") == 1 and "Traceback" not in err
    written = err.split("traceback written to ")[1].split(";")[0]
    assert written.startswith(str(tmp_path))
    text = open(written).read()
    assert "cnn-jax models" in text and "Traceback (most recent call last)" in text and "second line" in text


@pytest.mark.parametrize("where", [".", "checkpoints", "checkpoints/4"])
def test_an_internal_error_of_a_command_on_a_run_writes_the_traceback_into_the_run(
    where, monkeypatch, capsys, tmp_path
):
    run = tmp_path / "run"
    (run / "checkpoints" / "4").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    monkeypatch.setitem(cli.COMMANDS, "inspect", _raise_bug)
    assert cli.main(["inspect", str(run / where)]) == 1
    written = capsys.readouterr().err.split("traceback written to ")[1].split(";")[0]
    assert Path(written).parent == run and Path(written).name.startswith("internal-error-inspect-")


def test_a_file_system_error_names_the_path_without_a_traceback(monkeypatch, capsys, tmp_path):
    def unreadable(args, extra):
        open(tmp_path / "missing" / "file.txt")

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "models", unreadable)
    assert cli.main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: [Errno 2] No such file or directory: ") and "missing/file.txt" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_user_errors_keep_their_one_line_message(capsys, tmp_path):
    assert cli.main(["inspect", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and err.count("\n") == 1


def test_an_internal_error_of_a_sweep_run_writes_the_traceback_into_the_run_and_records_the_failure(
    monkeypatch, capsys, tmp_path
):
    from cnn_jax.sweep.plan import load_plan

    from sweep_helpers import experiment

    spec = f"{experiment(tmp_path)}:default"
    monkeypatch.setattr("cnn_jax.train.loop.train", lambda *args, **kwargs: _raise_bug(None, None))
    assert cli.main(["run-task", spec, "--index", "1", "--runs-root", str(tmp_path / "runs")]) == 1
    run = load_plan(spec).run_dir(tmp_path / "runs", load_plan(spec).runs[1])
    written = Path(capsys.readouterr().err.split("traceback written to ")[1].split(";")[0])
    assert written.parent == run and "boom" in written.read_text()
    assert cli.main(["status", spec, "--runs-root", str(tmp_path / "runs")]) == 0
    assert "failed   exit 1: RuntimeError: boom" in capsys.readouterr().out
