"""Is pooling needed? Model C vs Strided-CNN-C vs ConvPool-CNN-C vs All-CNN-C on CIFAR-10 (Springenberg et al. 2014).

Springenberg, Dosovitskiy, Brox, Riedmiller, "Striving for Simplicity: The All Convolutional Net",
arXiv:1412.6806. Table 3 gives the CIFAR-10 test error of all four without augmentation (All-CNN-C:
9.08%). Their recipe (Sec. 3.2.1): SGD with momentum 0.9, weight decay
0.001, dropout 20% on the input and 50% after each pooling (or its replacement), 350 epochs, learning
rate multiplied by 0.1 after epochs 200, 250 and 300, the rate picked per model from
{0.25, 0.1, 0.05, 0.01}. We use 0.05 for every model (override with --config.optimizer.lr);
the paper's per-model choice is not published. Data: the CIFAR-10 JPEG copy when the original is
not available offline; label such results "CIFAR-10 (JPEG copy)".

Presets:
  cpu   a CPU-sized rehearsal, not the paper's result: every layer one third as wide (32-64 channels),
        10,000 training images, 2 epochs, 3 seeds; about 15 minutes on a 2-core CPU.
  full  the paper's models and schedule, no augmentation, 3 seeds: for a GPU/TPU, computing in bfloat16
        (float32 parameters and loss; train.compute_dtype).
"""

from cnn_jax.config import default_config
from cnn_jax.sweep.plan import Sweep, field_axis

PRESETS = ("cpu", "full")
MODELS = ("allcnn_model_c", "allcnn_strided_c", "allcnn_convpool_c", "allcnn_all_c")


def get_config(preset: str = "cpu"):
    config = default_config()
    config.experiment = "allcnn_cifar10"
    config.dataset.name = "cifar10"
    config.model.name = "allcnn_all_c"
    config.optimizer.name = "sgd"
    config.optimizer.lr = 0.05
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-3
    config.schedule.name = "step"
    config.schedule.boundaries_epochs = (200.0, 250.0, 300.0)
    config.schedule.decay_factor = 0.1
    config.train.batch_size = 128
    config.train.epochs = 350
    config.train.compute_dtype = "bfloat16"
    if preset == "cpu":
        config.model.width_multiplier = 1 / 3
        config.dataset.train_subset = 10_000
        config.train.epochs = 2
        config.schedule.name = "cosine"
        config.schedule.warmup_epochs = 0.5
        config.optimizer.lr = 0.01
        config.train.compute_dtype = "float32"
    return config


def get_sweep(preset: str = "cpu") -> Sweep:
    return Sweep(axes=(field_axis("model", "model.name", MODELS),), seeds=(0, 1, 2),
                 baseline={"model": "allcnn_model_c"})
