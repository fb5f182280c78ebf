"""Does bfloat16 compute cost accuracy? float32 vs mixed precision (bfloat16 activations, float32 parameters and loss).

The README's run (seed 002's `seed_cnn` on Fashion-MNIST, AdamW with warmup + cosine, label smoothing
0.1, horizontal flips) with only `train.compute_dtype` changed. In bfloat16 the forward and backward
pass run on bfloat16 copies of the images and parameters; parameters, optimizer state, batch-norm
statistics, the loss and the gradients the optimizer sees stay float32.

Presets:
  cpu   Fashion-MNIST, 15,000 training images (class-balanced), 2 epochs, 3 seeds, on a 2-core CPU
        with --jobs 2. It checks accuracy, not speed (the README's "Scale out" section has both).
  full  Fashion-MNIST, 8 epochs, 5 seeds: for a GPU/TPU, whose matrix units run bfloat16 natively.
"""

from pathlib import Path

from cnn_jax.config import load_module
from cnn_jax.sweep.plan import Sweep, field_axis

PRESETS = ("cpu", "full")
fashion_mnist_cnn = load_module(Path(__file__).with_name("fashion_mnist_cnn.py"))


def get_config(preset: str = "cpu"):
    config = fashion_mnist_cnn.get_config("quick" if preset == "cpu" else "default")  # the README's run
    config.experiment = "mixed_precision"
    if preset == "cpu":
        config.dataset.train_subset = 15_000
    return config


def get_sweep(preset: str = "cpu") -> Sweep:
    return Sweep(
        axes=(field_axis("compute_dtype", "train.compute_dtype", ("float32", "bfloat16")),),
        seeds=(0, 1, 2) if preset == "cpu" else (0, 1, 2, 3, 4),
        baseline={"compute_dtype": "float32"},
    )
