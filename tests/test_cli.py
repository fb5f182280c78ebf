"""The command line: user errors are one line on stderr, exit code 2, and nothing is written."""

from __future__ import annotations

import subprocess
import sys

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
