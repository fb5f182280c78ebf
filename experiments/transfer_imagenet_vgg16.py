"""The seeds' transfer-learning recipe (seeds 000 and 004): VGG16 pretrained on ImageNet -> 1,000 labelled
CIFAR-10 images. From scratch vs feature extraction vs fine-tuning the last block vs fine-tuning everything.

The weights are torchvision's VGG16 file, `vgg16-397923af.pth` (https://download.pytorch.org/models/),
which this project never downloads: put it in ~/.cache/torch/hub/checkpoints/ (where torchvision keeps
it) or name it with CNN_JAX_VGG16_WEIGHTS=/path/to/file (a .safetensors of it, or Keras' VGG16 .h5, work
too). Without it the launcher stops before training, saying where to get it. Every variant gets a new
10-class head; the pretrained ones normalize inputs as the weights expect (ImageNet's mean and std),
scratch with the training images' own statistics (close to ImageNet's on CIFAR-10):

  scratch     no weights: every parameter from a fresh init
  features    the five conv stages frozen (bitwise), only the new head trains
  last_block  stages 1-4 frozen; stage 5 (at a tenth of the rate) and the head train
  finetune    everything trains; the pretrained stages at a tenth of the rate

Presets:
  cpu   CIFAR-10 at its own 32x32 (VGG16's stages give a 1x1x512 map; the head is `vgg16_cifar`'s fc),
        1,000 class-balanced training images (the same for every seed), 12 epochs, 3 seeds.
  gpu   the ImageNet geometry: images resized to 224x224 (as the weights were trained), torchvision's
        VGG16 with its last fc replaced by a 10-class one, 5 seeds, each variant at its own learning
        rate tuned on the validation split (tuning seed 100).
"""

import os
from pathlib import Path

from cnn_jax.config import load_module
from cnn_jax.sweep.plan import Axis, Sweep, Tuning, field_axis

PRESETS = ("cpu", "gpu")
WEIGHTS = os.environ.get("CNN_JAX_VGG16_WEIGHTS", "vgg16-397923af.pth")
recipes = load_module(Path(__file__).with_name("_recipes.py"))


def get_config(preset: str = "cpu"):
    model = "vgg16_cifar" if preset == "cpu" else "vgg16"
    config = recipes.warmup_cosine(
        "transfer_imagenet_vgg16",
        "cifar10",
        model,
        batch_size=100 if preset == "cpu" else 50,
        warmup_epochs=1.0,
        epochs=12 if preset == "cpu" else 20,
        lr=1e-3,
    )
    config.dataset.train_subset = 1000
    if preset == "gpu":
        config.dataset.resize = 224
    config.train.log_every_steps = 5
    return config


def new_head(preset: str) -> dict:
    """What every pretrained variant shares: the weights file, which of its arrays are copied."""
    if preset == "cpu":  # vgg16's stages into vgg16_cifar, whose head is a new 512 -> 10 fc
        return {"transfer.source": WEIGHTS, "transfer.source_model": "vgg16", "transfer.load": ("stage*",)}
    return {"transfer.source": WEIGHTS, "transfer.skip": ("classifier/Dense_2/*",)}


def get_sweep(preset: str = "cpu") -> Sweep:
    pretrained = new_head(preset)
    head = ("classifier/*",)
    init = Axis(
        "init",
        {
            "scratch": {},
            "features": {**pretrained, "transfer.trainable": head},
            "last_block": {**pretrained, "transfer.trainable": ("stage5/*", *head), "transfer.backbone_lr_scale": 0.1},
            "finetune": {**pretrained, "transfer.backbone_lr_scale": 0.1},
        },
    )
    if preset == "cpu":
        return Sweep(axes=(init,), seeds=(0, 1, 2), baseline={"init": "scratch"})
    rates = field_axis("lr", "optimizer.lr", (3e-4, 1e-3, 3e-3))
    return Sweep(
        axes=(init,), seeds=(0, 1, 2, 3, 4), baseline={"init": "scratch"}, tuning=Tuning(axes=(rates,), seeds=(100,))
    )
