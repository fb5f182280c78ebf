"""Transfer learning with 1,000 labelled digits: from scratch vs feature extraction vs fine-tuning (seeds 000 and 004).

The source is seed 002's CNN (`seed_cnn`) trained on Fashion-MNIST (experiments/fashion_mnist_cnn.py,
preset `quick`; the launcher trains it first when it is missing). The target is MNIST with only 1,000
class-balanced training images (the same for every seed), tested on all 10,000 test digits. Both are
28x28 grey, so no input adaptation is needed. Every variant gets a fresh 10-class head (`dense`):

  scratch     no source: all weights from a fresh init
  features    the source's convolutions frozen (bitwise), only the new head trains
  finetune    everything trains; the copied convolutions at a tenth of the learning rate
  last_block  conv1 and conv2 frozen; conv3 (at a tenth of the rate) and the head train

Presets:
  cpu   15 epochs of the 1,000 images (120 steps), 3 seeds, on a 2-core CPU, after the source
        run.
  full  the same with 5 seeds and 40 epochs, each variant at its own learning rate, tuned on the
        validation split (the 6,000 digits held out of MNIST's train split; tuning seed 100).
"""

from pathlib import Path

from cnn_jax.config import load_module
from cnn_jax.sweep.plan import Axis, Sweep, Tuning, field_axis

PRESETS = ("cpu", "full")
SOURCE = "experiments/fashion_mnist_cnn.py:quick"
NEW_HEAD = {"transfer.source": SOURCE, "transfer.skip": ("dense/*",)}
recipes = load_module(Path(__file__).with_name("_recipes.py"))


def get_config(preset: str = "cpu"):
    config = recipes.warmup_cosine(
        "transfer_fashion_to_mnist",
        "mnist",
        "seed_cnn",
        batch_size=125,
        warmup_epochs=1.0,
        epochs=15 if preset == "cpu" else 40,
    )
    config.dataset.train_subset = 1000
    config.train.log_every_steps = 8
    return config


def get_sweep(preset: str = "cpu") -> Sweep:
    init = Axis(
        "init",
        {
            "scratch": {},
            "features": {**NEW_HEAD, "transfer.trainable": ("dense/*",)},
            "finetune": {**NEW_HEAD, "transfer.backbone_lr_scale": 0.1},
            "last_block": {**NEW_HEAD, "transfer.trainable": ("conv3/*", "dense/*"), "transfer.backbone_lr_scale": 0.1},
        },
    )
    if preset == "cpu":
        return Sweep(axes=(init,), seeds=(0, 1, 2), baseline={"init": "scratch"})
    rates = field_axis("lr", "optimizer.lr", (1e-3, 3e-3, 1e-2))
    return Sweep(
        axes=(init,), seeds=(0, 1, 2, 3, 4), baseline={"init": "scratch"}, tuning=Tuning(axes=(rates,), seeds=(100,))
    )
