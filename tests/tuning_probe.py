"""Run by tests/test_tuning.py in a fresh process (XLA flags are fixed when JAX starts its backend):
8 SGD steps of seed_cnn on the first 512 real Fashion-MNIST images, printed as one JSON line with
where the compiled step's convolutions went (inside YNNPACK fusions or not, or to oneDNN)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cnn_jax import config as config_lib
from cnn_jax.data.local_files import read_idx_dir
from cnn_jax.data.pipeline import channel_stats
from cnn_jax.data.preprocess import InputTransform
from cnn_jax.models import build_model
from cnn_jax.train.optim import make_optimizer, make_schedule
from cnn_jax.train.state import create_train_state
from cnn_jax.train.steps import make_train_step

STEPS, BATCH = 8, 64


def convolutions(hlo: str) -> dict[str, int]:
    """Count the convolutions of a compiled HLO module inside and outside YNNPACK fusions."""
    bodies, name = {}, None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%([\w.\-]+) .*\{$", line)
        if header:
            name = header.group(1)
            bodies[name] = []
        elif name is not None:
            bodies[name].append(line)
    called = {
        target
        for lines in bodies.values()
        for line in lines
        if "__ynn_fusion" in line
        for target in re.findall(r"calls=%([\w.\-]+)", line)
    }
    count = {name: sum(" convolution(" in line for line in lines) for name, lines in bodies.items()}
    inside = sum(count[name] for name in called if name in count)
    onednn = len(re.findall(r'custom_call_target="cnn_jax_conv_', hlo))
    return {"in_ynn_fusions": inside, "total": sum(count.values()), "onednn": onednn}


def main(fashion_dir: str) -> None:
    train = read_idx_dir("fashion_mnist", Path(fashion_dir)).splits["train"]
    images, labels = train.images[: STEPS * BATCH], train.labels[: STEPS * BATCH]
    config = config_lib.apply_overrides(
        config_lib.default_config(),
        {
            "model.name": "seed_cnn",
            "optimizer.name": "sgd",
            "optimizer.lr": 0.05,
            "optimizer.momentum": 0.9,
            "schedule.name": "constant",
            "train.batch_size": BATCH,
        },
    )
    model = build_model(config.model, num_classes=10)
    tx = make_optimizer(config, make_schedule(config, STEPS))
    state = create_train_state(model, tx, (28, 28, 1), seed=0)
    mean, std = channel_stats(train)
    batches = [
        {
            "image": jnp.asarray(images[i * BATCH : (i + 1) * BATCH]),
            "mask": jnp.ones(BATCH, bool),
            "label": jnp.asarray(labels[i * BATCH : (i + 1) * BATCH]),
        }
        for i in range(STEPS)
    ]
    key = jax.random.PRNGKey(0)
    step = jax.jit(make_train_step(model, tx, config, InputTransform(tuple(mean.tolist()), tuple(std.tolist()))))
    step = step.lower(state, batches[0], key).compile()
    placement = convolutions(step.as_text())

    def conv2_kernel(state) -> list[float]:
        return np.asarray(state.params["conv2"]["Conv_0"]["kernel"]).ravel()[:64].tolist()

    initial, losses = conv2_kernel(state), []
    for batch in batches:
        state, sums = step(state, batch, key)
        losses.append(float(sums["loss_sum"] / sums["count"]))
    print(
        json.dumps(
            {
                "losses": losses,
                "conv2_kernel": conv2_kernel(state),
                "conv2_kernel_initial": initial,
                "convolutions": placement,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
