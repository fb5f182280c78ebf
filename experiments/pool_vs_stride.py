"""Max vs average vs L2-norm pooling vs stride-2 convolutions, each at its tuned learning rate (seeds 000, 002, 004).

The same VGG-style network (`ablation_net`: three stages of 3x3 convs, 32-64-128 channels, global
average pooling) with only its downsampling changed (`model.downsample`):

  max, avg, l2        2x2 pooling with stride 2: maximum, mean, or square root of the sum of squares
  strided_conv        no pooling: the last conv of each stage has stride 2 (Springenberg et al. 2014's
                      Strided-CNN), the same parameters as the pooling variants and fewer FLOPs
  extra_stride_conv   an extra 3x3 stride-2 conv replaces each pooling layer (their All-CNN): more
                      parameters and FLOPs than the others, so it answers a different question

The learning rate is a nuisance hyperparameter here: a variant that needs another rate would lose for
that reason alone. So for every variant the sweep first trains a grid of rates (tuning seed 100,
on the validation split held out of the train split) and the final seeds run at the rate with the best
validation accuracy (Google's deep-learning tuning playbook; cnn_jax/sweep/tuned.py).

Presets:
  cpu   the README's main job, sized to finish within 15 minutes on a 2-core CPU, which costs: 8,000
        training images (of the 57,000 left after a 5% validation split), 2 epochs, 3 final seeds, a
        grid of four rates (three-point grids left most choices at an edge: the variants' best rates
        spread from 1e-2 to 1e-1; a rate that diverges is simply not chosen), and tuning runs
        of 1 epoch (a complete warm-up + cosine schedule, half the steps), so the rate is chosen for a
        shorter run than the final one: a rate that wins at 1 epoch usually wins at 2, but not always
        (`full` tunes at the final length).
  full  for a GPU/TPU: all 54,000 images, 30 epochs, light augmentation, bfloat16 computing, 5 seeds;
        tuning at the final length with two tuning seeds and a wider grid.
"""

from pathlib import Path

from cnn_jax.config import load_module
from cnn_jax.sweep.plan import Axis, Sweep, Tuning, field_axis

PRESETS = ("cpu", "full")
recipes = load_module(Path(__file__).with_name("_recipes.py"))

DOWNSAMPLING = Axis(
    "downsample",
    {
        "max": {"model.downsample": "max"},
        "avg": {"model.downsample": "avg"},
        "l2": {"model.downsample": "l2"},
        "strided_conv": {"model.downsample": "strided_conv"},
        "extra_stride_conv": {"model.downsample": "stride"},
    },
)


def get_config(preset: str = "cpu"):
    config = recipes.warmup_cosine("pool_vs_stride", "fashion_mnist", "ablation_net", warmup_epochs=0.25, epochs=2)
    config.model.stages = 3
    config.model.width = 32
    if preset == "cpu":
        config.dataset.train_subset = 8_000
        config.dataset.validation_fraction = 0.05  # 3,000 images: evaluation is a large part of a short run
    if preset == "full":
        config.train.epochs = 30
        config.schedule.warmup_epochs = 1.0
        config.dataset.augment.horizontal_flip = True
        config.dataset.augment.translate = 2
        config.train.compute_dtype = "bfloat16"
    return config


def get_sweep(preset: str = "cpu") -> Sweep:
    if preset == "cpu":
        tuning = Tuning(
            axes=(field_axis("lr", "optimizer.lr", (3e-3, 1e-2, 3e-2, 1e-1)),),
            seeds=(100,),
            overrides={"train.epochs": 1},
        )
        seeds = (0, 1, 2)
    else:
        tuning = Tuning(axes=(field_axis("lr", "optimizer.lr", (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)),), seeds=(100, 101))
        seeds = (0, 1, 2, 3, 4)
    return Sweep(axes=(DOWNSAMPLING,), seeds=seeds, baseline={"downsample": "max"}, tuning=tuning)
