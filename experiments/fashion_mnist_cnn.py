"""The default run: seed 002's Keras CNN (`seed_cnn`) on Fashion-MNIST.

Presets: `default` (the README's run, >= 91% test accuracy) and `quick` (a first result in minutes).
"""

from cnn_jax.config import default_config

PRESETS = ("default", "quick")


def get_config(preset: str = "default"):
    config = default_config()
    config.experiment = "fashion_mnist_cnn"
    config.dataset.name = "fashion_mnist"
    config.model.name = "seed_cnn"
    config.optimizer.name = "adam"
    config.optimizer.lr = 3e-3
    config.schedule.name = "cosine"
    config.train.batch_size = 128
    config.train.epochs = 8
    if preset == "quick":
        config.train.epochs = 2
    return config
