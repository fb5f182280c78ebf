"""The default run: seed 002's Keras CNN (`seed_cnn`) on Fashion-MNIST.

Presets:
  default  the README's run: 8 epochs, AdamW with warmup + cosine, label smoothing 0.1 and
           horizontal flips; its accuracy and time: the README and experiments/expected.toml.
  quick    the same recipe for 2 epochs: a first result (README, "The two commands").
"""

from pathlib import Path

from cnn_jax.config import load_module

PRESETS = ("default", "quick")
recipes = load_module(Path(__file__).with_name("_recipes.py"))


def get_config(preset: str = "default"):
    config = recipes.warmup_cosine("fashion_mnist_cnn", "fashion_mnist", "seed_cnn", warmup_epochs=0.5, epochs=8)
    config.dataset.augment.horizontal_flip = True  # clothing is left-right symmetric; digits would not be
    config.loss.label_smoothing = 0.1
    if preset == "quick":
        config.train.epochs = 2
        config.schedule.warmup_epochs = 0.25
    return config
