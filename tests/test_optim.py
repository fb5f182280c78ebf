"""Optimizers, schedules and losses built from the config."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_jax import config as config_lib
from cnn_jax.train.losses import per_example_loss, topk_correct
from cnn_jax.train.optim import make_optimizer, make_schedule


def cfg(**overrides):
    return config_lib.apply_overrides(config_lib.default_config(), overrides)


def test_warmup_then_cosine_reaches_zero_at_the_last_step():
    schedule = make_schedule(cfg(**{"train.epochs": 10, "schedule.warmup_epochs": 1.0, "optimizer.lr": 0.1}), 100)
    assert float(schedule(0)) == 0.0
    assert float(schedule(50)) == pytest.approx(0.05)
    assert float(schedule(100)) == pytest.approx(0.1)
    assert float(schedule(550)) == pytest.approx(0.05, rel=1e-5)
    assert float(schedule(1000)) == pytest.approx(0.0, abs=1e-9)


def test_step_schedule_multiplies_by_the_factor_at_each_boundary():
    schedule = make_schedule(
        cfg(
            **{
                "schedule.name": "step",
                "schedule.boundaries_epochs": (2.0, 4.0),
                "schedule.decay_factor": 0.1,
                "optimizer.lr": 1.0,
                "train.epochs": 5,
            }
        ),
        10,
    )
    assert [float(schedule(s)) for s in (0, 19, 20, 39, 40)] == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


def test_constant_schedule():
    schedule = make_schedule(cfg(**{"schedule.name": "constant", "optimizer.lr": 0.2}), 10)
    assert float(schedule(0)) == float(schedule(1000)) == pytest.approx(0.2)


def _one_update(config, params, grads):
    tx = make_optimizer(config, optax.constant_schedule(config.optimizer.lr))
    updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates)


def test_sgd_with_coupled_weight_decay_matches_the_formula():
    params, grads = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, 0.5])}
    config = cfg(
        **{"optimizer.name": "sgd", "optimizer.lr": 0.1, "optimizer.weight_decay": 0.01, "optimizer.momentum": 0.9}
    )
    new = _one_update(config, params, grads)  # first momentum step equals plain SGD on g + wd * w
    np.testing.assert_allclose(new["w"], params["w"] - 0.1 * (grads["w"] + 0.01 * params["w"]), rtol=1e-6)


def test_adamw_decay_is_decoupled_and_clipping_bounds_the_step():
    params, grads = {"w": jnp.array([1.0])}, {"w": jnp.array([1e-3])}
    adamw = _one_update(
        cfg(**{"optimizer.name": "adamw", "optimizer.lr": 0.1, "optimizer.weight_decay": 0.5}), params, grads
    )
    np.testing.assert_allclose(adamw["w"], 1.0 - 0.1 * (1.0 + 0.5 * 1.0), rtol=1e-4)  # adam's first step is lr*sign(g)
    clipped = _one_update(
        cfg(
            **{"optimizer.name": "sgd", "optimizer.momentum": 0.0, "optimizer.lr": 1.0, "optimizer.grad_clip_norm": 1.0}
        ),
        {"w": jnp.zeros(2)},
        {"w": jnp.array([3.0, 4.0])},
    )
    np.testing.assert_allclose(clipped["w"], [-0.6, -0.8], rtol=1e-6)


def test_cross_entropy_label_smoothing_and_mse_of_seed_004():
    logits, labels = jnp.array([[2.0, 0.0, -1.0]]), jnp.array([0])
    p = np.asarray(jax.nn.softmax(logits)[0])
    assert float(per_example_loss("cross_entropy", logits, labels)[0]) == pytest.approx(-np.log(p[0]), rel=1e-6)
    smoothed = float(per_example_loss("cross_entropy", logits, labels, 0.3)[0])
    target = np.array([0.8, 0.1, 0.1])
    assert smoothed == pytest.approx(-(target * np.log(p)).sum(), rel=1e-6)
    mse = float(per_example_loss("mse", logits, labels)[0])
    assert mse == pytest.approx(0.5 * ((p - np.array([1.0, 0, 0])) ** 2).sum(), rel=1e-6)


def test_topk_counts():
    logits = jnp.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]])
    assert topk_correct(logits, jnp.array([2, 0]), 1).tolist() == [0.0, 1.0]
    assert topk_correct(logits, jnp.array([2, 1]), 2).tolist() == [1.0, 1.0]
    assert topk_correct(logits, jnp.array([0, 2]), 2).tolist() == [0.0, 0.0]  # ties go to the lower index
