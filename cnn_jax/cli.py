"""`cnn-jax`: parses the command line, calls the library, prints. User errors exit 2 without a traceback;
an unexpected error (a bug) prints one line and writes its traceback to a file (exit 1)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

from cnn_jax.errors import Diverged, TrainingStopped, UserError

EXIT_ERROR, EXIT_USER_ERROR, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 130  # a signal stop exits 128 + signal number
CONFIG_COMMANDS = ("train", "summary", "launch", "sweep", "status", "run-task")  # take --config.* overrides


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)"
    )
    parser.add_argument(
        "--local-data",
        type=Path,
        action="append",
        default=[],
        help="folder holding local dataset copies (e.g. fashion-mnist/ with IDX files); "
        "repeatable; also read from $CNN_JAX_LOCAL_DATA (path list) and /usr/share/datasets",
    )


def _add_process_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("several processes (hosts) training one run; under `srun` SLURM sets these")
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="address of process 0")
    group.add_argument("--num-processes", type=int, default=None, metavar="N", help="how many processes")
    group.add_argument("--process-id", type=int, default=None, metavar="I", help="this process, 0..N-1")


def _join_processes(args: argparse.Namespace) -> None:
    from cnn_jax.train import hosts

    hosts.initialize(args.coordinator, args.num_processes, args.process_id)


def _data_paths(args: argparse.Namespace):
    from cnn_jax import api

    return api.data_paths(args.data_dir, args.local_data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnn-jax",
        description="Careful CNN experiments in JAX.",
        epilog="Exit codes: 0 done; 1 a file-system or internal error (the message names the file holding its "
        "traceback); 2 a user error (the message says what to fix); 3 training diverged; "
        "128+N stopped by signal N after saving a checkpoint (130 Ctrl-C, 143 SIGTERM): rerun to resume.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="train one config; re-running resumes from the latest checkpoint",
        epilog="Any config field can be overridden: --config.optimizer.lr=0.05 --config.train.epochs=2",
    )
    train.add_argument(
        "experiment", help="experiment file, optionally with a preset: experiments/fashion_mnist_cnn.py:quick"
    )
    train.add_argument("--workdir", type=Path, default=None, help="run directory (default: runs/<experiment>/<run id>)")
    train.add_argument("--runs-root", type=Path, default=Path("runs"), help="root of default run directories")
    train.add_argument("--force", action="store_true", help="continue a run directory created by a different config")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--print-config", action="store_true", help="print the resolved config and its run id, then exit"
    )
    _add_data_options(train)
    _add_process_options(train)

    evaluate = sub.add_parser("eval", help="evaluate a run's checkpoint on its validation and test splits")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument(
        "--checkpoint",
        default="best",
        help="'best' (by the run's validation metric; default), 'latest' or a step number",
    )
    _add_data_options(evaluate)

    data = sub.add_parser("data", help="datasets: import local files into TFDS, list what is available")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    imp = data_sub.add_parser("import", help="store local files as a TFDS dataset (no network, no TensorFlow)")
    imp.add_argument(
        "name", help="dataset name: mnist, fashion_mnist, cifar10, cifar100, or a new name for an image folder"
    )
    imp.add_argument(
        "--from",
        dest="source",
        type=Path,
        required=True,
        help="IDX folder, CIFAR python/binary batches folder, or image folder <split>/<class>/* (dir or .tgz)",
    )
    imp.add_argument("--force", action="store_true", help="replace an existing import")
    _add_data_options(imp)
    lst = data_sub.add_parser("list", help="known and imported datasets, and where each would be read from")
    _add_data_options(lst)
    locate = data_sub.add_parser("locate", help="where NAME would be read from; exit 1 if it is not available offline")
    locate.add_argument("name")
    _add_data_options(locate)

    _add_sweep_parsers(sub)
    _add_reproduce_parser(sub)

    models = sub.add_parser("models", help="list the registered models; with a NAME, its config fields")
    models.add_argument("name", nargs="?", default=None, help="a model: show its input, classes and config fields")

    filt = sub.add_parser("convolve", help="apply a classic kernel (seed 001) to an image; write a before/after PNG")
    filt.add_argument("kernel", help="box_blur, gaussian_blur or sharpen")
    filt.add_argument("image", type=Path, help="an image file (png, jpg, ...)")
    filt.add_argument("--out", type=Path, default=None, help="PNG to write (default: <image>_<kernel>.png)")

    summary = sub.add_parser(
        "summary",
        help="per-layer table: output shape, parameters, FLOPs, receptive field, jump",
        epilog="Model switches: --config.model.downsample=stride --config.model.kernel_scheme=3x3x2 ...",
    )
    summary.add_argument(
        "model", help="a registered model name (see `cnn-jax models`), or a run directory: the model it trained"
    )
    summary.add_argument("--input", default=None, help="input shape HxWxC (default: the model's own, e.g. 227x227x3)")
    summary.add_argument("--num-classes", type=int, default=None, help="classes (default: the model's own)")
    summary.add_argument("--json", action="store_true", help="rows and totals as JSON")

    weights = sub.add_parser(
        "import-weights",
        help="a pretrained weights file (torchvision .pth/.safetensors, Keras .h5) as a run-like directory",
        description="The directory works with inspect, export, summary, plot-filters, load_model and as "
        "transfer.source. Model fields: --config.model.FIELD=VALUE (e.g. aux_heads=true for googlenet).",
    )
    weights.add_argument("file", help="the weights file: a path, or a file name in the torch/keras download caches")
    weights.add_argument("--model", required=True, help="the zoo model the weights are for, e.g. vgg16, resnet50")
    weights.add_argument("--out", type=Path, default=None, help="directory to write (default: runs/pretrained/...)")
    weights.add_argument("--runs-root", type=Path, default=Path("runs"), help="root of the default --out")
    _add_checkpoint_parsers(sub)
    return parser


def _add_step_option(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--step",
        default=None,
        help=f"'best', 'latest' or a step number (default: {default}; a step folder given as the path is that step)",
    )


def _add_checkpoint_parsers(sub) -> None:
    inspect = sub.add_parser(
        "inspect",
        help="a run's saved steps and metrics; one step's tensors, statistics and "
        "optimizer state; --diff against another checkpoint",
        description="Reads checkpoints only: no dataset, no optimizer is built.",
    )
    inspect.add_argument("path", type=Path, help="a run directory, its checkpoints/ folder, or one step folder in it")
    _add_step_option(inspect, "latest")
    inspect.add_argument(
        "--diff",
        type=Path,
        default=None,
        metavar="OTHER",
        help="compare tensor by tensor with OTHER (a run dir, checkpoints/ or step folder)",
    )
    inspect.add_argument("--diff-step", default=None, help="the step of OTHER (default: latest)")
    inspect.add_argument("--json", action="store_true", help="everything as JSON, for scripts")

    export = sub.add_parser(
        "export",
        help="write a checkpoint's params (+ batch_stats) to .npz or .safetensors, "
        "with config and normalization in <file>.json",
    )
    export.add_argument("run_dir", type=Path, help="a run directory (or its checkpoints/ folder, or one step folder)")
    _add_step_option(export, "best")
    export.add_argument(
        "--format",
        default="npz",
        choices=("npz", "safetensors"),
        help="npz (default) or safetensors (needs `pip install safetensors`)",
    )
    export.add_argument(
        "--out", type=Path, default=None, help="file to write (default: RUN_DIR/export/step<N>.<format>)"
    )

    filters = sub.add_parser("plot-filters", help="PNG of a trained conv layer's kernels, one tile per output channel")
    filters.add_argument("run_dir", type=Path, help="a run directory (or its checkpoints/ folder, or one step folder)")
    filters.add_argument("--layer", default=None, help="conv layer path (default: the first conv layer)")
    _add_step_option(filters, "best")
    filters.add_argument("--out", type=Path, default=None, help="PNG to write (default: RUN_DIR/filters_step<N>.png)")

    features = sub.add_parser("plot-features", help="PNG of the feature maps of chosen layers for one input image")
    features.add_argument("run_dir", type=Path, help="a run directory (or its checkpoints/ folder, or one step folder)")
    features.add_argument(
        "image", type=Path, nargs="?", default=None, help="an image file (converted to the run's channels and size)"
    )
    features.add_argument(
        "--test-index",
        type=int,
        default=None,
        metavar="N",
        help="use image N of the run's test split instead (reads the dataset)",
    )
    features.add_argument(
        "--layers",
        default=None,
        help="comma-separated layer paths, e.g. stage1,stage2/ConvStack_0 (default: top-level layers)",
    )
    features.add_argument("--max-channels", type=int, default=32, help="channels shown per layer (default 32)")
    _add_step_option(features, "best")
    features.add_argument(
        "--out", type=Path, default=None, help="PNG to write (default: RUN_DIR/features_<image>_step<N>.png)"
    )
    _add_data_options(features)


def _add_experiment_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment file, e.g. experiments/pool_vs_stride.py (or FILE:PRESET)")
    parser.add_argument("preset", nargs="?", default=None, help="preset of the file (default: its first, see PRESETS)")
    parser.add_argument("--runs-root", type=Path, default=Path("runs"), help="root of run directories (default: runs)")


def _add_sweep_parsers(sub) -> None:
    config_epilog = (
        "Config fields apply to every run: --config.train.epochs=2. The sweep's own axes cannot be overridden."
    )
    launch = sub.add_parser(
        "launch",
        help="run an experiment file: its sweep if it declares one, else its single config",
        epilog=config_epilog,
    )
    _add_experiment_argument(launch)
    sweep = sub.add_parser(
        "sweep",
        help="run every run of an experiment's sweep; skips finished runs, resumes interrupted ones",
        epilog=config_epilog,
    )
    _add_experiment_argument(sweep)
    for parser in (launch, sweep):
        parser.add_argument(
            "--backend",
            choices=("local", "slurm"),
            default="local",
            help="local: child processes on this machine (default); slurm: one job array",
        )
        parser.add_argument(
            "--jobs", type=int, default=None, help="local: runs at once (default: one per GPU, or 1 without GPUs)"
        )
        parser.add_argument("--dry-run", action="store_true", help="list the runs and what would be run or submitted")
        parser.add_argument("--no-report", action="store_true", help="do not print the report when all runs are done")
        parser.add_argument("--partition", help="slurm: partition")
        parser.add_argument("--gpus", type=int, default=0, help="slurm: GPUs per run")
        parser.add_argument("--cpus", type=int, default=None, help="slurm: CPUs per run")
        parser.add_argument("--time", help="slurm: time limit per run, e.g. 02:00:00 (runs checkpoint 2 min before)")
        parser.add_argument("--mem", help="slurm: memory per run, e.g. 16G")
        parser.add_argument("--max-parallel", type=int, default=None, help="slurm: at most this many runs at once")
        parser.add_argument(
            "--vmap-seeds",
            type=int,
            default=1,
            metavar="K",
            help="train up to K runs that differ only by seed in one compiled program (vmap)",
        )
        parser.add_argument(
            "--tasks-per-run",
            type=int,
            default=1,
            help="slurm: processes per run (srun tasks, e.g. one per node), data parallel together",
        )
        _add_data_options(parser)
    status = sub.add_parser(
        "status", help="done / running / failed / pending, per run of a sweep", epilog=config_epilog
    )
    _add_experiment_argument(status)
    task = sub.add_parser("run-task", help="(used by the backends) train one run of a sweep, if nobody else is")
    task.add_argument("experiment", help="FILE:PRESET")
    task.add_argument("--index", type=int, required=True, help="the run's index in the sweep")
    task.add_argument("--runs-root", type=Path, default=Path("runs"))
    task.add_argument("--vmap-seeds", type=int, default=1, metavar="K", help="--index names a group of K seeds")
    _add_process_options(task)
    _add_data_options(task)
    report = sub.add_parser("report", help="tables (Markdown, CSV, LaTeX), plots and statistics of a sweep's runs")
    report.add_argument("path", type=Path, help="runs/<experiment> (or a sweep-<preset>.json file)")
    report.add_argument("--preset", default=None, help="which sweep, when several presets ran in the folder")
    report.add_argument(
        "--out", type=Path, default=None, help="output folder (default: runs/<experiment>/report-<preset>)"
    )


def _add_reproduce_parser(sub) -> None:
    repro = sub.add_parser(
        "reproduce",
        help="run the registry of published results (experiments/expected.toml) and compare",
        description="Runs each entry's seeds (finished runs are skipped, interrupted ones resume), compares the mean "
        "with the published value and prints a table, also written to RUNS_ROOT/reproduce.md and .json.",
        epilog="Exit codes: 0 every entry that ran is within tolerance; 1 one is not (named); 2 a user error.",
    )
    repro.add_argument(
        "--registry",
        type=Path,
        default=Path("experiments/expected.toml"),
        help="the registry (default: experiments/expected.toml)",
    )
    repro.add_argument("--only", nargs="+", metavar="NAME", default=None, help="run only these entries")
    repro.add_argument(
        "--hardware",
        choices=("cpu", "gpu", "all"),
        default="cpu",
        help="run the entries for this hardware (default cpu); the others are listed as not run",
    )
    repro.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="leave out entries whose budget_minutes is larger (a CI time budget)",
    )
    repro.add_argument("--list", action="store_true", help="print the registry and exit")
    repro.add_argument("--dry-run", action="store_true", help="print the runs of each entry, their state and command")
    repro.add_argument("--runs-root", type=Path, default=Path("runs"), help="root of run directories (default: runs)")
    repro.add_argument("--jobs", type=int, default=None, help="runs at once (default: one per GPU, or 1 without GPUs)")
    repro.add_argument("--index", type=int, default=None, help=argparse.SUPPRESS)  # a child: one run of one entry
    _add_data_options(repro)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        _check_extra_arguments(args.command, extra)
        return COMMANDS[args.command](args, extra)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except TrainingStopped as exc:
        print(f"{'error: ' if isinstance(exc, Diverged) else ''}{exc}", file=sys.stderr)
        return EXIT_DIVERGED if isinstance(exc, Diverged) else 128 + exc.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # the file system refused: a missing path, permissions, a full disk
        print(f"error: {exc}; traceback written to {_write_traceback(args, argv)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(
            f"internal error (a bug in cnn_jax): {type(exc).__name__}: {first}; traceback written to "
            f"{_write_traceback(args, argv)}; please report it",
            file=sys.stderr,
        )
        return EXIT_ERROR


def _write_traceback(args: argparse.Namespace, argv: list[str]) -> str:
    """Write the exception being handled, with the command line, into the command's run directory (else a
    temp file); returns where, or says that writing failed."""
    import platform
    import tempfile

    from cnn_jax import __version__

    text = (
        f"cnn-jax {' '.join(argv)}\ncnn_jax {__version__}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n\n{traceback.format_exc()}"
    )
    name = f"internal-error-{args.command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    for find in (lambda: _run_dir_of(args), lambda: Path(tempfile.gettempdir())):
        try:
            folder = find()
            if folder is not None:
                (folder / name).write_text(text)
                return str(folder / name)
        except OSError:  # not writable, or no temp dir
            continue
    return "nowhere (neither the run directory nor the temp dir is writable)"


def _run_dir_of(args: argparse.Namespace) -> Path | None:
    """The run directory the command works in, if it exists: the one it named with `_working_in`, else a run
    directory (or a checkpoints/ or step folder inside one) given on the command line."""
    from cnn_jax import rundir

    known = getattr(args, "working_in", None)
    if known is not None and Path(known).is_dir():
        return Path(known)
    given = getattr(args, "workdir", None) or getattr(args, "run_dir", None) or getattr(args, "path", None)
    if given is None:
        return None
    for folder in (Path(given), *Path(given).parents[:2]):
        if (folder / rundir.CONFIG).is_file():
            return folder
    return None


def _working_in(args: argparse.Namespace, run_dir: Path) -> Path:
    """Note the run directory a command trains in: an internal error writes its traceback there."""
    args.working_in = run_dir
    return run_dir


def _check_extra_arguments(command: str, extra: list[str]) -> None:
    """The one rule for arguments argparse does not know: config overrides, where a command takes them."""
    unknown = [a for a in extra if command not in CONFIG_COMMANDS or not a.startswith("--config")]
    if unknown:
        hint = " (config fields are set with --config.section.field=value)" if command in CONFIG_COMMANDS else ""
        raise UserError(f"unrecognized arguments: {' '.join(unknown)}{hint}")


def _config_overrides(extra: list[str]) -> dict[str, str]:
    from cnn_jax import config as config_lib

    return dict(config_lib.parse_override(a) for a in extra)


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from cnn_jax import config as config_lib
    from cnn_jax import rundir, validation

    config = config_lib.apply_overrides(config_lib.load_experiment(args.experiment), _config_overrides(extra))
    validation.validate(config)
    run_dir = _working_in(args, args.workdir or rundir.default_run_dir(config, args.runs_root))
    if args.print_config:
        print(config_lib.to_json(config))
        print(f"run id {config_lib.run_id(config)} -> {run_dir}")
        return 0

    from cnn_jax.sweep import claims
    from cnn_jax.train import hosts
    from cnn_jax.train.loop import train

    _join_processes(args)
    with claims.claim_as_primary(run_dir) as held:  # the same lock as sweeps: one job trains a run directory
        if not held:
            raise UserError(
                f"'{run_dir}' is being trained by another process ({claims.holder(run_dir)}); "
                "wait for it, or use another --workdir."
            )
        result = train(
            config,
            run_dir,
            _data_paths(args),
            runs_root=args.runs_root,
            force=args.force,
            progress=not args.no_progress,
        )
    if not hosts.is_primary():
        return 0
    rate = result.get("images_per_sec_median")
    speed = f", {rate:.0f} img/s" if rate else ""
    print(f"{rundir.result_summary(result)} after {result['epochs']} epochs{speed} -> {run_dir}")
    return 0


def _spec(args: argparse.Namespace) -> str:
    if args.preset is None:
        return args.experiment
    if ":" in args.experiment:
        raise UserError(f"give the preset once: either '{args.experiment}' or a separate preset, not both.")
    return f"{args.experiment}:{args.preset}"


def _plan(args: argparse.Namespace, extra: list[str]):
    from cnn_jax.sweep.plan import load_plan

    return load_plan(_spec(args), _config_overrides(extra), args.runs_root.resolve())


def _data_args(args: argparse.Namespace) -> list[str]:
    """The data options again, for child processes and SLURM tasks."""
    out = ["--data-dir", str(args.data_dir.resolve())] if args.data_dir else []
    for folder in args.local_data:
        out += ["--local-data", str(folder.resolve())]
    return out


def cmd_launch(args: argparse.Namespace, extra: list[str]) -> int:
    from cnn_jax.sweep.plan import has_sweep

    if has_sweep(_spec(args)):
        return cmd_sweep(args, extra)
    if args.backend != "local" or args.dry_run:
        raise UserError(f"'{args.experiment}' declares no sweep (get_sweep); --backend/--dry-run apply to sweeps only.")
    args.workdir, args.force, args.no_progress, args.print_config = None, False, False, False
    args.experiment = _spec(args)
    return cmd_train(args, extra)


def cmd_sweep(args: argparse.Namespace, extra: list[str]) -> int:
    import shlex

    from cnn_jax.sweep import launch, local, slurm, sources
    from cnn_jax.sweep.status import status_table, sweep_status

    plan = _plan(args, extra)
    runs_root, task_args, k = args.runs_root.resolve(), _data_args(args) + extra, args.vmap_seeds
    if k < 1:
        raise UserError(f"--vmap-seeds must be >= 1, got {k}.")
    todo = launch.todo(plan, runs_root, k)  # with k > 1: the first run of each group of seeds to train
    what = f"{len(todo)} tasks of up to {k} seeds each" if k > 1 else f"{len(todo)} runs"
    print(f"{plan.question}\n{plan.spec}: {_plan_counts(plan, runs_root)}")
    options = slurm.SlurmOptions(
        partition=args.partition,
        gpus_per_task=args.gpus,
        cpus_per_task=args.cpus,
        time=args.time,
        mem=args.mem,
        max_parallel=args.max_parallel,
        tasks_per_run=args.tasks_per_run,
        job_name=f"cnn_jax-{plan.experiment}",
    )
    if args.tasks_per_run != 1 and args.backend != "slurm":
        raise UserError(
            "--tasks-per-run applies to --backend slurm; locally one process uses all of a machine's "
            "devices (or start the processes yourself: cnn-jax train --coordinator ...)."
        )
    waiting = _waiting_line(plan)
    if args.dry_run:
        print(status_table(sweep_status(plan, runs_root)) + waiting)
        for spec, run_dir in (sources.unfinished_sources(plan, runs_root) if todo else {}).items():
            print(f"would first train the transfer source {spec} -> {run_dir}")
        if args.backend == "slurm" and todo:
            print(
                f"would submit one job array of {what} with this script:\n"
                f"{launch.slurm_script(plan, runs_root, todo, task_args, options, k)}"
            )
        elif todo:
            command = shlex.join(local.task_command(plan, runs_root, task_args, k))
            print(f"would run {what}, {_jobs(args)} at a time, each as:\n  {command} --index I")
        return 0
    if args.backend == "slurm":
        if not todo:
            print("nothing to submit: every run is done or running" + waiting)
            return 0
        job_id = launch.submit(plan, runs_root, todo, task_args, options, _command_line(), k)
        print(
            f"submitted job array {job_id} ({what}); logs in {launch.slurm_dir(plan, runs_root)}; "
            f"watch with: cnn-jax status {plan.spec} --runs-root {runs_root}"
            + (f"{waiting}\nwhen job {job_id} has finished, run this command again to submit them" if waiting else "")
        )
        return 0
    plan, failed = launch.run_phases_locally(
        lambda: _plan(args, extra),
        runs_root,
        task_args,
        _jobs(args),
        _command_line(),
        vmap_seeds=k,
        on_choice=lambda variant, choice: print(_choice_line(variant, choice, plan.sweep.tuning.metric)),
    )
    if failed:
        print(
            f"{len(failed)} runs failed: {', '.join(r.name for r in failed)}; `cnn-jax status` shows why; "
            "rerunning the command retries them",
            file=sys.stderr,
        )
    done = launch.finished_count(plan, runs_root)
    if done < len(plan.runs) or plan.waiting:
        print(f"{done} of {len(plan.runs)} runs done (see `cnn-jax status`){_waiting_line(plan)}")
    elif not args.no_report:
        _print_report(plan.experiment_dir(runs_root), plan.preset, None)
    return 1 if failed else 0


def _plan_counts(plan, runs_root: Path) -> str:
    """'N runs, M done or running elsewhere', with the tuning runs and the final runs counted apart."""
    from cnn_jax.sweep import launch

    left = {r.index for r in launch.todo(plan, runs_root)}
    if not plan.sweep.tuning:
        return f"{len(plan.runs)} runs, {len(plan.runs) - len(left)} done or running elsewhere"
    tune = plan.tuning_runs
    final_left = sum(r.index in left for r in plan.final_runs) + len(plan.waiting) * len(plan.sweep.seeds)
    return (
        f"{len(tune)} tuning runs ({len(tune) - sum(r.index in left for r in tune)} done or running elsewhere), "
        f"then {plan.final_runs_planned} final runs ({plan.final_runs_planned - final_left} done or running elsewhere)"
    )


def _waiting_line(plan) -> str:
    if not plan.waiting:
        return ""
    runs = len(plan.waiting) * len(plan.sweep.seeds)
    return f"\n{runs} final runs wait for their tuning runs ({', '.join(plan.waiting)})"


def _choice_line(variant: str, choice, metric: str) -> str:
    setting = ", ".join(f"{axis}={level}" for axis, level in choice.levels.items())
    edge = f"; at the edge of its grid: {', '.join(choice.edges)} (widen it)" if choice.edges else ""
    return f"tuned {variant}: {setting} (mean {metric} {choice.mean:.4f}){edge}"


def _print_report(path: Path, preset: str | None, out: Path | None) -> None:
    from cnn_jax.analysis.report import write_report

    report = write_report(path, preset, out)
    print(report.markdown)
    print(f"report files in {next(iter(report.paths.values())).parent}")


def cmd_reproduce(args: argparse.Namespace, extra: list[str]) -> int:
    from cnn_jax import reproduce

    entries = reproduce.select(reproduce.load_registry(args.registry), args.only)
    runs_root = args.runs_root.resolve()
    if args.index is not None:
        from cnn_jax.sweep.task import EXIT_HELD

        if len(entries) != 1:
            raise UserError("--index needs exactly one entry named with --only.")
        return EXIT_HELD if reproduce.run_task(entries[0], args.index, runs_root, _data_paths(args)) == "held" else 0
    if args.list:
        print(reproduce.describe_registry(entries))
        return 0
    options = reproduce.Options(
        runs_root,
        reproduce.task_command(args.registry, runs_root, _data_args(args)),
        args.hardware,
        args.max_minutes,
        _jobs(args),
        _command_line(),
    )
    if args.dry_run:
        print(reproduce.dry_run(entries, options))
        return 0
    outcomes = reproduce.run_entries(entries, options)
    paths = reproduce.write_outputs(outcomes, args.registry, args.hardware, runs_root)
    print(reproduce.markdown(outcomes, args.registry, args.hardware))
    print(f"written to {paths[0]} and {paths[1]}")
    failed = reproduce.failures(outcomes)
    if failed:
        print(f"not within tolerance: {'; '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _command_line() -> str:
    """The command as the user typed it (launch.sh execs `cnn-jax launch ...`)."""
    import shlex

    if sys.argv[1:2] == ["launch"]:
        return shlex.join(["./launch.sh", *sys.argv[2:]])
    return shlex.join(["cnn-jax", *sys.argv[1:]])


def _jobs(args: argparse.Namespace) -> int:
    from cnn_jax.sweep.local import gpu_ids

    jobs = args.jobs if args.jobs is not None else max(1, len(gpu_ids()))
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: must be >= 1.")
    return jobs


def cmd_status(args: argparse.Namespace, extra: list[str]) -> int:
    from cnn_jax.sweep.status import status_table, sweep_status

    plan = _plan(args, extra)
    print(status_table(sweep_status(plan, args.runs_root.resolve())) + _waiting_line(plan))
    return 0


def cmd_run_task(args: argparse.Namespace, extra: list[str]) -> int:
    from cnn_jax.sweep.plan import load_plan
    from cnn_jax.sweep.task import EXIT_HELD, run_task

    plan = load_plan(args.experiment, _config_overrides(extra), args.runs_root.resolve())
    if any(r.index == args.index for r in plan.runs):
        _working_in(args, plan.run_dir(args.runs_root.resolve(), plan.run(args.index)))
    _join_processes(args)
    outcome = run_task(plan, args.index, args.runs_root.resolve(), _data_paths(args), vmap_seeds=args.vmap_seeds)
    return EXIT_HELD if outcome == "held" else 0


def cmd_report(args: argparse.Namespace, extra: list[str]) -> int:
    _print_report(args.path, args.preset, args.out)
    return 0


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    from cnn_jax.train.evaluate import evaluate_run

    def log(*parts) -> None:  # to stderr: stdout holds only the JSON
        print(*parts, file=sys.stderr)

    print(json.dumps(evaluate_run(args.run_dir, _data_paths(args), args.checkpoint, log=log), indent=2))
    return 0


def cmd_data(args: argparse.Namespace, extra: list[str]) -> int:
    from cnn_jax.data import catalog, tfds_store

    paths = _data_paths(args)
    if args.data_command == "import":
        target = catalog.import_dataset(args.name, args.source, paths.data_dir, force=args.force)
        info = tfds_store.read_provenance(target)
        counts = {s: sum(c) for s, c in info["class_counts"].items()}
        print(f"imported '{args.name}' {tuple(info['image_shape'])} {counts} into {target}")
        return 0
    if args.data_command == "locate":
        where = _where(args.name, paths)
        print(f"{args.name}: {where or 'not available offline'}")
        return 0 if where else 1
    for name in catalog.available_datasets(paths.data_dir):
        print(f"{name:16s} {_where(name, paths) or 'not available offline'}")
    return 0


def _where(name: str, paths) -> str | None:
    from cnn_jax.data import catalog, tfds_store

    stock = tfds_store.stock_dir(paths.data_dir, name)
    if stock:
        return f"prepared by TFDS in {stock}"
    if tfds_store.imported_dir(paths.data_dir, name).exists():
        return f"imported in {tfds_store.imported_dir(paths.data_dir, name)}"
    local = catalog.find_local(name, list(paths.search_roots))
    return f"local files at {local} (imported on first use)" if local else None


def cmd_models(args: argparse.Namespace, extra: list[str]) -> int:
    from cnn_jax.models import available_models, model_entry, model_fields

    if args.name is None:
        for name in available_models():
            print(f"{name:22s} {model_entry(name).description}")
        return 0
    entry, fields = model_entry(args.name), model_fields(args.name)
    print(
        f"{args.name}: {entry.description}\ninput {'x'.join(map(str, entry.input_shape))}, "
        f"{entry.num_classes} classes (as published)"
    )
    print("config fields (--config.model.FIELD=VALUE):" if fields else "no config fields besides model.name")
    for field, value in fields.items():
        print(f"  {field:18s} {value!r}")
    return 0


def cmd_summary(args: argparse.Namespace, extra: list[str]) -> int:
    import dataclasses

    from cnn_jax import api

    overrides = _config_overrides(extra)
    if any(not key.startswith("model.") for key in overrides):
        raise UserError("summary takes only model fields: --config.model.FIELD=VALUE")
    fields = {key.removeprefix("model."): value for key, value in overrides.items()}
    shape = _parse_shape(args.input) if args.input else None
    model, classes = args.model, args.num_classes
    if (Path(args.model) / "config.json").is_file():  # a run directory: the model it trained, at its input
        from cnn_jax import rundir
        from cnn_jax.loading import data_info

        section, info = rundir.load_config(Path(args.model)).model.to_dict(), data_info(Path(args.model))
        model, fields = section.pop("name"), {**section, **fields}
        shape, classes = shape or info.model_input_shape, classes or len(info.classes)
    result = api.summary(model, shape, classes, **fields)
    print(json.dumps(dataclasses.asdict(result), indent=1) if args.json else result.table())
    return 0


def cmd_import_weights(args: argparse.Namespace, extra: list[str]) -> int:
    from cnn_jax.weights.convert import write_imported_run

    overrides = _config_overrides(extra)
    if any(not key.startswith("model.") for key in overrides):
        raise UserError("import-weights takes only model fields: --config.model.FIELD=VALUE")
    section = {"name": args.model, **{key.removeprefix("model."): value for key, value in overrides.items()}}
    out = write_imported_run(args.file, section, args.out, args.runs_root)
    manifest = json.loads((out / "manifest.json").read_text())
    record = manifest["weights"]
    print(
        f"imported {record['arrays_used']} arrays of {record['file']} ({record['layout']}, found {record['found']}) "
        f"into {out}; {record['num_classes']} classes; inputs: {record['preprocessing']['how']}"
    )
    return 0


def cmd_convolve(args: argparse.Namespace, extra: list[str]) -> int:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from cnn_jax.analysis.kernels import apply_kernel, get_kernel
    from cnn_jax.analysis.plots import before_after

    kernel = get_kernel(args.kernel)
    try:
        with Image.open(args.image) as img:
            image = np.asarray(img.convert("L") if img.mode in ("L", "1", "I") else img.convert("RGB"))
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise UserError(f"cannot read image '{args.image}': {exc}") from None
    image = image[..., None] if image.ndim == 2 else image
    out = args.out or args.image.with_name(f"{args.image.stem}_{args.kernel}.png")
    before_after(image, np.asarray(apply_kernel(image, kernel)), args.kernel, out)
    print(f"wrote {out}")
    return 0


def cmd_inspect(args: argparse.Namespace, extra: list[str]) -> int:
    from cnn_jax.analysis.inspection import format_report, inspect_checkpoint

    report = inspect_checkpoint(args.path, args.step, args.diff, args.diff_step)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def cmd_export(args: argparse.Namespace, extra: list[str]) -> int:
    from cnn_jax.analysis.export import export_run

    done = export_run(args.run_dir, args.step, args.format, args.out)
    print(f"wrote {done.tensors} tensors of step {done.step} to {done.path} (config and normalization: {done.sidecar})")
    return 0


def cmd_plot_filters(args: argparse.Namespace, extra: list[str]) -> int:
    from cnn_jax.analysis.features import plot_filters

    picture = plot_filters(args.run_dir, args.layer, args.step, args.out)
    rows, cols = picture.grid
    print(f"wrote {picture.path} ({picture.layers[0]}, step {picture.step}, {rows}x{cols} grid)")
    return 0


def cmd_plot_features(args: argparse.Namespace, extra: list[str]) -> int:
    from cnn_jax.analysis.features import plot_features

    layers = [name.strip() for name in args.layers.split(",") if name.strip()] if args.layers else None
    paths = _data_paths(args) if args.test_index is not None else None
    picture = plot_features(
        args.run_dir, args.image, layers, args.step, args.out, args.test_index, paths, args.max_channels
    )
    print(f"wrote {picture.path} ({', '.join(picture.layers)}; step {picture.step}; predicted {picture.prediction})")
    return 0


def _parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--input {text!r}: write the input shape as HxWxC, e.g. 32x32x3.")
    return tuple(int(p) for p in parts)


COMMANDS = {
    "launch": cmd_launch,
    "sweep": cmd_sweep,
    "status": cmd_status,
    "run-task": cmd_run_task,
    "report": cmd_report,
    "reproduce": cmd_reproduce,
    "train": cmd_train,
    "eval": cmd_eval,
    "data": cmd_data,
    "models": cmd_models,
    "summary": cmd_summary,
    "import-weights": cmd_import_weights,
    "convolve": cmd_convolve,
    "inspect": cmd_inspect,
    "export": cmd_export,
    "plot-filters": cmd_plot_filters,
    "plot-features": cmd_plot_features,
}

if __name__ == "__main__":
    sys.exit(main())
