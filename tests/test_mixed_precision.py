"""Mixed precision (train.compute_dtype): bfloat16 forward/backward, float32 parameters, statistics and loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from cnn_jax import config as config_lib
from cnn_jax import validation
from cnn_jax.data.preprocess import InputTransform
from cnn_jax.errors import UserError
from cnn_jax.models import build_model
from cnn_jax.train import steps as steps_lib
from cnn_jax.train.losses import per_example_loss
from cnn_jax.train.optim import make_optimizer, make_schedule
from cnn_jax.train.state import create_train_state
from cnn_jax.train.steps import cast_floating, make_eval_step, make_train_step

INPUTS = InputTransform((0.3,), (0.35,))


def _config(**overrides):
    """A small batch-norm VGG (two stages, width 8) on 28x28 greyscale images."""
    return config_lib.apply_overrides(
        config_lib.default_config(),
        {"model.name": "ablation_net", "model.stages": 2, "model.width": 8, "model.batch_norm": True, **overrides},
    )


def _batch(n: int = 32, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "image": jnp.asarray(rng.integers(0, 256, (n, 28, 28, 1)), jnp.uint8),
        "label": jnp.asarray(rng.integers(0, 10, n), jnp.int32),
        "mask": jnp.ones(n, bool),
    }


def _setup(config):
    model = build_model(config.model, num_classes=10)
    tx = make_optimizer(config, make_schedule(config, 10))
    return model, tx, create_train_state(model, tx, (28, 28, 1), seed=0)


def _train_step(config):
    """(state before, state after, metric sums) of one jitted train step on `_batch()`."""
    model, tx, state = _setup(config)
    return state, *jax.jit(make_train_step(model, tx, config, INPUTS))(state, _batch(), jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def steps() -> dict:
    """One train step per compute dtype (compiling is most of this file's time)."""
    return {dtype: _train_step(_config(**{"train.compute_dtype": dtype})) for dtype in ("float32", "bfloat16")}


def _dtypes(tree) -> set:
    return {x.dtype for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


def test_unknown_compute_dtype_fails_validation():
    config = config_lib.apply_overrides(config_lib.default_config(), {"train.compute_dtype": "float16"})
    with pytest.raises(UserError, match="'train.compute_dtype': unknown value 'float16'.*bfloat16, float32"):
        validation.validate(config)
    validation.validate(_config(**{"train.compute_dtype": "bfloat16"}))


@pytest.mark.device
@pytest.mark.slow
def test_bfloat16_step_keeps_parameters_optimizer_state_and_batch_statistics_float32(steps):
    before, after, sums = steps["bfloat16"]
    assert _dtypes(after.params) == _dtypes(after.opt_state) == _dtypes(after.batch_stats) == {jnp.dtype(jnp.float32)}
    assert after.batch_stats and sums["loss_sum"].dtype == jnp.float32 and np.isfinite(float(sums["loss_sum"]))
    changed = jax.tree_util.tree_map(
        lambda a, b: not np.array_equal(a, b), (before.params, before.batch_stats), (after.params, after.batch_stats)
    )
    assert all(jax.tree_util.tree_leaves(changed))  # gradients reached every parameter; statistics were updated


def _record_loss_inputs(monkeypatch) -> list:
    """The dtypes of the logits every later per_example_loss call of the steps gets, in call order."""
    dtypes = []

    def loss(name, logits, *args):
        dtypes.append(logits.dtype)
        return per_example_loss(name, logits, *args)

    monkeypatch.setattr(steps_lib, "per_example_loss", loss)
    return dtypes


def _trace(compute_dtype: str, train: bool, monkeypatch) -> tuple[set, set]:
    """(dtypes of every Conv and Dense output, dtypes of the logits the loss gets) while a step traces."""
    layer_dtypes, loss_dtypes = set(), _record_loss_inputs(monkeypatch)

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, (nn.Conv, nn.Dense)):
            layer_dtypes.add(out.dtype)
        return out

    config = _config(**{"train.compute_dtype": compute_dtype})
    model, tx, state = _setup(config)
    if train:
        step, args = make_train_step(model, tx, config, INPUTS), (state, _batch(), jax.random.PRNGKey(0))
    else:
        step, args = make_eval_step(model, INPUTS, compute_dtype=compute_dtype), (state, _batch())
    with nn.intercept_methods(record):
        jax.make_jaxpr(step)(*args)
    return layer_dtypes, set(loss_dtypes)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_the_forward_pass_runs_in_the_compute_dtype_and_the_loss_in_float32(train, monkeypatch):
    f32, bf16 = jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)
    assert _trace("bfloat16", train, monkeypatch) == ({bf16}, {f32})
    assert _trace("float32", train, monkeypatch) == ({f32}, {f32})


def test_auxiliary_logits_reach_their_loss_as_float32(monkeypatch):
    from test_steps import TinyWithAuxHead

    config = config_lib.apply_overrides(config_lib.default_config(), {"train.compute_dtype": "bfloat16"})
    model, tx = TinyWithAuxHead(), make_optimizer(config, make_schedule(config, 10))
    state = create_train_state(model, tx, (2, 2, 1), seed=0)
    batch = {"image": jnp.zeros((2, 2, 2, 1), jnp.uint8), "label": jnp.array([0, 2]), "mask": jnp.ones(2, bool)}
    loss_dtypes = _record_loss_inputs(monkeypatch)
    jax.make_jaxpr(make_train_step(model, tx, config, INPUTS))(state, batch, jax.random.PRNGKey(0))
    assert loss_dtypes == [jnp.float32, jnp.float32]  # main, auxiliary


def test_cast_floating_leaves_integer_leaves_alone():
    tree = cast_floating({"w": jnp.ones(2), "step": jnp.zeros((), jnp.int32), "ok": jnp.ones(2, bool)}, jnp.bfloat16)
    assert {k: v.dtype for k, v in tree.items()} == {"w": jnp.bfloat16, "step": jnp.int32, "ok": jnp.bool_}


@pytest.mark.device
@pytest.mark.slow
def test_bfloat16_loss_is_close_to_but_not_the_float32_loss(steps):
    f32, bf16 = steps["float32"][2]["loss_sum"], steps["bfloat16"][2]["loss_sum"]
    model, _, state = _setup(_config())
    f32_eval, bf16_eval = (
        jax.jit(make_eval_step(model, INPUTS, compute_dtype=d))(state, _batch(seed=1))["loss_sum"]
        for d in ("float32", "bfloat16")
    )
    for f32_loss, bf16_loss in ((f32, bf16), (f32_eval, bf16_eval)):
        assert float(bf16_loss) != float(f32_loss)
        assert float(bf16_loss) == pytest.approx(float(f32_loss), rel=1e-2)  # measured: 6e-5 to 5e-4 (3 batches)


@pytest.mark.slow
def test_float32_compute_is_the_unchanged_program(steps):
    default, explicit = _config(), _config(**{"train.compute_dtype": "float32"})
    model, tx, state = _setup(default)
    args = (state, _batch(), jax.random.PRNGKey(0))
    train = [str(jax.make_jaxpr(make_train_step(model, tx, c, INPUTS))(*args)) for c in (default, explicit)]
    evals = [
        str(jax.make_jaxpr(step)(state, _batch()))
        for step in (make_eval_step(model, INPUTS), make_eval_step(model, INPUTS, compute_dtype="float32"))
    ]
    assert train[0] == train[1] and evals[0] == evals[1]
    assert "bf16" not in train[0] + evals[0]
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, steps["float32"], _train_step(explicit)))
