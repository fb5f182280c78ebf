"""How long a training run waits for its data: ResNet-20 on CIFAR-10 (the JPEG copy), device-resident vs streamed.

    python benchmarks/data_wait.py [--train-images 6400] [--epochs 2] [--data-dir DIR] [--workers 0 1 2]

The run is experiments/resnet_cifar10.py:cpu's ResNet-20 (batch 128, 4-pixel crop and flip in jit),
cut to `--train-images` training images and 500 evaluation images, trained once with the data on the
device and once streamed from the JPEG files (unpacked once into the data dir) with each worker count.
Each run's result.json records `data_wait_seconds` (host time blocked waiting for the next training
batch; 0 on the device, where the gather is part of the step) and `data_wait_fraction` (that over the
loop's wall time, evaluation and checkpoints included). Also printed: the median training images/s,
which shows what decoding costs the step when the decoding threads share the CPU with XLA. All runs
compute the same parameters (tests/test_streaming.py). Writes benchmarks/results/data_wait.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "resnet_cifar10.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=6400)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-dir", type=Path, default=None, help="TFDS data dir (default: a temporary one)")
    args = parser.parse_args()

    import jax

    from cnn_jax import config as config_lib
    from cnn_jax.train.loop import train
    from cnn_jax.train.setup import DataPaths

    shared = ROOT.parent / "shared" / "data"
    with tempfile.TemporaryDirectory() as tmp:
        paths = DataPaths(args.data_dir or Path(tmp) / "tfds", (shared,))
        rows = []
        for source, workers in [("device", 0)] + [("stream", w) for w in args.workers]:
            config = config_lib.load_experiment(f"{EXPERIMENT}:cpu")
            overrides = {
                "dataset.train_subset": args.train_images,
                "dataset.eval_subset": 500,
                "train.epochs": args.epochs,
                "schedule.warmup_epochs": 0.0,
                "dataset.source": source,
                "dataset.workers": workers,
            }
            config = config_lib.apply_overrides(config, overrides)
            result = train(config, Path(tmp) / f"{source}{workers}", paths, progress=False, log=lambda *a: None)
            rows.append(
                {
                    "pipeline": source,
                    "workers": workers,
                    "data_wait_seconds": round(result["data_wait_seconds"], 2),
                    "data_wait_fraction": round(result["data_wait_fraction"], 4),
                    "loop_seconds": round(result["loop_seconds"], 1),
                    "images_per_sec_median": round(result["images_per_sec_median"], 1),
                    "final_test_accuracy": result["final"]["test_accuracy"],
                }
            )
            print(
                f"{source:7s} workers {workers}: waits {rows[-1]['data_wait_fraction']:.1%} of "
                f"{rows[-1]['loop_seconds']} s, {rows[-1]['images_per_sec_median']} img/s"
            )
    out = {
        "benchmark": "data_wait",
        "model": "resnet20",
        "train_images": args.train_images,
        "epochs": args.epochs,
        "batch_size": 128,
        "rows": rows,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "jax": jax.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    target = ROOT / "benchmarks" / "results" / "data_wait.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
