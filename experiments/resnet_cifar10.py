"""Does depth help a residual network? CIFAR ResNet-20/32/44/56/110 (He et al. 2015, Sec. 4.2).

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", arXiv:1512.03385, Table 6,
CIFAR-10 test error: ResNet-20 8.75%, 32 7.51%, 44 7.17%, 56 6.97%, 110 6.43% (best of 5 runs;
mean 6.61 ± 0.16). Their recipe: SGD with momentum 0.9, weight decay 1e-4, batch 128, learning rate
0.1 divided by 10 at 32k and 48k iterations and stopped at 64k (with 391 steps per epoch on the 50k
training images: epochs 82, 123 and 164), 4-pixel zero padding with a random 32x32 crop and
horizontal flips; ResNet-110 starts at 0.01 until training error is below 80% (about 400 iterations):
here a one-epoch linear warm-up. Data: the CIFAR-10 JPEG copy when the original is not available
offline; label such results "CIFAR-10 (JPEG copy)".

Presets:
  cpu   a CPU-sized rehearsal, not the paper's result: ResNet-20 vs ResNet-32, 10,000 training
        images, 2 epochs, 3 seeds, on a 2-core CPU.
  full  the paper's schedule for all five depths, 5 seeds, each depth at its own initial rate tuned on
        the validation split (0.05, 0.1, 0.2; tuning seed 100, at the full length): for a GPU/TPU,
        computing in bfloat16 (float32 parameters and loss; train.compute_dtype).
  paper the same at the paper's rate, 0.1, for every depth: what the registry's ResNet-20 entry runs.
"""

from pathlib import Path

from cnn_jax.config import load_module
from cnn_jax.sweep.plan import Axis, Sweep, Tuning, field_axis

PRESETS = ("cpu", "full", "paper")
DEPTHS = (20, 32, 44, 56, 110)
recipes = load_module(Path(__file__).with_name("_recipes.py"))


def get_config(preset: str = "cpu"):
    config = recipes.sgd_step(
        "resnet_cifar10", "cifar10", "resnet20", lr=0.1, weight_decay=1e-4, boundaries_epochs=(82.0, 123.0), epochs=164
    )
    config.dataset.augment.random_crop_padding = 4
    config.dataset.augment.horizontal_flip = True
    if preset == "cpu":
        recipes.cpu_rehearsal(config, warmup_epochs=0.3)
    return config


def get_sweep(preset: str = "cpu") -> Sweep:
    depths = DEPTHS if preset != "cpu" else (20, 32)
    depth = Axis(
        "depth",
        {
            str(d): {
                "model.name": f"resnet{d}",
                **({"schedule.warmup_epochs": 1.0} if d == 110 and preset != "cpu" else {}),
            }
            for d in depths
        },
    )
    tuning = Tuning(axes=(field_axis("lr", "optimizer.lr", (0.05, 0.1, 0.2)),)) if preset == "full" else None
    seeds = (0, 1, 2) if preset == "cpu" else (0, 1, 2, 3, 4)
    return Sweep(axes=(depth,), seeds=seeds, baseline={"depth": "20"}, tuning=tuning)
