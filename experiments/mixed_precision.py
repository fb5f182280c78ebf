"""Does bfloat16 compute cost accuracy? float32 vs mixed precision (bfloat16 activations, float32 parameters and loss).

The README's run (seed 002's `seed_cnn` on Fashion-MNIST, AdamW with warmup + cosine, label smoothing
0.1, horizontal flips) with only `train.compute_dtype` changed. In bfloat16 the forward and backward
pass run on bfloat16 copies of the images and parameters; parameters, optimizer state, batch-norm
statistics, the loss and the gradients the optimizer sees stay float32.

Presets:
  cpu   Fashion-MNIST, 15,000 training images (class-balanced), 2 epochs, 3 seeds: about 6 minutes on a
        2-core CPU with --jobs 2. It checks accuracy, not speed: on that CPU bfloat16 was not faster.
  full  Fashion-MNIST, 8 epochs, 5 seeds: for a GPU/TPU, whose matrix units run bfloat16 natively.
"""

from cnn_jax.config import default_config
from cnn_jax.sweep.plan import Sweep, field_axis

PRESETS = ("cpu", "full")


def get_config(preset: str = "cpu"):
    config = default_config()
    config.experiment = "mixed_precision"
    config.dataset.name = "fashion_mnist"
    config.dataset.augment.horizontal_flip = True
    config.model.name = "seed_cnn"
    config.optimizer.name = "adamw"
    config.optimizer.lr = 3e-3
    config.optimizer.weight_decay = 1e-4
    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = 0.25
    config.loss.label_smoothing = 0.1
    config.train.batch_size = 128
    config.train.epochs = 2
    config.dataset.train_subset = 15_000
    if preset == "full":
        config.dataset.train_subset = 0
        config.train.epochs = 8
        config.schedule.warmup_epochs = 0.5
    return config


def get_sweep(preset: str = "cpu") -> Sweep:
    return Sweep(axes=(field_axis("compute_dtype", "train.compute_dtype", ("float32", "bfloat16")),),
                 seeds=(0, 1, 2) if preset == "cpu" else (0, 1, 2, 3, 4),
                 baseline={"compute_dtype": "float32"})
