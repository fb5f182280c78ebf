"""Feature extraction on a frozen pretrained backbone, with and without the feature cache, on this machine.

    python benchmarks/feature_cache_speed.py [--weights vgg16.pth] [--epochs 12] [--data-dir DIR]

The run is experiments/transfer_imagenet_vgg16.py, preset cpu, variant 'features' (VGG16's five stages
frozen, a new 512 -> 10 head; 1,000 CIFAR-10 training images, validation and test evaluated every
epoch), trained three times in fresh directories: with the cache (computing the features), again (reading
them back), and without it (every step and every evaluation through the backbone). Without --weights a
randomly initialized torchvision-layout VGG16 file is written first: the time does not depend on the
weights' values. Prints wall times and writes benchmarks/results/feature_cache_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "transfer_imagenet_vgg16.py"


def random_vgg16(path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    import torch_reference

    torch.manual_seed(0)
    torch.save(torch_reference.randomized(torch_reference.build("vgg16")).state_dict(), path)


def timed_run(config, run_dir: Path, runs_root: Path, paths) -> dict:
    from cnn_jax.train.loop import train

    t0 = time.perf_counter()
    result = train(config, run_dir, paths, runs_root=runs_root, progress=False, log=lambda *a: None)
    seconds = time.perf_counter() - t0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {
        "wall_seconds": round(seconds, 1),
        "feature_cache": manifest["data"].get("feature_cache"),
        "test_accuracy": result["final"]["test_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="a VGG16 weights file (default: random)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the preset's)")
    parser.add_argument("--data-dir", type=Path, default=None, help="TFDS data dir (default: cnn_jax's)")
    opts = parser.parse_args()

    from cnn_jax import config as config_lib
    from cnn_jax import provenance
    from cnn_jax.data import catalog
    from cnn_jax.sweep.plan import load_plan
    from cnn_jax.train.setup import DataPaths

    work = Path(tempfile.mkdtemp(prefix="feature_cache_"))
    weights = opts.weights or work / "vgg16-random.pth"
    if opts.weights is None:
        random_vgg16(weights)
    os.environ["CNN_JAX_VGG16_WEIGHTS"] = str(weights)
    plan = load_plan(f"{EXPERIMENT}:cpu")
    config = next(run.config for run in plan.runs if run.variant == "init=features")
    if opts.epochs:
        config = config_lib.apply_overrides(config, {"train.epochs": opts.epochs})
    paths = DataPaths(opts.data_dir or catalog.default_data_dir(), tuple(catalog.default_search_roots()))
    runs = {}
    for name, cache in (("cache_computed", True), ("cache_read", True), ("through_backbone", False)):
        run_config = config_lib.apply_overrides(config, {"transfer.feature_cache": cache})
        runs[name] = timed_run(run_config, work / name, work, paths)
        print(f"{name:18s} {runs[name]['wall_seconds']:8.1f} s  test accuracy {runs[name]['test_accuracy']:.4f}")
    speedup = runs["through_backbone"]["wall_seconds"] / runs["cache_computed"]["wall_seconds"]
    reread = runs["through_backbone"]["wall_seconds"] / runs["cache_read"]["wall_seconds"]
    print(f"speedup: {speedup:.1f}x computing the features, {reread:.1f}x reading them back")
    out = ROOT / "benchmarks" / "results" / "feature_cache_speed.json"
    record = {
        "run": "transfer_imagenet_vgg16 cpu, init=features",
        "epochs": config.train.epochs,
        "runs": runs,
        "speedup_computed": round(speedup, 2),
        "speedup_read": round(reread, 2),
        "machine": provenance.device_info(),
        "packages": provenance.package_versions(),
    }
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
