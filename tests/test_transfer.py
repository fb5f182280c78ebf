"""Transfer learning: a run starts from another run's weights; frozen parameters stay bitwise unchanged,
the new head trains, mismatches are named, and channel adaptation is explicit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from cnn_jax import config as config_lib
from cnn_jax.data.preprocess import InputTransform
from cnn_jax.errors import UserError
from cnn_jax.loading import load_model
from cnn_jax.models import build_model
from cnn_jax.train import transfer
from cnn_jax.train.loop import train
from cnn_jax.train.setup import DataPaths


def tiny(**overrides):
    config = config_lib.default_config()
    config.experiment = "transfer_test"
    config.model.name = "ablation_net"
    config.model.stages = 2
    config.model.width = 8
    config.optimizer.lr = 1e-2
    config.dataset.train_subset = 1920
    config.dataset.eval_subset = 500
    config.train.batch_size = 64
    config.train.epochs = 2
    config.schedule.warmup_epochs = 0.0
    return config_lib.apply_overrides(config, overrides)


def flat(tree) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, fashion_data_dir):
    from cnn_jax.train.setup import DataPaths

    run_dir = tmp_path_factory.mktemp("runs") / "transfer_test" / "source"
    train(tiny(), run_dir, DataPaths(fashion_data_dir, ()), progress=False, log=lambda *a: None)
    return run_dir


@pytest.mark.slow
def test_feature_extraction_keeps_the_backbone_bitwise_and_trains_the_new_head(source_run, fashion_paths):
    config = tiny(
        **{
            "seed": 1,
            "transfer.source": str(source_run),
            "transfer.skip": ("classifier/*",),
            "transfer.trainable": ("classifier/*",),
            "optimizer.lr": 0.05,
        }
    )
    run_dir = source_run.parent / "features"
    result = train(config, run_dir, fashion_paths, progress=False, log=lambda *a: None)
    _, before = load_model(source_run, "latest")
    _, after = load_model(run_dir, "latest")
    src, out = flat(before["params"]), flat(after["params"])
    backbone = [k for k in src if not k.startswith("classifier/")]
    assert backbone and all(np.array_equal(src[k], out[k]) for k in backbone)  # bit for bit
    assert not np.array_equal(src["classifier/kernel"], out["classifier/kernel"])
    assert result["final"]["test_accuracy"] > 0.3  # chance is 0.1: a linear probe on trained features learns something


@pytest.mark.slow
def test_fine_tuning_with_a_smaller_backbone_rate_moves_the_backbone_less(source_run, fashion_paths):
    common = {"seed": 1, "transfer.source": str(source_run), "transfer.skip": ("classifier/*",)}
    runs = {}
    for name, scale in (("fine_full", 1.0), ("fine_slow", 0.01)):
        config = tiny(**common, **{"transfer.backbone_lr_scale": scale})
        train(config, source_run.parent / name, fashion_paths, progress=False, log=lambda *a: None)
        runs[name] = flat(load_model(source_run.parent / name, "latest")[1]["params"])
    src = flat(load_model(source_run, "latest")[1]["params"])
    moved = {
        name: sum(np.abs(p[k] - src[k]).sum() for k in src if not k.startswith("classifier/"))
        for name, p in runs.items()
    }
    assert 0 < moved["fine_slow"] < 0.1 * moved["fine_full"]


@pytest.mark.slow
def test_a_source_of_another_shape_is_refused_naming_the_parameter(source_run, fashion_paths):
    config = tiny(**{"model.width": 16, "transfer.source": str(source_run), "transfer.skip": ("classifier/*",)})
    with pytest.raises(
        UserError,
        match=r"'stage1/.*Conv_0/bias' has shape \(8,\) in the source run .* but \(16,\) here",
    ):
        train(config, source_run.parent / "wider", fashion_paths, progress=False, log=lambda *a: None)


def test_an_unfinished_source_is_refused_before_any_work(tmp_path):
    config = tiny(**{"transfer.source": str(tmp_path / "nothing")})
    no_data = DataPaths(tmp_path / "no_data", ())  # refused before any data is looked for
    with pytest.raises(UserError, match="is not finished"):
        train(config, tmp_path / "target", no_data, progress=False, log=lambda *a: None)
    assert not (tmp_path / "target").exists()


def test_first_conv_channels_are_adapted_only_when_asked():
    kernel = np.arange(2 * 2 * 1 * 3, dtype=np.float32).reshape(2, 2, 1, 3)
    target = {"params": {"conv": {"kernel": np.zeros((2, 2, 3, 3), np.float32)}}}
    source = {"params": {"conv": {"kernel": kernel}}}
    with pytest.raises(UserError, match="set transfer.adapt_input to 'grey_to_rgb' or 'rgb_to_grey'"):
        transfer.transplant(target, source, tiny(), "src")
    rgb, _ = transfer.transplant(target, source, tiny(**{"transfer.adapt_input": "grey_to_rgb"}), "src")
    image = np.random.default_rng(0).random((2, 2, 1)).astype(np.float32)
    as_rgb = np.repeat(image, 3, axis=2)  # a grey image shown as RGB gives the same response
    np.testing.assert_allclose(
        np.einsum("hwc,hwcf->f", as_rgb, np.asarray(rgb["params"]["conv"]["kernel"])),
        np.einsum("hwc,hwcf->f", image, kernel),
        rtol=1e-6,
    )
    grey, _ = transfer.transplant(
        {"params": {"conv": {"kernel": np.zeros((2, 2, 1, 3), np.float32)}}},
        {"params": {"conv": {"kernel": np.asarray(rgb["params"]["conv"]["kernel"])}}},
        tiny(**{"transfer.adapt_input": "rgb_to_grey"}),
        "src",
    )
    np.testing.assert_allclose(np.asarray(grey["params"]["conv"]["kernel"]), kernel, rtol=1e-6)


def test_patterns_select_what_is_copied_and_what_trains():
    config = tiny(**{"transfer.source": "x", "transfer.skip": ("head/*",), "transfer.trainable": ("b/*", "head/*")})
    params = {"a": {"kernel": 0}, "b": {"kernel": 0}, "head": {"kernel": 0}}
    assert transfer.optimizer_labels(params, config) == {
        "a": {"kernel": "frozen"},
        "b": {"kernel": "backbone"},
        "head": {"kernel": "new"},
    }
    assert transfer.trainable_mask(params, config) == {
        "a": {"kernel": False},
        "b": {"kernel": True},
        "head": {"kernel": True},
    }


def test_frozen_batch_norm_statistics_and_parameters_stay_bitwise_through_train_steps():
    import jax
    import jax.numpy as jnp
    import optax

    from cnn_jax.models import build_model
    from cnn_jax.train.optim import make_optimizer
    from cnn_jax.train.state import create_train_state
    from cnn_jax.train.steps import make_train_step

    config = tiny(**{"model.batch_norm": True, "transfer.trainable": ("stage2/*", "classifier/*")})
    model = build_model(config.model, num_classes=10)
    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), train=False))
    tx = make_optimizer(config, optax.constant_schedule(0.1), transfer.optimizer_labels(abstract["params"], config))
    mask = {
        "params": transfer.trainable_mask(abstract["params"], config),
        "batch_stats": transfer.trainable_mask(abstract["batch_stats"], config),
    }
    step = jax.jit(make_train_step(model, tx, config, InputTransform((0.0,), (1.0,)), mask))
    state = before = create_train_state(model, tx, (28, 28, 1), seed=0)
    rng = np.random.default_rng(0)
    for i in range(3):
        batch = {
            "image": jnp.asarray(rng.integers(0, 256, (16, 28, 28, 1)), jnp.uint8),
            "label": jnp.asarray(rng.integers(0, 10, 16), jnp.int32),
            "mask": jnp.ones(16, bool),
        }
        state, _ = step(state, batch, jax.random.PRNGKey(i))
    for collection in ("params", "batch_stats"):
        old, new = flat(getattr(before, collection)), flat(getattr(state, collection))
        frozen = [k for k in old if k.startswith("stage1/")]
        assert frozen and all(np.array_equal(old[k], new[k]) for k in frozen)
        assert any(not np.array_equal(old[k], new[k]) for k in old if k.startswith("stage2/"))


@pytest.mark.parametrize(
    "field, patterns",
    [("trainable", ("Dense_2/*",)), ("skip", ("dense/*",)), ("load", ("stage*/*", "head/*"))],
)
def test_a_pattern_that_matches_no_variable_is_refused_by_name(field, patterns):
    """A typo in a pattern would silently train, copy or reset the wrong layers."""
    model = build_model({"name": "ablation_net", "width": 4, "stages": 1}, num_classes=10)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1))))
    config = tiny(**{f"transfer.{field}": patterns})
    transfer.check_patterns(variables, tiny())  # the defaults match
    with pytest.raises(UserError, match=rf"'transfer.{field}': pattern '{patterns[-1][:-2]}.*' matches no parameter"):
        transfer.check_patterns(variables, config)
