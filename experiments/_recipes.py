"""Training recipes shared by the experiment files; not an experiment (no PRESETS, get_config or get_sweep).

experiments/ is not a package: cnn_jax loads each experiment file by path (cnn_jax.config.load_module),
so an experiment file takes this module, or another experiment file, the same way, relative to itself:

    recipes = load_module(Path(__file__).with_name("_recipes.py"))

and starts its get_config from one of these functions, changing only what differs.
"""

from cnn_jax.config import default_config


def warmup_cosine(
    experiment: str,
    dataset: str,
    model: str,
    *,
    epochs: int,
    warmup_epochs: float,
    optimizer: str = "adamw",
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 128,
):
    """AdamW (or `optimizer`) at `lr` with a linear warm-up, then cosine decay."""
    config = _start(experiment, dataset, model, optimizer, lr, weight_decay, batch_size, epochs)
    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = warmup_epochs
    return config


def sgd_step(
    experiment: str,
    dataset: str,
    model: str,
    *,
    lr: float,
    weight_decay: float,
    boundaries_epochs: tuple[float, ...],
    epochs: int,
):
    """A paper's recipe for a GPU/TPU: SGD with momentum 0.9, the rate times 0.1 after each boundary, batch 128,
    computing in bfloat16 (float32 parameters and loss)."""
    config = _start(experiment, dataset, model, "sgd", lr, weight_decay, 128, epochs)
    config.optimizer.momentum = 0.9
    config.schedule.name = "step"
    config.schedule.boundaries_epochs = boundaries_epochs
    config.schedule.decay_factor = 0.1
    config.train.compute_dtype = "bfloat16"
    return config


def cpu_rehearsal(config, *, warmup_epochs: float):
    """Shrinks a GPU/TPU recipe in place to a CPU rehearsal: 10,000 training images, 2 epochs, warm-up then cosine
    decay, float32."""
    config.dataset.train_subset = 10_000
    config.train.epochs = 2
    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = warmup_epochs
    config.train.compute_dtype = "float32"
    return config


def _start(experiment, dataset, model, optimizer, lr, weight_decay, batch_size, epochs):
    config = default_config()
    config.experiment = experiment
    config.dataset.name = dataset
    config.model.name = model
    config.optimizer.name = optimizer
    config.optimizer.lr = lr
    config.optimizer.weight_decay = weight_decay
    config.train.batch_size = batch_size
    config.train.epochs = epochs
    return config
