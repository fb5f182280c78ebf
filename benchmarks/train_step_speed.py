"""Train-step speed: cnn_jax's step vs PyTorch (eager, torch.compile) and Keras 3 (JAX backend), on a CPU or a GPU.

    python benchmarks/train_step_speed.py [--models seed_cnn,resnet20,allcnn_all_c] [--impls project,torch,keras]
        [--steps 10] [--repeats 5] [--warmup 2] [--batch-size 128] [--epoch-images 12800] [--variant default,plain]
        [--dtype float32] [--torch-device auto] [--order model] [--budget 0] [--worker-timeout 0]
        [--out benchmarks/results/train_step_speed.json]

    # on a GPU (what benchmarks/gpu_check.py runs):
    python benchmarks/train_step_speed.py --models seed_cnn,resnet20,resnet50 --impls project,torch,torch_compile \
        --variant default --dtype float32,bfloat16 --batch-size 256,resnet50=128 --epoch-images 0 --order impl

Needs the `bench` extra (pip install -e '.[bench]'); a missing framework is reported and skipped.
For each model (seed_cnn on 28x28x1, CIFAR ResNet-20 and All-CNN-C on 32x32x3, 10 classes; `resnet50`,
ImageNet's ResNet-50 on 224x224x3 with 1000 classes, only when asked for) and each implementation,
built with the same layers, padding, initialization and parameter count:

  project  cnn_jax's own train step (`make_train_step`, SGD momentum 0.9 via `make_optimizer`, no
           augmentation), jitted with the state donated, on one fixed device-resident batch; the
           variant 'plain' runs it with CNN_JAX_PLAIN=1 (XLA's CPU defaults, `nn.max_pool`: the
           formulation before cnn_jax/tuning.py), the others are levers of conv_formulations.py;
  torch    PyTorch eager, NCHW, model.train(), SGD momentum 0.9, cross-entropy, all CPU threads;
  torch_compile  the same with the model wrapped in `torch.compile` (default mode; compiling is in the
           first step, and again for eval in the first eval pass);
  keras    Keras 3 on the JAX backend, compiled with SGD momentum 0.9, timed inside `model.fit` on
           in-memory numpy arrays (its own batching and host-to-device copies included) by a
           callback that waits for the batch and timestamps it; `keras_train_on_batch` (optional)
           times a `train_on_batch` loop instead.

Every implementation gets uint8 images and standardizes them inside its step. Reported: first step
(compile included) in seconds, steady-state train and eval (forward only, no gradient) images/s as
the median of --repeats windows of --steps steps after --warmup steps, peak resident memory
(ru_maxrss) above the worker's own after its imports and data, and the fraction of this CPU's
float32 matmul rate (a jitted 2048x2048 jnp.matmul) that the training step reaches at 3 x the
forward FLOPs of `cnn_jax.models.summary` (which counts a multiply-add as 2 FLOPs, convs and dense layers
only). For the project it also times one epoch of `make_drive` (the gather from a device-resident
split plus the step) against the steady step, as the input-pipeline overhead. Each measurement runs
in its own process (`--worker`), so peaks are separate. Data are random: speed only, no learning.

Devices and precision. JAX runs on its default backend. PyTorch runs on `--torch-device`: `auto` (the
default) is cuda when the JAX backend is a GPU, else the CPU (so CPU results stay comparable); on cuda
it uses cudnn.benchmark (autotuning, as XLA does) and TF32 for float32 matmuls and convolutions (JAX's
GPU default), synchronizes at the end of every timed window, and the table adds the GPU memory peak.
`--dtype float32,bfloat16` adds a row per implementation and dtype (`project@bfloat16`): cnn_jax's
`train.compute_dtype` (bfloat16 forward and backward, float32 parameters, optimizer and loss), PyTorch
under `torch.autocast(dtype=torch.bfloat16)`, Keras with the `mixed_bfloat16` policy; the ratio column
compares with PyTorch eager at the same dtype, and the matmul peak is measured in each dtype.
`--batch-size 256,resnet50=128` gives a default and per-model sizes. `--order impl` runs every
model's rows of the first implementation before the next (the costly `torch_compile` rows last), and
`--budget S` skips the rows not started within S seconds (a started row is stopped at the budget),
recording them as skipped, so a time-boxed run still writes its table and JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

INPUT_SHAPES = {
    "seed_cnn": (28, 28, 1),
    "resnet20": (32, 32, 3),
    "allcnn_all_c": (32, 32, 3),
    "resnet50": (224, 224, 3),
}
DEFAULT_MODELS = ("seed_cnn", "resnet20", "allcnn_all_c")  # resnet50 only when asked for (--models)
NUM_CLASSES = 10
MODEL_CLASSES = {"resnet50": 1000}  # the others: NUM_CLASSES
DTYPES = ("float32", "bfloat16")
LEARNING_RATE, MOMENTUM = 0.05, 0.9
TRAIN_FLOPS_FACTOR = 3  # a training step ~ forward + backward (2 x forward) FLOPs
IMPL_PACKAGES = {
    "project": "jax",
    "torch": "torch",
    "torch_compile": "torch",
    "keras": "keras",
    "keras_train_on_batch": "keras",
}
NOT_INSTALLED = "not installed (pip install -e '.[bench]')"
RESULT_PREFIX = "RESULT "
VERSION_PACKAGES = ("cnn_jax", "jax", "jaxlib", "flax", "optax", "numpy", "torch", "keras")
# Every worker starts from the XLA_FLAGS the benchmark was started with (importing cnn_jax here adds its
# own flag to os.environ, which must not reach the Keras workers); a variant may add environment.
USER_XLA_FLAGS = os.environ.get("XLA_FLAGS")
# The driver process (model summaries, provenance) must not take 75% of a GPU's memory while the workers
# measure; the workers get the allocator setting the benchmark was started with.
PREALLOCATE = "XLA_PYTHON_CLIENT_PREALLOCATE"
USER_PREALLOCATE = os.environ.get(PREALLOCATE)
# plain: XLA's own CPU defaults, nn.max_pool and XLA's convolutions (cnn_jax/tuning.py); xla_convs: the library with
# XLA's convolutions instead of oneDNN's (cnn_jax/kernels)
VARIANT_ENV = {"plain": {"CNN_JAX_PLAIN": "1"}, "xla_convs": {"CNN_JAX_NO_ONEDNN": "1"}}


# ----------------------------------------------------------------------------- shared helpers


def num_classes(model_name: str) -> int:
    return MODEL_CLASSES.get(model_name, NUM_CLASSES)


def random_data(
    n: int, input_shape: tuple[int, int, int], seed: int = 0, classes: int = NUM_CLASSES
) -> tuple[np.ndarray, np.ndarray]:
    """n random uint8 NHWC images and int32 labels (speed only)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *input_shape), dtype=np.uint8), rng.integers(0, classes, n, dtype=np.int32)


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the images scaled to [0, 1], for the standardization in every step."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return pixels.mean(0).astype(np.float32), pixels.std(0).astype(np.float32)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def window_rates(run: Callable[[int], None], steps: int, repeats: int, batch_size: int) -> list[float]:
    """Images/s of `repeats` windows, each `run(steps)` (which returns once its work has finished)."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(steps)
        rates.append(steps * batch_size / (time.perf_counter() - t0))
    return rates


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ----------------------------------------------------------------------------- project variants


@dataclass(frozen=True)
class ProjectProgram:
    """What the timing needs from one project variant: un-jitted step functions and a fresh state."""

    train_step: Callable  # (state, batch, key) -> (state, metric sums), as make_train_step returns
    eval_step: Callable  # (state, batch) -> metric sums
    drive: Callable  # (state, totals, split, order, index) -> (state, totals), as make_drive returns
    init_state: Callable[[], object]  # () -> TrainState


def project_config(model_name: str, batch_size: int, dtype: str = "float32"):
    """default_config() with the model, SGD momentum 0.9 at a constant lr 0.05, no augmentation, computing in
    `dtype` (train.compute_dtype)."""
    from cnn_jax.config import default_config
    from cnn_jax.validation import validate

    config = default_config()
    config.model.name = model_name
    config.optimizer.name, config.optimizer.lr, config.optimizer.momentum = "sgd", LEARNING_RATE, MOMENTUM
    config.schedule.name = "constant"
    config.train.batch_size = batch_size
    config.train.eval_batch_size = batch_size
    config.train.compute_dtype = dtype
    validate(config)
    return config


def library_variant(config, input_shape, mean, std) -> ProjectProgram:
    """'default': the library's model, optimizer, train and eval steps and drive, as `cnn-jax train` builds them."""
    from cnn_jax.data.preprocess import InputTransform
    from cnn_jax.models import build_model
    from cnn_jax.train.devices import data_mesh
    from cnn_jax.train.loop import make_drive
    from cnn_jax.train.optim import make_optimizer, make_schedule
    from cnn_jax.train.state import create_train_state
    from cnn_jax.train.steps import make_eval_step, make_train_step

    model = build_model(config.model, num_classes=num_classes(config.model.name))
    tx = make_optimizer(config, make_schedule(config, steps_per_epoch=1))
    inputs = InputTransform(tuple(mean.tolist()), tuple(std.tolist()))
    # make_drive reads only these fields of a RunSetup (which would also load a real dataset).
    setup = SimpleNamespace(
        config=config,
        model=model,
        step_model=model,
        tx=tx,
        inputs=inputs,
        step_inputs=inputs,
        trainable=None,
        devices=data_mesh(config),
    )
    return ProjectProgram(
        train_step=make_train_step(model, tx, config, inputs),
        eval_step=make_eval_step(model, inputs, compute_dtype=config.train.compute_dtype),
        drive=make_drive(setup),
        init_state=lambda: create_train_state(model, tx, input_shape, config.seed),
    )


def conv_variant(formulation: str, min_channels: int) -> Callable[..., ProjectProgram]:
    """The library's program with each conv of >= `min_channels` input channels computed by `formulation`
    of benchmarks/conv_formulations.py, the others by XLA's convolution."""

    def build(config, input_shape, mean, std) -> ProjectProgram:
        import conv_formulations as formulations

        conv = formulations.from_channels(getattr(formulations, formulation), min_channels)
        program = library_variant(config, input_shape, mean, std)
        return ProjectProgram(
            train_step=formulations.traced_with(conv, program.train_step),
            eval_step=formulations.traced_with(conv, program.eval_step),
            drive=formulations.traced_with(conv, program.drive),
            init_state=program.init_state,
        )

    return build


# name -> builder(config, input_shape, mean, std) -> ProjectProgram. Add a variant (another pooling
# formulation, a different step) here and pass --variant default,NAME to get one row for each.
PROJECT_VARIANTS: dict[str, Callable[..., ProjectProgram]] = {
    "default": library_variant,
    "plain": library_variant,  # with VARIANT_ENV["plain"]: the formulation before cnn_jax/tuning.py
    "xla_convs": library_variant,  # with VARIANT_ENV["xla_convs"]: convolutions on XLA, not oneDNN
    "im2col": conv_variant("im2col_conv", 1),  # every conv as shifted slices + one matmul
    "im2col64": conv_variant("im2col_conv", 64),  # only convs with >= 64 input channels
    "wgrad_matmul": conv_variant("wgrad_matmul_conv", 1),  # only the kernel gradient as that matmul
}


# ----------------------------------------------------------------------------- workers


def jax_device_peak_mb() -> float | None:
    """Peak bytes in use on JAX's first device (GPU/TPU allocators report it; None where not reported)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None


def project_worker(model_name: str, variant: str, opts) -> dict:
    """Time the project's jitted step (compile, train, eval) and one epoch of its drive."""
    import jax

    # Importing cnn_jax sets its XLA flags before JAX starts a backend; the library's modules (flax, optax,
    # orbax) load before the memory baseline, as torch and keras load theirs.
    import cnn_jax.models
    import cnn_jax.train.loop  # noqa: F401
    from cnn_jax import tuning

    shape, batch_size = INPUT_SHAPES[model_name], opts.batch_size
    images, labels = random_data(batch_size, shape, classes=num_classes(model_name))
    mean, std = channel_stats(images)
    batch = jax.device_put({"image": images, "label": labels, "mask": np.ones(batch_size, bool)})
    baseline = peak_rss_mb()
    program = PROJECT_VARIANTS[variant](project_config(model_name, batch_size, opts.dtype), shape, mean, std)
    state = program.init_state()

    def step(state, batch):
        return program.train_step(state, batch, jax.random.fold_in(state.rng, state.step))

    t0 = time.perf_counter()
    train = jax.jit(step, donate_argnums=(0,)).lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    state, sums = train(state, batch)
    jax.block_until_ready(sums)
    first_step_s = time.perf_counter() - t0

    def run_train(n):
        nonlocal state
        for _ in range(n):
            state, _ = train(state, batch)
        jax.block_until_ready(state)

    run_train(opts.warmup)
    rates = window_rates(run_train, opts.steps, opts.repeats, batch_size)
    evaluate = jax.jit(program.eval_step)

    def run_eval(n):
        jax.block_until_ready([evaluate(state, batch) for _ in range(n)])

    run_eval(1)
    eval_rates = window_rates(run_eval, opts.steps, opts.repeats, batch_size)
    peak = peak_rss_mb()
    params = {"trainable": tree_size(state.params), "non_trainable": tree_size(state.batch_stats)}
    overhead = epoch_overhead(program, model_name, opts, statistics.median(rates)) if opts.epoch_images else None
    device = jax.devices()[0]
    return {
        "params": params,
        "compile_s": compile_s,
        "first_step_s": first_step_s,
        "train_rates": rates,
        "eval_rates": eval_rates,
        "peak_mb": peak - baseline,
        "baseline_mb": baseline,
        "device_peak_mb": jax_device_peak_mb(),
        "device": f"{jax.default_backend()}: {device.device_kind}",
        "overhead": overhead,
        "tuning": tuning.describe(),
        "method": f"jit(make_train_step) with the state donated, variant '{variant}', train.compute_dtype "
        f"{opts.dtype}, one fixed batch on device",
    }


def tree_size(tree) -> int:
    import jax

    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


def epoch_overhead(program: ProjectProgram, model_name: str, opts, step_rate: float) -> dict:
    """One epoch of make_drive over a device-resident random split vs steps x the steady step."""
    import jax

    from cnn_jax.data.arrays import Split
    from cnn_jax.data.pipeline import epoch_permutation, to_device
    from cnn_jax.train.steps import empty_totals

    images, labels = random_data(opts.epoch_images, INPUT_SHAPES[model_name], seed=1, classes=num_classes(model_name))
    split = to_device(Split(images, labels))
    steps = split.num_batches(opts.batch_size)
    state, totals = program.init_state(), empty_totals()
    order_fn = jax.jit(epoch_permutation, static_argnums=2)
    data_key = jax.random.PRNGKey(0)
    order = order_fn(data_key, 0, split.size)
    drive = jax.jit(program.drive, donate_argnums=(0, 1)).lower(state, totals, split, order, 0).compile()
    state, totals = drive(state, totals, split, order, 0)  # warm-up
    jax.block_until_ready(totals)
    t0 = time.perf_counter()
    order = order_fn(data_key, 1, split.size)
    for index in range(steps):
        state, totals = drive(state, totals, split, order, index)
    jax.block_until_ready(totals)
    epoch_s = time.perf_counter() - t0
    steady_s = steps * opts.batch_size / step_rate
    return {
        "images": split.size,
        "steps": steps,
        "epoch_s": epoch_s,
        "steady_steps_s": steady_s,
        "overhead_pct": 100.0 * (epoch_s / steady_s - 1.0),
    }


def torch_device(torch, name: str):
    """The torch.device for --torch-device (resolved by the driver to cpu or cuda), set up for timing."""
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                "--torch-device cuda, but torch.cuda.is_available() is False (a CPU build of torch, or no driver)"
            )
        torch.backends.cudnn.benchmark = True  # autotuned convolution algorithms, as XLA autotunes
        torch.backends.cuda.matmul.allow_tf32 = True  # JAX's GPU default for float32 matmuls (TF32)
        torch.backends.cudnn.allow_tf32 = True  # torch's default for convolutions
    return torch.device(name)


def torch_worker(model_name: str, opts, compiled: bool = False) -> dict:
    """Time PyTorch eager (or `torch.compile`d): first step, train steps, eval forward passes."""
    import contextlib

    import torch
    import torch.nn.functional as F
    import torch_models

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    device = torch_device(torch, opts.torch_device)
    cuda = device.type == "cuda"
    shape, batch_size = INPUT_SHAPES[model_name], opts.batch_size
    images, labels = random_data(batch_size, shape, classes=num_classes(model_name))
    mean, std = (torch.from_numpy(a).view(1, -1, 1, 1).to(device) for a in channel_stats(images))
    x_u8 = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    y = torch.from_numpy(labels).long().to(device)
    baseline = peak_rss_mb()
    model = torch_models.build(model_name, shape[-1], num_classes(model_name)).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    run_model = torch.compile(model) if compiled else model
    bf16 = opts.dtype == "bfloat16"

    def precision():
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def forward():
        """(loss, correct): standardize the uint8 batch, logits, cross-entropy, and the accuracy the others compute."""
        with precision():
            logits = run_model((x_u8.float() / 255.0 - mean) / std)
        logits = logits.float()
        return F.cross_entropy(logits, y), (logits.detach().argmax(1) == y).sum()

    def run_train(n):
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            loss, _ = forward()
            loss.backward()
            optimizer.step()
        sync()

    def run_eval(n):
        with torch.no_grad():
            for _ in range(n):
                forward()
        sync()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run_train(1)
    first_step_s = time.perf_counter() - t0
    run_train(opts.warmup)
    rates = window_rates(run_train, opts.steps, opts.repeats, batch_size)
    model.eval()
    run_eval(1)
    eval_rates = window_rates(run_eval, opts.steps, opts.repeats, batch_size)
    model.train()
    how = "torch.compile(model) (default mode)" if compiled else "eager"
    return {
        "params": torch_models.parameter_counts(model),
        "first_step_s": first_step_s,
        "train_rates": rates,
        "eval_rates": eval_rates,
        "peak_mb": peak_rss_mb() - baseline,
        "baseline_mb": baseline,
        "device_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "device": f"cuda: {torch.cuda.get_device_name()}" if cuda else "cpu",
        "threads": torch.get_num_threads(),
        "method": f"{how}, NCHW, model.train(), SGD(momentum=0.9), F.cross_entropy; eval under torch.no_grad()"
        + ("; autocast bfloat16" if bf16 else "")
        + ("; cudnn.benchmark, TF32 matmuls and convolutions" if cuda else ""),
    }


def keras_setup(model_name: str, n: int, opts):
    """(keras module, compiled model, images, labels, baseline MB) for n random examples."""
    os.environ["KERAS_BACKEND"] = "jax"
    import keras
    import keras_models

    keras.utils.set_random_seed(0)
    if opts.dtype == "bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    images, labels = random_data(n, INPUT_SHAPES[model_name], classes=num_classes(model_name))
    mean, std = channel_stats(images[: opts.batch_size])
    baseline = peak_rss_mb()
    model = keras_models.build(model_name, INPUT_SHAPES[model_name], num_classes(model_name), mean, std)
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return keras, model, images, labels, baseline


def keras_worker(model_name: str, opts) -> dict:
    """Time Keras `model.fit` (batches timestamped by a callback) and `model.evaluate`."""
    import jax

    b, steps, warmup = opts.batch_size, opts.steps, max(opts.warmup, 1)
    batches = warmup + steps * opts.repeats
    keras, model, images, labels, baseline = keras_setup(model_name, batches * b, opts)
    marks = [0] + [warmup - 1 + k * steps for k in range(opts.repeats + 1)]

    class BatchClock(keras.callbacks.Callback):
        """Waits for chosen batches to finish (JAX dispatch is asynchronous) and timestamps them."""

        def __init__(self):
            super().__init__()
            self.times = {}

        def on_train_batch_end(self, batch, logs=None):
            if batch in marks:
                jax.block_until_ready(logs)
                self.times[batch] = time.perf_counter()

    clock = BatchClock()
    t0 = time.perf_counter()
    model.fit(images, labels, batch_size=b, epochs=1, shuffle=True, verbose=0, callbacks=[clock])
    rates = [steps * b / (clock.times[marks[k + 1]] - clock.times[marks[k]]) for k in range(1, len(marks) - 1)]
    eval_x, eval_y = images[: steps * b], labels[: steps * b]
    model.evaluate(eval_x[:b], eval_y[:b], batch_size=b, verbose=0)  # compiles the test step

    def run_eval(n):
        model.evaluate(eval_x[: n * b], eval_y[: n * b], batch_size=b, verbose=0)

    eval_rates = window_rates(run_eval, steps, opts.repeats, b)
    return {
        "params": keras_parameter_counts(model),
        "first_step_s": clock.times[0] - t0,
        "train_rates": rates,
        "eval_rates": eval_rates,
        "peak_mb": peak_rss_mb() - baseline,
        "baseline_mb": baseline,
        "method": f"model.fit(numpy uint8, shuffle=True), one epoch of {batches} batches, the first {warmup} "
        "(compile included) untimed; eval with model.evaluate",
    }


def keras_train_on_batch_worker(model_name: str, opts) -> dict:
    """Time a Keras `train_on_batch` loop over consecutive numpy batches, and a `test_on_batch` loop."""
    b = opts.batch_size
    keras, model, images, labels, baseline = keras_setup(model_name, opts.steps * b, opts)

    def run(fn, n):
        for i in range(n):
            j = i % opts.steps
            fn(images[j * b : (j + 1) * b], labels[j * b : (j + 1) * b])  # returns Python floats: synced

    t0 = time.perf_counter()
    run(model.train_on_batch, 1)
    first_step_s = time.perf_counter() - t0
    run(model.train_on_batch, opts.warmup)
    rates = window_rates(lambda n: run(model.train_on_batch, n), opts.steps, opts.repeats, b)
    run(model.test_on_batch, 1)
    eval_rates = window_rates(lambda n: run(model.test_on_batch, n), opts.steps, opts.repeats, b)
    return {
        "params": keras_parameter_counts(model),
        "first_step_s": first_step_s,
        "train_rates": rates,
        "eval_rates": eval_rates,
        "peak_mb": peak_rss_mb() - baseline,
        "baseline_mb": baseline,
        "method": "model.train_on_batch / test_on_batch loops over numpy uint8 batches",
    }


def keras_parameter_counts(model) -> dict[str, int]:
    import keras_models

    return keras_models.parameter_counts(model)


def matmul_worker(opts) -> dict:
    """FLOP/s of a jitted n x n jnp.matmul in each --dtype (median of repeated calls after a warm-up), and the
    JAX backend and device it ran on; `flops_per_s` and `median_s` are float32's."""
    import jax
    import jax.numpy as jnp

    n, by_dtype, seconds = opts.matmul_size, {}, {}
    for dtype in dict.fromkeys(["float32", *opts.dtype.split(",")]):
        a, b = (jax.random.normal(jax.random.PRNGKey(i), (n, n), dtype) for i in (0, 1))
        matmul = jax.jit(jnp.matmul)
        matmul(a, b).block_until_ready()
        times = []
        for _ in range(max(5, opts.repeats)):
            t0 = time.perf_counter()
            matmul(a, b).block_until_ready()
            times.append(time.perf_counter() - t0)
        seconds[dtype] = statistics.median(times)
        by_dtype[dtype] = 2.0 * n**3 / seconds[dtype]
    return {
        "n": n,
        "median_s": seconds["float32"],
        "flops_per_s": by_dtype["float32"],
        "flops_per_s_by_dtype": by_dtype,
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
    }


def run_worker(impl: str, model_name: str, opts) -> dict:
    """Dispatch one --worker measurement; `impl` is project[:VARIANT], torch, torch_compile, keras,
    keras_train_on_batch or matmul."""
    if impl == "matmul":
        result = matmul_worker(opts)
    elif impl.startswith("project"):
        result = project_worker(model_name, impl.partition(":")[2] or "default", opts)
    elif impl == "torch_compile":
        result = torch_worker(model_name, opts, compiled=True)
    else:
        result = {"torch": torch_worker, "keras": keras_worker, "keras_train_on_batch": keras_train_on_batch_worker}[
            impl
        ](model_name, opts)
    return {**result, "dtype": opts.dtype, "xla_flags": os.environ.get("XLA_FLAGS", "")}


# ----------------------------------------------------------------------------- driver


def spawn(
    impl: str,
    model_name: str,
    opts,
    *,
    dtype: str = "float32",
    batch_size: int = 0,
    timeout: float | None = None,
    script: str = __file__,
) -> dict:
    """Run one measurement in a fresh process (its own process group, all killed at `timeout` seconds); its
    result, or {'error': ...}. `script` is the worker's file (another benchmark reusing these workers)."""
    command = [
        sys.executable,
        script,
        "--worker",
        impl,
        model_name,
        "--steps",
        str(opts.steps),
        "--repeats",
        str(opts.repeats),
        "--warmup",
        str(opts.warmup),
        "--batch-size",
        str(batch_size or opts.batch_sizes.get(model_name, opts.default_batch_size)),
        "--epoch-images",
        str(opts.epoch_images),
        "--matmul-size",
        str(opts.matmul_size),
        "--dtype",
        dtype,
        "--torch-device",
        opts.torch_device,
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", PREALLOCATE)}
    env.update({"KERAS_BACKEND": "jax", **VARIANT_ENV.get(impl.partition(":")[2], {})})
    if USER_XLA_FLAGS is not None:
        env["XLA_FLAGS"] = USER_XLA_FLAGS
    if USER_PREALLOCATE is not None:
        env[PREALLOCATE] = USER_PREALLOCATE
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        return {"error": f"timed out after {timeout:.0f} s (--budget / --worker-timeout)"}
    except BaseException:  # Ctrl-C included: the worker's group must not outlive the driver
        kill_group(process)
        raise
    results = [line[len(RESULT_PREFIX) :] for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if process.returncode != 0 or not results:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"worker failed (exit {process.returncode}): {tail}"}
    return json.loads(results[-1])


def kill_group(process: subprocess.Popen) -> None:
    """Kill a worker and the processes it started (torch.compile's compile workers), then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate()


def impl_rows(impls: list[str], variants: list[str]) -> list[str]:
    """Worker names in table order: one project row per variant."""
    rows = []
    for impl in impls:
        rows += [f"project:{v}" for v in variants] if impl == "project" else [impl]
    return rows


def row_key(impl: str, dtype: str) -> str:
    """A row's key: the worker name, with '@dtype' for any dtype but float32 (so float32 keys stay as before)."""
    return impl if dtype == "float32" else f"{impl}@{dtype}"


def label(impl: str) -> str:
    return "project" + impl[len("project:default") :] if impl.startswith("project:default") else impl


def model_info(model_name: str, batch_size: int) -> dict:
    """Input shape, classes, batch size, FLOPs and parameter counts of the cnn_jax model (its abstract trace)."""
    from cnn_jax.models import build_model
    from cnn_jax.models.summary import summarize

    shape = INPUT_SHAPES[model_name]
    summary = summarize(build_model(model_name, num_classes=num_classes(model_name)), shape)
    return {
        "input_shape": list(shape),
        "num_classes": num_classes(model_name),
        "batch_size": batch_size,
        "forward_flops_per_image": summary.flops,
        "train_flops_per_image": TRAIN_FLOPS_FACTOR * summary.flops,
        "params": {"trainable": summary.trainable_params, "non_trainable": summary.non_trainable_params},
        "rows": {},
    }


def run_plan(model_names: list[str], impls: list[str], opts, peaks: dict, deadline: float | None) -> dict:
    """Every (model, implementation, dtype) row, run in --order, each in its own process; rows not started before
    `deadline` (time.monotonic) are recorded as skipped. Returns {model: model_info with its rows in table order}."""
    dtypes = opts.dtype.split(",")
    models = {name: model_info(name, opts.batch_sizes.get(name, opts.default_batch_size)) for name in model_names}
    if opts.order == "impl":
        jobs = [(m, i, d) for i in impls for m in model_names for d in dtypes]
    else:
        jobs = [(m, i, d) for m in model_names for d in dtypes for i in impls]
    done = {}
    for name, impl, dtype in jobs:
        key, info = row_key(impl, dtype), models[name]
        left = None if deadline is None else deadline - time.monotonic()
        timeout = min(x for x in (left, opts.worker_timeout or None, math.inf) if x is not None)
        if importlib.util.find_spec(IMPL_PACKAGES[impl.partition(":")[0]]) is None:
            result = {"error": NOT_INSTALLED}
        elif left is not None and left <= 0:
            result = {"error": f"skipped: the --budget of {opts.budget:.0f} s was spent"}
        else:
            result = spawn(
                impl,
                name,
                opts,
                dtype=dtype,
                batch_size=info["batch_size"],
                timeout=None if timeout == math.inf else timeout,
            )
        row = finish_row(result, info["forward_flops_per_image"], peaks.get(dtype))
        if "params" in result:
            assert result["params"] == info["params"], (
                f"{name} {impl}: parameters {result['params']} != cnn_jax's {info['params']}"
            )
        done[name, key] = row
        print(f"  {name} {label(key)}: {describe(row)}", flush=True)
    for name, info in models.items():
        info["rows"] = {row_key(i, d): done[name, row_key(i, d)] for d in dtypes for i in impls}
    return models


def finish_row(result: dict, forward_flops: int, peak_flops: float | None) -> dict:
    """Add medians and the fraction of the matmul peak to a worker's result."""
    if "error" in result:
        return result
    train = statistics.median(result["train_rates"])
    achieved = train * TRAIN_FLOPS_FACTOR * forward_flops
    return {
        **result,
        "train_img_s": train,
        "eval_img_s": statistics.median(result["eval_rates"]),
        "train_flops_per_s": achieved,
        "pct_of_matmul_peak": 100.0 * achieved / peak_flops if peak_flops else None,
    }


def describe(row: dict) -> str:
    if "error" in row:
        return row["error"]
    return (
        f"{row['train_img_s']:.0f} img/s train, {row['eval_img_s']:.0f} img/s eval, "
        f"first step {row['first_step_s']:.1f} s"
    )


def markdown_table(model_name: str, result: dict) -> str:
    """The model's Markdown table (a row per implementation and dtype) and its input-pipeline line."""
    rows = result["rows"]
    gpu = any(row.get("device_peak_mb") is not None for row in rows.values())
    lines = [
        "| implementation | params (trainable + BN stats) | compile / first step s | train img/s | "
        "ratio to PyTorch | eval img/s | peak MB | % of matmul peak |" + (" GPU peak MB |" if gpu else ""),
        "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if gpu else ""),
    ]
    for key, row in rows.items():
        if "error" in row:
            lines.append(f"| {label(key)} | {row['error']} | | | | | | |" + (" |" if gpu else ""))
            continue
        torch_rate = rows.get(row_key("torch", row.get("dtype", "float32")), {}).get("train_img_s")
        ratio = f"{row['train_img_s'] / torch_rate:.2f}x" if torch_rate else "-"
        pct = f"{row['pct_of_matmul_peak']:.1f}%" if row["pct_of_matmul_peak"] is not None else "-"
        params = f"{row['params']['trainable']:,} + {row['params']['non_trainable']:,}"
        device_peak = row.get("device_peak_mb")
        lines.append(
            f"| {label(key)} | {params} | {row['first_step_s']:.2f} | {row['train_img_s']:.0f} | {ratio} | "
            f"{row['eval_img_s']:.0f} | {row['peak_mb']:.0f} | {pct} |"
            + ((f" {device_peak:,.0f} |" if device_peak is not None else " - |") if gpu else "")
        )
    shape = "x".join(map(str, result["input_shape"]))
    head = (
        f"### {model_name} on {shape} ({result['forward_flops_per_image'] / 1e6:.1f} MFLOPs forward per image, "
        f"x{TRAIN_FLOPS_FACTOR} for a training step)"
    )
    if result.get("num_classes", NUM_CLASSES) != NUM_CLASSES or result.get("batch_size") not in (None, 128):
        head += f", {result['num_classes']} classes, batch {result['batch_size']}"
    return "\n".join([head, "", *lines, "", overhead_line(result)])


def overhead_line(result: dict) -> str:
    for impl, row in result["rows"].items():
        o = row.get("overhead")
        if o:
            return (
                f"Input pipeline ({label(impl)}): one epoch of make_drive over {o['images']:,} device-resident "
                f"images ({o['steps']} steps) took {o['epoch_s']:.2f} s vs {o['steps']} x the steady step = "
                f"{o['steady_steps_s']:.2f} s: overhead {o['overhead_pct']:+.1f}%."
            )
    return "Input pipeline: not measured (project not run, or --epoch-images 0)."


def provenance_info() -> dict:
    from cnn_jax import provenance

    return {
        "versions": provenance.package_versions(VERSION_PACKAGES),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "manifest": provenance.manifest(),
    }


def parse_batch_sizes(text: str) -> tuple[int, dict[str, int]]:
    """'128' or '256,resnet50=128': (the default batch size, {model: its own size})."""
    default, sizes = 128, {}
    for item in text.split(","):
        name, _, value = item.rpartition("=")
        if name and name not in INPUT_SHAPES:
            raise ValueError(f"unknown model {name!r} in '{item}'; models: {', '.join(INPUT_SHAPES)}")
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"'{item}' is not a positive batch size (give N or MODEL=N)")
        if name:
            sizes[name] = int(value)
        else:
            default = int(value)
    return default, sizes


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default=",".join(DEFAULT_MODELS), help=f"comma-separated, of {', '.join(INPUT_SHAPES)}"
    )
    parser.add_argument(
        "--impls", default="project,torch,keras", help=f"comma-separated, of {', '.join(IMPL_PACKAGES)}"
    )
    parser.add_argument(
        "--variant",
        default="default,plain",
        help=f"project variants, comma-separated, of {', '.join(PROJECT_VARIANTS)}",
    )
    parser.add_argument("--dtype", default="float32", help=f"compute dtypes, comma-separated, of {', '.join(DTYPES)}")
    parser.add_argument(
        "--torch-device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="where PyTorch runs; auto: cuda when JAX's default backend is a GPU, else cpu",
    )
    parser.add_argument("--steps", type=int, default=10, help="steps per timed window")
    parser.add_argument("--repeats", type=int, default=5, help="timed windows; the median is reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first one")
    parser.add_argument(
        "--batch-size", default="128", help="N for every model, or a default and per-model sizes: 256,resnet50=128"
    )
    parser.add_argument(
        "--epoch-images", type=int, default=12_800, help="images in the project's input-pipeline epoch; 0 skips it"
    )
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument(
        "--order",
        default="model",
        choices=("model", "impl"),
        help="run every row of a model before the next (model), or of an implementation before the next (impl)",
    )
    parser.add_argument(
        "--budget", type=float, default=0, help="seconds for the whole run; rows not started in time are skipped"
    )
    parser.add_argument("--worker-timeout", type=float, default=0, help="seconds one row may take; 0: no limit")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train_step_speed.json"))
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "MODEL"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for flag, value, allowed in (
        ("--models", args.models, INPUT_SHAPES),
        ("--impls", args.impls, IMPL_PACKAGES),
        ("--variant", args.variant, PROJECT_VARIANTS),
        ("--dtype", args.dtype, DTYPES),
    ):
        unknown = [x for x in value.split(",") if x not in allowed]
        if unknown:
            parser.error(f"{flag}: unknown {unknown[0]!r}; allowed: {', '.join(allowed)}")
    try:
        args.default_batch_size, args.batch_sizes = parse_batch_sizes(args.batch_size)
    except ValueError as error:
        parser.error(f"--batch-size: {error}")
    if args.batch_size.isdigit():
        args.batch_size = int(args.batch_size)  # as before per-model sizes existed: the JSON's settings keep an int
    if min(args.steps, args.repeats) < 1 or args.warmup < 0 or args.epoch_images < 0:
        parser.error("--steps and --repeats must be >= 1; --warmup and --epoch-images >= 0")
    if min(args.budget, args.worker_timeout) < 0:
        parser.error("--budget and --worker-timeout must be >= 0 (0: no limit)")
    if 0 < args.epoch_images < max([args.default_batch_size, *args.batch_sizes.values()]):
        parser.error("--epoch-images must be 0 or at least every model's --batch-size")
    return args


def format_flops(flops: float) -> str:
    return f"{flops / 1e12:.1f} TFLOP/s" if flops >= 1e12 else f"{flops / 1e9:.1f} GFLOP/s"


def main(argv=None) -> None:
    opts = parse_args(argv)
    if opts.worker:
        sys.path.insert(0, str(Path(__file__).resolve().parent))  # torch_models, keras_models
        print(RESULT_PREFIX + json.dumps(run_worker(*opts.worker, opts)), flush=True)
        return
    os.environ.setdefault(PREALLOCATE, "false")  # this process: model summaries and provenance only
    started = time.monotonic()
    deadline = started + opts.budget if opts.budget else None
    print(
        f"{os.cpu_count()} CPU cores ({cpu_model()}), batch {opts.batch_size}, {opts.repeats} windows of "
        f"{opts.steps} steps after {opts.warmup} warm-up steps; random uint8 data (speed only)",
        flush=True,
    )
    matmul = spawn("matmul", "-", opts, dtype=opts.dtype, batch_size=1, timeout=opts.worker_timeout or None)
    peaks = matmul.get("flops_per_s_by_dtype", {})
    if opts.torch_device == "auto":
        opts.torch_device = "cuda" if matmul.get("backend") == "gpu" else "cpu"
    print(
        f"matmul peak ({opts.matmul_size}^2, jitted jnp.matmul): "
        + (
            ", ".join(f"{d} {format_flops(f)}" for d, f in peaks.items())
            + f" on {matmul['backend']} ({matmul['device_kind']}); PyTorch on {opts.torch_device}"
            if peaks
            else matmul["error"]
        ),
        flush=True,
    )
    impls = impl_rows(opts.impls.split(","), opts.variant.split(","))
    models = run_plan(opts.models.split(","), impls, opts, peaks, deadline)
    print()
    for name, result in models.items():
        print(markdown_table(name, result) + "\n")
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items() if k != "worker"}
    opts.out.write_text(
        json.dumps(
            {
                "settings": settings,
                "data": "random uint8 images and labels: speed only",
                "train_flops_factor": TRAIN_FLOPS_FACTOR,
                "flops_convention": "cnn_jax.models.summary: a multiply-add counts 2 FLOPs; convs and dense layers",
                "matmul": matmul,
                "torch_device": opts.torch_device,
                "total_s": time.monotonic() - started,
                "models": models,
                "provenance": provenance_info(),
            },
            indent=1,
        )
    )
    print(f"written: {opts.out}")


if __name__ == "__main__":
    main()
