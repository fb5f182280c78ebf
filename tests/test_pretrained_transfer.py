"""Training from pretrained weights: the model's input made as the weights expect (resize, centre crop,
grey to RGB, the weights' normalization), frozen batch norm in inference mode, and a run that starts
from a torchvision file."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from cnn_jax import config as config_lib
from cnn_jax.data.augment import normalize
from cnn_jax.data.preprocess import InputTransform
from cnn_jax.errors import UserError
from cnn_jax.loading import data_info, load_model
from cnn_jax.models import build_model
from cnn_jax.train import transfer
from cnn_jax.weights.importer import IMAGENET_MEAN, IMAGENET_STD, import_weights


def pixels(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# ----------------------------------------------------------------------------- the input transform


def test_without_resize_crop_or_channels_the_transform_is_the_plain_normalization():
    images = pixels((4, 28, 28, 1))
    mean, std = np.float32([0.2860]), np.float32([0.3530])
    plain = normalize(jnp.asarray(images), jnp.asarray(mean), jnp.asarray(std))
    ours = InputTransform(tuple(mean.tolist()), tuple(std.tolist()))(jnp.asarray(images))
    assert np.asarray(ours).tobytes() == np.asarray(plain).tobytes()  # runs without it compute what they did


def test_resize_then_centre_crop_then_grey_to_rgb():
    images = pixels((2, 8, 8, 1))
    transform = InputTransform((0.5,) * 3, (0.25,) * 3, resize=16, center_crop=12, grey_to_rgb=True)
    out = np.asarray(transform(jnp.asarray(images)))
    assert out.shape == (2, 12, 12, 3) == (2, *transform.output_shape((8, 8, 1)))
    resized = np.asarray(jax.image.resize(jnp.asarray(images, jnp.float32) / 255, (2, 16, 16, 1), "bilinear"))
    expected = (resized[:, 2:14, 2:14, :] - 0.5) / 0.25  # the central 12 x 12 of 16 x 16
    np.testing.assert_allclose(out, np.repeat(expected, 3, axis=-1), rtol=1e-6, atol=1e-6)


def test_a_crop_larger_than_the_resize_is_refused():
    config = config_lib.default_config()
    config.dataset.resize, config.dataset.center_crop = 224, 256
    with pytest.raises(UserError, match=r"'dataset.center_crop' = 256 is larger than dataset.resize = 224"):
        config_lib.validate_fields(config)


def test_new_fields_at_their_defaults_keep_the_run_id():
    """The fields added with pretrained weights (config.LATER_FIELDS) left every earlier run's id as it was;
    set to another value they change it, and frozen_batch_norm counts wherever something is frozen."""
    config = config_lib.default_config()
    assert config_lib.run_id(config) == "966845761c9d"  # the id before those fields existed
    for field, other in (("dataset.resize", 64), ("transfer.normalization", "dataset"), ("dataset.grey_to_rgb", True)):
        changed = config_lib.apply_overrides(config_lib.default_config(), {field: other})
        assert config_lib.run_id(changed) != config_lib.run_id(config), field
    frozen = config_lib.apply_overrides(config_lib.default_config(), {"transfer.trainable": ("dense/*",)})
    batch = config_lib.apply_overrides(frozen, {"transfer.frozen_batch_norm": "batch"})
    assert config_lib.run_id(frozen) != config_lib.run_id(batch)


# ----------------------------------------------------------------------------- frozen batch norm


def bn_model_and_masks():
    model = build_model({"name": "ablation_net", "stages": 2, "width": 8, "batch_norm": True}, num_classes=10)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), train=False)
    stats = jax.tree_util.tree_map(lambda x: x + 0.3, variables["batch_stats"])  # stored statistics, not 0 / 1
    variables = {"params": variables["params"], "batch_stats": stats}
    config = config_lib.default_config()
    config.transfer.trainable = ("classifier/*",)
    masks = {key: transfer.trainable_mask(variables[key], config) for key in ("params", "batch_stats")}
    return model, variables, masks


def first_outputs(model, variables, layers, images) -> np.ndarray:
    with transfer.stored_statistics(layers):
        logits, _ = model.apply(variables, images, train=True, mutable=["batch_stats"])
    return np.asarray(logits[:2])


def test_a_frozen_batch_norm_normalizes_with_its_stored_statistics_whatever_the_batch():
    model, variables, masks = bn_model_and_masks()
    layers = transfer.frozen_batch_norms(masks)
    assert len(layers) == 2 and all(layer.endswith("BatchNorm_0") for layer in layers)
    small = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 3)), jnp.float32)
    large = jnp.concatenate([small, 3.0 + jnp.asarray(np.random.default_rng(1).normal(size=(6, 16, 16, 3)))])
    inference = model.apply(variables, small, train=False)
    np.testing.assert_allclose(first_outputs(model, variables, layers, small), inference, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(first_outputs(model, variables, layers, large), inference, rtol=1e-6, atol=1e-6)
    batch_mode = frozenset()  # transfer.frozen_batch_norm = 'batch': each batch's statistics
    assert not np.allclose(first_outputs(model, variables, batch_mode, small), inference, atol=1e-3)
    assert not np.allclose(
        first_outputs(model, variables, batch_mode, large), first_outputs(model, variables, batch_mode, small)
    )


# ----------------------------------------------------------------------------- a run from a torchvision file


@pytest.mark.slow
def test_a_run_starts_from_a_torchvision_file_with_the_weights_preprocessing(tmp_path, fashion_paths):
    """ResNet-18 weights (randomized, saved as torchvision's .pth) -> Fashion-MNIST resized to 32 x 32 and
    repeated to RGB, ImageNet normalization, only the new fc trains: the backbone and its frozen batch
    norms stay bitwise, and the manifest records the weights and the input."""
    torch = pytest.importorskip("torch")
    import torch_reference

    from cnn_jax.train.loop import train

    torch.manual_seed(0)
    weights = tmp_path / "resnet18-random.pth"
    torch.save(torch_reference.randomized(torch_reference.build("resnet18")).state_dict(), weights)
    config = config_lib.default_config()
    overrides = {
        "experiment": "pretrained_test",
        "model.name": "resnet18",
        "dataset.train_subset": 320,
        "dataset.eval_subset": 100,
        "dataset.resize": 32,
        "dataset.grey_to_rgb": True,
        "train.batch_size": 64,
        "train.epochs": 1,
        "transfer.source": str(weights),
        "transfer.skip": ("fc/*",),
        "transfer.trainable": ("fc/*",),
    }
    config = config_lib.apply_overrides(config, overrides)
    run_dir = tmp_path / "run"
    train(config, run_dir, fashion_paths, progress=False, log=lambda *a: None)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    data = manifest["data"]
    assert data["normalization"] == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    assert data["input"]["model_input_shape"] == [32, 32, 3] and data["image_shape"] == [28, 28, 1]
    assert manifest["transfer"]["weights"]["sha256"] and manifest["transfer"]["weights"]["layout"] == "torchvision"
    imported = import_weights(str(weights), "resnet18")
    _, after = load_model(run_dir, "latest")
    for collection in ("params", "batch_stats"):
        before = traverse_util.flatten_dict(imported.variables[collection], sep="/")
        now = traverse_util.flatten_dict(after[collection], sep="/")
        for key, value in before.items():
            if not key.startswith("fc/"):
                assert np.asarray(now[key]).tobytes() == value.tobytes(), key
    assert not np.array_equal(np.asarray(after["params"]["fc"]["bias"]), np.zeros(10))
    info = data_info(run_dir)
    assert info.preprocess(pixels((2, 28, 28, 1))).shape == (2, 32, 32, 3)

    # Only the head trains on a frozen backbone: its input features were computed once and stored; training
    # through the backbone instead gives the same head, up to float rounding.
    cache = data["feature_cache"]  # stored beside the run directory, for the next seed or variant to read
    assert cache["used"] and cache["head"] == "fc" and not cache["reused"]
    through = config_lib.apply_overrides(config, {"transfer.feature_cache": False})
    train(through, tmp_path / "through", fashion_paths, progress=False, log=lambda *a: None)
    _, direct = load_model(tmp_path / "through", "latest")
    for leaf in ("kernel", "bias"):
        np.testing.assert_allclose(after["params"]["fc"][leaf], direct["params"]["fc"][leaf], rtol=1e-4, atol=1e-5)
    assert Path(cache["file"]).parent == tmp_path / ".feature_cache" and Path(cache["file"]).is_file()


def test_the_train_step_uses_stored_statistics_only_when_asked():
    """`transfer.frozen_batch_norm`: the same step from the same state trains the head on other features."""
    from cnn_jax.train.optim import make_optimizer, make_schedule
    from cnn_jax.train.state import TrainState
    from cnn_jax.train.steps import make_train_step

    model, variables, masks = bn_model_and_masks()
    batch = {"image": jnp.asarray(pixels((8, 16, 16, 3))), "label": jnp.arange(8) % 10, "mask": jnp.ones(8, bool)}
    heads = {}
    for mode in ("inference", "batch"):
        config = config_lib.apply_overrides(
            config_lib.default_config(),
            {"transfer.trainable": ("classifier/*",), "transfer.frozen_batch_norm": mode, "optimizer.name": "sgd"},
        )
        tx = make_optimizer(config, make_schedule(config, 10))
        state = TrainState(
            jnp.zeros((), jnp.int32),
            variables["params"],
            variables["batch_stats"],
            tx.init(variables["params"]),
            jax.random.PRNGKey(0),
        )
        step = make_train_step(model, tx, config, InputTransform((0.5,) * 3, (0.25,) * 3), masks)
        new_state, _ = jax.jit(step)(state, batch, jax.random.PRNGKey(0))
        assert jax.tree_util.tree_all(
            jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), new_state.batch_stats, state.batch_stats)
        )
        heads[mode] = np.asarray(jax.tree_util.tree_leaves(new_state.params["classifier"])[0])
    assert not np.allclose(heads["inference"], heads["batch"])
