"""One 5x5 convolution vs two stacked 3x3 convolutions (same 5x5 receptive field), at equal width and at equal
parameters.

The network is `ablation_net` with two kernel-scheme units per stage (three stages, width doubling,
max-pooling, global average pooling); only the unit changes. A 5x5 conv from C to C channels has
25 C^2 weights, two 3x3 convs 18 C^2 (seed 002): at equal width the stacked version is smaller and has
one more non-linearity. The third level widens the stacked version until the parameter counts match:

  level        width  params (10 classes, 28x28x1)  FLOPs/image
  5x5          24     448,306                       91.3 M
  3x3x2        24     380,290                       81.6 M
  3x3x2_wide   26     446,144 (-0.5%)               95.8 M

Presets:
  cpu   Fashion-MNIST, 30,000 training images (class-balanced), 1 epoch, 3 seeds, on a 2-core CPU.
  full  Fashion-MNIST, 30 epochs, 5 seeds, with light augmentation: for a GPU/TPU, computing in bfloat16
        (float32 parameters and loss; train.compute_dtype); each level at its own learning rate, tuned
        on the validation split (a grid of five rates, tuning seeds 100 and 101, at the final length).
"""

from pathlib import Path

from cnn_jax.config import load_module
from cnn_jax.sweep.plan import Axis, Sweep, Tuning, field_axis

PRESETS = ("cpu", "full")
WIDTH, MATCHED_WIDTH = 24, 26
pool_vs_stride = load_module(Path(__file__).with_name("pool_vs_stride.py"))


def get_config(preset: str = "cpu"):
    config = pool_vs_stride.get_config(preset)  # its Fashion-MNIST recipe and network, with max-pooling
    config.experiment = "kernel_5x5_vs_3x3"
    config.model.convs_per_stage = 2
    config.model.width = WIDTH
    if preset == "cpu":
        config.dataset.train_subset = 30_000
        config.train.epochs = 1
    return config


def get_sweep(preset: str = "cpu") -> Sweep:
    kernel = Axis(
        "kernel",
        {
            "5x5": {"model.kernel_scheme": "5x5"},
            "3x3x2": {"model.kernel_scheme": "3x3x2"},
            "3x3x2_wide": {"model.kernel_scheme": "3x3x2", "model.width": MATCHED_WIDTH},
        },
    )
    if preset == "cpu":
        return Sweep(axes=(kernel,), seeds=(0, 1, 2), baseline={"kernel": "5x5"})
    rates = field_axis("lr", "optimizer.lr", (3e-4, 1e-3, 3e-3, 1e-2, 3e-2))
    return Sweep(
        axes=(kernel,),
        seeds=(0, 1, 2, 3, 4),
        baseline={"kernel": "5x5"},
        tuning=Tuning(axes=(rates,), seeds=(100, 101)),
    )
