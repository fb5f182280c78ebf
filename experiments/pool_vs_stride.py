"""Max-pooling vs average-pooling vs a learned stride-2 convolution for downsampling (seeds 000 and 002).

The same VGG-style network (`ablation_net`: three stages of 3x3 convs, 32-64-128 channels, global
average pooling) with only its downsampling changed: 2x2 max-pool, 2x2 average-pool, or an extra
3x3 convolution with stride 2 (Springenberg et al. 2014 replace pooling this way; it adds parameters).

Presets:
  cpu   Fashion-MNIST, 2 epochs, 3 seeds: the README's main job (its table gives the time).
  full  Fashion-MNIST, 30 epochs, 5 seeds, with light augmentation: for a GPU/TPU, computing in bfloat16
        (float32 parameters and loss; train.compute_dtype).
"""

from pathlib import Path

from cnn_jax.config import load_module
from cnn_jax.sweep.plan import Sweep, field_axis

PRESETS = ("cpu", "full")
recipes = load_module(Path(__file__).with_name("_recipes.py"))


def get_config(preset: str = "cpu"):
    config = recipes.warmup_cosine("pool_vs_stride", "fashion_mnist", "ablation_net", warmup_epochs=0.25, epochs=2)
    config.model.stages = 3
    config.model.width = 32
    if preset == "full":
        config.train.epochs = 30
        config.schedule.warmup_epochs = 1.0
        config.dataset.augment.horizontal_flip = True
        config.dataset.augment.translate = 2
        config.train.compute_dtype = "bfloat16"
    return config


def get_sweep(preset: str = "cpu") -> Sweep:
    return Sweep(
        axes=(field_axis("downsample", "model.downsample", ("max", "avg", "stride")),),
        seeds=(0, 1, 2) if preset == "cpu" else (0, 1, 2, 3, 4),
        baseline={"downsample": "max"},
    )
