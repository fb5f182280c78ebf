"""XLA CPU compiler levers on cnn_jax's training step: each lever is one extra XLA_FLAGS setting.

    python benchmarks/xla_levers.py [--levers base,mof,...] [--models seed_cnn,resnet20,allcnn_all_c]
        [--repeats 3] [--epoch-images 3200] [--out benchmarks/results/xla_levers.json]

For every lever it runs `train_step_speed.py --impls project` (the library as it ships, plus the lever's
flags in XLA_FLAGS; a flag of the library's own name given here replaces the library's) in fresh
processes, one lever after the other, and collects train/eval images/s per model. `base` adds nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
YNN_CONV_OFF = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"  # the library's default
LEVERS = {
    "base": "",
    "multi_output_fusion": "--xla_backend_extra_options=xla_cpu_use_multi_output_fusion",
    "ynn_no_reduce": YNN_CONV_OFF + ",-reduce",
    "vector_512": "--xla_cpu_prefer_vector_width=512",
    "vector_128": "--xla_cpu_prefer_vector_width=128",
    "eigen_one_thread": "--xla_cpu_multi_thread_eigen=false",
    "scheduler_memory": "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",
    "scheduler_concurrency": "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED",
    "fast_runtime_preset": "--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME",
}


def run_lever(flags: str, opts) -> dict:
    """One train_step_speed.py run (project only) under the lever's XLA_FLAGS; its per-model rows."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(part for part in (os.environ.get("XLA_FLAGS", ""), flags) if part)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speed.json"
        command = [sys.executable, str(HERE / "train_step_speed.py"), "--impls", "project", "--models", opts.models]
        command += ["--repeats", str(opts.repeats), "--epoch-images", str(opts.epoch_images), "--out", str(out)]
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        result = json.loads(out.read_text())
    rows = {}
    for model, measured in result["models"].items():
        row = measured["rows"]["project:default"]
        rows[model] = {key: row[key] for key in ("train_img_s", "eval_img_s", "compile_s", "peak_mb", "xla_flags")}
    return {"xla_flags": flags, "models": rows}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levers", default=",".join(LEVERS))
    parser.add_argument("--extra", action="append", default=[], help="NAME=FLAGS: another lever (e.g. a combination)")
    parser.add_argument("--models", default="seed_cnn,resnet20,allcnn_all_c")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epoch-images", type=int, default=3200)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "xla_levers.json")
    opts = parser.parse_args(argv)
    names = [name for name in opts.levers.split(",") if name]
    unknown = sorted(set(names) - set(LEVERS))
    if unknown:
        parser.error(f"unknown lever(s) {', '.join(unknown)}; known: {', '.join(LEVERS)}")
    if any("=" not in item for item in opts.extra):
        parser.error("--extra takes NAME=FLAGS, e.g. --extra 'both=--xla_cpu_prefer_vector_width=512 ...'")
    levers = {name: LEVERS[name] for name in names}
    levers.update(dict(item.split("=", 1) for item in opts.extra))
    results = {}
    for name, flags in levers.items():
        results[name] = run_lever(flags, opts)
        cells = [
            f"{model} {row['train_img_s']:.0f}/{row['eval_img_s']:.0f}"
            for model, row in results[name]["models"].items()
        ]
        print(f"{name:24s} " + "  ".join(cells), flush=True)
    opts.out.write_text(json.dumps({"levers": results, "settings": vars(opts) | {"out": str(opts.out)}}, indent=2))


if __name__ == "__main__":
    main()
