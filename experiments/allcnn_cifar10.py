"""Is pooling needed? Model C vs Strided-CNN-C vs ConvPool-CNN-C vs All-CNN-C on CIFAR-10 (Springenberg et al. 2014).

Springenberg, Dosovitskiy, Brox, Riedmiller, "Striving for Simplicity: The All Convolutional Net",
arXiv:1412.6806. Table 3 gives the CIFAR-10 test error of all four without augmentation (All-CNN-C:
9.08%). Their recipe (Sec. 3.2.1): SGD with momentum 0.9, weight decay
0.001, dropout 20% on the input and 50% after each pooling (or its replacement), 350 epochs, learning
rate multiplied by 0.1 after epochs 200, 250 and 300, the rate picked per model from
{0.25, 0.1, 0.05, 0.01}; the per-model choice is not published. Data: the CIFAR-10 JPEG copy when the original is
not available offline; label such results "CIFAR-10 (JPEG copy)".

Presets:
  cpu   a CPU-sized rehearsal, not the paper's result: every layer one third as wide (32-64 channels),
        10,000 training images, 2 epochs, 3 seeds, on a 2-core CPU.
  full  the paper's models and schedule, no augmentation, 3 seeds, each model at the rate of the
        paper's grid with the best validation accuracy (tuning seed 100, at the full 350 epochs: 16 tuning
        runs before the 12 final ones): for a GPU/TPU, computing in bfloat16 (float32 parameters and loss).
  paper the same at one rate, 0.05, for every model: the published recipe as far as it is published,
        what the registry's All-CNN-C entry runs (experiments/expected.toml).
"""

from pathlib import Path

from cnn_jax.config import load_module
from cnn_jax.sweep.plan import Sweep, Tuning, field_axis

PRESETS = ("cpu", "full", "paper")
MODELS = ("allcnn_model_c", "allcnn_strided_c", "allcnn_convpool_c", "allcnn_all_c")
recipes = load_module(Path(__file__).with_name("_recipes.py"))


def get_config(preset: str = "cpu"):
    config = recipes.sgd_step(
        "allcnn_cifar10",
        "cifar10",
        "allcnn_all_c",
        lr=0.05,
        weight_decay=1e-3,
        boundaries_epochs=(200.0, 250.0, 300.0),
        epochs=350,
    )
    if preset == "cpu":
        recipes.cpu_rehearsal(config, warmup_epochs=0.5)
        config.model.width_multiplier = 1 / 3
        config.optimizer.lr = 0.01
    return config


def get_sweep(preset: str = "cpu") -> Sweep:
    tuning = Tuning(axes=(field_axis("lr", "optimizer.lr", (0.25, 0.1, 0.05, 0.01)),)) if preset == "full" else None
    return Sweep(
        axes=(field_axis("model", "model.name", MODELS),),
        seeds=(0, 1, 2),
        baseline={"model": "allcnn_model_c"},
        tuning=tuning,
    )
