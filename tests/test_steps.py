"""The pure train step: auxiliary classifier losses reach their heads' parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from cnn_jax import config as config_lib
from cnn_jax.data.preprocess import InputTransform
from cnn_jax.train.optim import make_optimizer, make_schedule
from cnn_jax.train.state import create_train_state
from cnn_jax.train.steps import make_train_step


class TinyWithAuxHead(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        features = x.reshape(x.shape[0], -1)
        if train:
            self.sow("intermediates", "aux_logits", nn.Dense(3, name="aux")(features))
        else:
            nn.Dense(3, name="aux")(features)  # same parameters at init and eval
        return nn.Dense(3, name="main")(features)


def _aux_change(aux_weight: float) -> float:
    config = config_lib.apply_overrides(
        config_lib.default_config(), {"loss.aux_weight": aux_weight, "optimizer.name": "sgd", "optimizer.lr": 0.1}
    )
    model = TinyWithAuxHead()
    tx = make_optimizer(config, make_schedule(config, 10))
    state = create_train_state(model, tx, (2, 2, 1), seed=0)
    batch = {
        "image": jnp.arange(8, dtype=jnp.uint8).reshape(2, 2, 2, 1),
        "label": jnp.array([0, 2]),
        "mask": jnp.ones(2, bool),
    }
    step = make_train_step(model, tx, config, InputTransform((0.0,), (1.0,)))
    new_state, _ = jax.jit(step)(state, batch, jax.random.PRNGKey(0))
    return float(np.abs(new_state.params["aux"]["kernel"] - state.params["aux"]["kernel"]).max())


def test_aux_logits_add_a_weighted_loss_that_trains_the_aux_head():
    assert _aux_change(0.3) > 0
    assert _aux_change(0.0) == 0.0
