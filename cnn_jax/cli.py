"""`cnn-jax`: parses the command line, calls the library, prints. User errors exit 2 without a traceback."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cnn_jax.errors import Diverged, TrainingStopped, UserError

EXIT_USER_ERROR, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130  # a signal stop exits 128 + signal number


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    parser.add_argument("--local-data", type=Path, action="append", default=[],
                        help="folder holding local dataset copies (e.g. fashion-mnist/ with IDX files); "
                             "repeatable; also read from $CNN_JAX_LOCAL_DATA (path list) and /usr/share/datasets")


def _data_paths(args: argparse.Namespace):
    from cnn_jax.data import catalog
    from cnn_jax.train.setup import DataPaths

    return DataPaths(args.data_dir or catalog.default_data_dir(),
                     tuple(args.local_data) + tuple(catalog.default_search_roots()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnn-jax", description="Careful CNN experiments in JAX.",
        epilog="Exit codes: 0 done; 2 a user error (the message says what to fix); 3 training diverged; "
               "128+N stopped by signal N after saving a checkpoint (130 Ctrl-C, 143 SIGTERM): rerun to resume.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one config; re-running resumes from the latest checkpoint",
                           epilog="Any config field can be overridden: --config.optimizer.lr=0.05 --config.train.epochs=2")
    train.add_argument("experiment", help="experiment file, optionally with a preset: experiments/fashion_mnist_cnn.py:quick")
    train.add_argument("--workdir", type=Path, default=None, help="run directory (default: runs/<experiment>/<run id>)")
    train.add_argument("--runs-root", type=Path, default=Path("runs"), help="root of default run directories")
    train.add_argument("--force", action="store_true", help="continue a run directory created by a different config")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--print-config", action="store_true", help="print the resolved config and its run id, then exit")
    _add_data_options(train)

    evaluate = sub.add_parser("eval", help="evaluate a run's checkpoint on the test split")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("--checkpoint", default="best", help="'best' (default), 'latest' or a step number")
    _add_data_options(evaluate)

    data = sub.add_parser("data", help="datasets: import local files into TFDS, list what is available")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    imp = data_sub.add_parser("import", help="store local files as a TFDS dataset (no network, no TensorFlow)")
    imp.add_argument("name", help="dataset name: mnist, fashion_mnist, cifar10, cifar100, or a new name for an image folder")
    imp.add_argument("--from", dest="source", type=Path, required=True,
                     help="IDX folder, CIFAR python/binary batches folder, or image folder <split>/<class>/* (dir or .tgz)")
    imp.add_argument("--force", action="store_true", help="replace an existing import")
    _add_data_options(imp)
    lst = data_sub.add_parser("list", help="known and imported datasets, and where each would be read from")
    _add_data_options(lst)
    locate = data_sub.add_parser("locate", help="where NAME would be read from; exit 1 if it is not available offline")
    locate.add_argument("name")
    _add_data_options(locate)

    sub.add_parser("models", help="list the registered models")

    filt = sub.add_parser("filter", help="apply a classic kernel (seed 001) to an image; write a before/after PNG")
    filt.add_argument("kernel", help="box_blur, gaussian_blur or sharpen")
    filt.add_argument("image", type=Path, help="an image file (png, jpg, ...)")
    filt.add_argument("--out", type=Path, default=None, help="PNG to write (default: <image>_<kernel>.png)")

    summary = sub.add_parser("summary", help="per-layer table: output shape, parameters, FLOPs, receptive field, jump",
                             epilog="Model switches: --config.model.downsample=stride --config.model.kernel_scheme=3x3x2 ...")
    summary.add_argument("model", help="a registered model name (see `cnn-jax models`)")
    summary.add_argument("--input", default="28x28x1", help="input shape HxWxC (default 28x28x1)")
    summary.add_argument("--num-classes", type=int, default=10)
    summary.add_argument("--json", action="store_true", help="rows and totals as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if extra and args.command not in ("train", "summary"):
            raise UserError(f"unrecognized arguments: {' '.join(extra)}")
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


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from cnn_jax import config as config_lib
    from cnn_jax import rundir

    unknown = [a for a in extra if not a.startswith("--config")]
    if unknown:
        raise UserError(f"unrecognized arguments: {' '.join(unknown)} (config fields are set with --config.section.field=value)")
    config = config_lib.load_experiment(args.experiment)
    config = config_lib.apply_overrides(config, dict(config_lib.parse_override(a) for a in extra))
    config_lib.validate(config)
    run_dir = args.workdir or rundir.default_run_dir(config, args.runs_root)
    if args.print_config:
        print(config_lib.to_json(config))
        print(f"run id {config_lib.run_id(config)} -> {run_dir}")
        return 0

    from cnn_jax.train.loop import train

    result = train(config, run_dir, _data_paths(args), force=args.force, progress=not args.no_progress)
    final, rate = result["final"], result.get("images_per_sec_median")
    speed = f", {rate:.0f} img/s" if rate else ""
    print(f"test accuracy {100 * final['eval_accuracy']:.2f}% (loss {final['eval_loss']:.4f}) after "
          f"{result['epochs']} epochs{speed} -> {run_dir}")
    return 0


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    from cnn_jax.train.evaluate import evaluate_run

    print(json.dumps(evaluate_run(args.run_dir, _data_paths(args), args.checkpoint), indent=2))
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
    from cnn_jax.models import available_models, model_entry

    for name in available_models():
        print(f"{name:22s} {model_entry(name).description}")
    return 0


def cmd_summary(args: argparse.Namespace, extra: list[str]) -> int:
    import dataclasses

    from cnn_jax import config as config_lib
    from cnn_jax.models import build_model
    from cnn_jax.summary import summarize

    overrides = dict(config_lib.parse_override(a) for a in extra)
    if any(not key.startswith("model.") for key in overrides):
        raise UserError("summary takes only model fields: --config.model.FIELD=VALUE")
    config = config_lib.apply_overrides(config_lib.default_config(), {"model.name": args.model, **overrides})
    config_lib.validate(config)
    shape = _parse_shape(args.input)
    result = summarize(build_model(config.model, num_classes=args.num_classes, input_shape=shape), shape, args.model)
    print(json.dumps(dataclasses.asdict(result), indent=1) if args.json else result.table())
    return 0


def cmd_filter(args: argparse.Namespace, extra: list[str]) -> int:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from cnn_jax.kernels import apply_kernel, get_kernel
    from cnn_jax.plots import before_after

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


def _parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--input {text!r}: write the input shape as HxWxC, e.g. 32x32x3.")
    return tuple(int(p) for p in parts)


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "data": cmd_data, "models": cmd_models, "summary": cmd_summary, "filter": cmd_filter}

if __name__ == "__main__":
    sys.exit(main())
