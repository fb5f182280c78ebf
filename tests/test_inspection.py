"""Inspecting checkpoints, loading trained models, exporting them, and pictures of filters and feature maps.

Two tiny real runs on Fashion-MNIST (ablation_net, width 8, 640 images, 2 epochs of 10 steps, a
checkpoint every 5 steps): one plain, one with batch norm so that batch statistics exist.
"""

from __future__ import annotations

import json
import shutil
import sys

import jax
import ml_dtypes
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from cnn_jax import cli, rundir
from cnn_jax import config as config_lib
from cnn_jax.analysis import plots
from cnn_jax.analysis.export import export_run, flat_variables, read_export
from cnn_jax.analysis.features import filter_tiles, plot_features, plot_filters
from cnn_jax.analysis.inspection import format_report, inspect_checkpoint, optimizer_summary
from cnn_jax.checkpoints import flatten, locate
from cnn_jax.data.arrays import balanced_subset
from cnn_jax.data.augment import normalize
from cnn_jax.errors import UserError
from cnn_jax.loading import data_info, load_model, load_run
from cnn_jax.models.summary import summarize
from cnn_jax.train.loop import open_checkpoints, train

FIRST_CONV = "stage1/ConvStack_0/ConvUnit_0/Conv_0"


def tiny_config(**overrides):
    base = {
        "experiment": "inspect",
        "model.name": "ablation_net",
        "model.width": 8,
        "dataset.train_subset": 640,
        "dataset.eval_subset": 500,
        "train.batch_size": 64,
        "train.epochs": 2,
        "train.log_every_steps": 5,
        "checkpoint.every_steps": 5,
        "checkpoint.keep": 10,
    }
    return config_lib.apply_overrides(config_lib.default_config(), {**base, **overrides})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fashion_data_dir):
    """{"plain": run_dir, "bn": run_dir}, each trained for 20 steps with checkpoints at 5, 10, 15, 20."""
    from cnn_jax.train.setup import DataPaths

    root = tmp_path_factory.mktemp("inspect_runs")
    quiet = {"progress": False, "log": lambda *_: None}
    for name, overrides in (("plain", {}), ("bn", {"model.batch_norm": True})):
        train(tiny_config(**overrides), root / name, DataPaths(fashion_data_dir, ()), **quiet)
    return {"plain": root / "plain", "bn": root / "bn"}


@pytest.fixture(scope="module")
def test_split(fashion_data_dir):
    from cnn_jax.data import catalog

    return catalog.load("fashion_mnist", fashion_data_dir, [], log=lambda *_: None).dataset.splits["test"]


def epoch_records(run_dir):
    return {r["step"]: r for r in rundir.read_metrics(run_dir) if "val_accuracy" in r}


def raw_payload(run_dir, step):
    """The checkpoint as Orbax restores it without a target, independently of cnn_jax.checkpoints."""
    manager = open_checkpoints(run_dir, rundir.load_config(run_dir), read_only=True)
    return jax.tree_util.tree_map(np.asarray, manager.restore(step, args=ocp.args.StandardRestore()))


# ----------------------------------------------------------------------------- inspect


@pytest.mark.slow
def test_inspect_lists_every_saved_step_with_its_metrics_and_marks_the_best(runs):
    report = inspect_checkpoint(runs["plain"])
    records = epoch_records(runs["plain"])
    best = max(records, key=lambda step: records[step]["val_accuracy"])
    assert [s["step"] for s in report["steps"]] == [5, 10, 15, 20]
    assert [s["step"] for s in report["steps"] if s["best"]] == [best]
    assert best == rundir.read_result(runs["plain"])["val_best"]["step"]
    assert [s["step"] for s in report["steps"] if s["latest"]] == [20] and report["step"] == 20
    for entry in report["steps"]:
        expected = records.get(entry["step"])
        assert entry["metrics"] == (
            {k: v for k, v in expected.items() if k.startswith(("val_", "test_"))} if expected else None
        )
    assert report["config"]["model.width"] == 8 and "model.stages" not in report["config"]


@pytest.mark.slow
def test_inspect_text_marks_the_best_step_and_summarizes_the_optimizer(runs, capsys):
    assert cli.main(["inspect", str(runs["plain"])]) == 0
    out = capsys.readouterr().out
    best = max((r for r in epoch_records(runs["plain"]).values()), key=lambda r: r["val_accuracy"])["step"]
    best_line = next(line for line in out.splitlines() if "best (val_accuracy, max)" in line)
    assert best_line.split()[0] == str(best)
    assert "optimizer state (adam)" in out and "scale_by_adam" in out
    assert f"params/{FIRST_CONV}/kernel" in out and "3x3x1x8" in out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["plain", "bn"])
def test_parameter_counts_equal_the_model_summary(runs, name):
    report = inspect_checkpoint(runs[name])
    model, _ = load_model(runs[name])
    summary = summarize(model, (28, 28, 1))
    totals = report["totals"]
    assert totals["params"] == summary.trainable_params
    assert totals["batch_stats"] == summary.non_trainable_params == (112 if name == "bn" else 0)
    assert totals["total"] == summary.total_params == sum(m["elements"] for m in report["modules"])
    first = next(m for m in report["modules"] if m["module"] == f"params/{FIRST_CONV}")
    assert first["elements"] == 3 * 3 * 1 * 8 + (0 if name == "bn" else 8)  # no conv bias before batch norm


@pytest.mark.slow
def test_statistics_equal_numpy_on_the_restored_arrays(runs):
    report = inspect_checkpoint(runs["bn"], step=15)
    state = raw_payload(runs["bn"], 15)["state"]
    arrays = flatten({"params": state["params"], "batch_stats": state["batch_stats"]})
    assert [t["key"] for t in report["tensors"]] == list(arrays)
    assert any(key.startswith("batch_stats/") for key in arrays)
    for row in report["tensors"]:
        x = arrays[row["key"]].astype(np.float64)
        assert row["shape"] == list(x.shape) and row["dtype"] == "float32"
        assert row["mean"] == pytest.approx(x.mean(), rel=1e-12, abs=1e-15)
        assert row["std"] == pytest.approx(x.std(), rel=1e-12)
        assert (row["min"], row["max"]) == (x.min(), x.max())
        assert row["l2"] == pytest.approx(np.linalg.norm(x.ravel()), rel=1e-12)
        assert row["zeros"] == np.count_nonzero(x == 0) / x.size


@pytest.mark.slow
def test_optimizer_summary_shows_adam_moments_and_the_step_count(runs):
    report = inspect_checkpoint(runs["plain"], step=10)
    optimizer = report["optimizer"]
    params = report["totals"]["params"]
    adam = next(s for s in optimizer["states"] if s["transform"].startswith("scale_by_adam"))
    assert adam["fields"]["count"] == {"value": 10}
    assert adam["fields"]["mu"]["elements"] == adam["fields"]["nu"]["elements"] == params
    opt_state = raw_payload(runs["plain"], 10)["state"]["opt_state"]
    mu = jax.tree_util.tree_leaves(opt_state[0][0]["mu"])
    assert adam["fields"]["mu"]["l2"] == pytest.approx(np.sqrt(sum(np.sum(np.float64(a) ** 2) for a in mu)))
    assert optimizer["arrays"] == len(jax.tree_util.tree_leaves(opt_state))
    assert optimizer["name"] == "adam"


@pytest.mark.slow
def test_diff_of_a_checkpoint_with_itself_is_zero_and_with_another_step_is_not(runs):
    run = runs["bn"]
    same = inspect_checkpoint(run, step=20, diff_with=run / "checkpoints" / "20")["diff"]
    assert same["identical"] and same["max_abs_diff"] == 0
    assert all(r["max_abs_diff"] == 0 and r["relative_change"] == 0 for r in same["tensors"])
    other = inspect_checkpoint(run, step=20, diff_with=run, diff_step=10)["diff"]
    assert not other["identical"] and other["other_step"] == 10 and other["max_abs_diff"] > 0
    a = raw_payload(run, 20)["state"]["params"]["classifier"]["kernel"].astype(np.float64)
    b = raw_payload(run, 10)["state"]["params"]["classifier"]["kernel"].astype(np.float64)
    row = next(r for r in other["tensors"] if r["key"] == "params/classifier/kernel")
    assert row["max_abs_diff"] == np.abs(a - b).max()
    assert row["relative_change"] == pytest.approx(np.linalg.norm(a - b) / np.linalg.norm(a), rel=1e-12)


@pytest.mark.slow
def test_diff_of_different_architectures_lists_the_keys_and_shapes_that_differ(runs, tmp_path):
    diff = inspect_checkpoint(runs["plain"], diff_with=runs["bn"])["diff"]
    assert f"params/{FIRST_CONV}/bias" in diff["only_in_first"]
    assert "batch_stats/stage1/ConvStack_0/ConvUnit_0/BatchNorm_0/mean" in diff["only_in_second"]
    wider = _copy_with_eleven_classes(runs["plain"], tmp_path)
    shapes = inspect_checkpoint(runs["plain"], diff_with=wider)["diff"]["shape_differs"]
    assert {"key": "params/classifier/kernel", "first": [32, 10], "second": [32, 11]} in shapes


def _copy_with_eleven_classes(run_dir, tmp_path):
    """A checkpoints folder holding `run_dir`'s step 20 with an 11-class classifier (as another run's would)."""
    from cnn_jax import checkpoints

    payload = raw_payload(run_dir, 20)
    classifier = payload["state"]["params"]["classifier"]
    classifier["kernel"] = np.zeros((32, 11), np.float32)
    classifier["bias"] = np.zeros(11, np.float32)
    manager = checkpoints.open_manager(
        tmp_path / "other" / "checkpoints", keep=1, best_metric="val_accuracy", best_mode="max"
    )
    checkpoints.save(manager, 20, payload)
    return tmp_path / "other" / "checkpoints"


@pytest.mark.slow
def test_inspect_reads_a_checkpoints_folder_and_a_single_step_folder(runs):
    by_run = inspect_checkpoint(runs["bn"], step=15)
    by_folder = inspect_checkpoint(runs["bn"] / "checkpoints", step=15)
    by_step = inspect_checkpoint(runs["bn"] / "checkpoints" / "15")
    assert by_run["tensors"] == by_folder["tensors"] == by_step["tensors"]
    assert by_step["step"] == 15 and locate(runs["bn"] / "checkpoints" / "15").run_dir == runs["bn"]
    with pytest.raises(UserError, match="single checkpoint of step 15; give its run directory"):
        inspect_checkpoint(runs["bn"] / "checkpoints" / "15", step=20)


@pytest.mark.slow
def test_reading_checkpoints_needs_neither_the_dataset_nor_the_optimizer(runs, monkeypatch):
    from cnn_jax.data import catalog
    from cnn_jax.train import optim

    def forbidden(*args, **kwargs):
        raise AssertionError("must not be called")

    monkeypatch.setattr(catalog, "load", forbidden)
    monkeypatch.setattr(optim, "make_optimizer", forbidden)
    inspect_checkpoint(runs["bn"], diff_with=runs["plain"])
    load_model(runs["bn"])


# ----------------------------------------------------------------------------- load_model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["plain", "bn"])
def test_load_model_reproduces_the_runs_final_test_accuracy(runs, test_split, name):
    model, variables = load_model(runs[name], step="latest")
    assert set(variables) == ({"params", "batch_stats"} if name == "bn" else {"params"})
    evaluated = balanced_subset(test_split, rundir.load_config(runs[name]).dataset.eval_subset, "dataset.eval_subset")
    x = data_info(runs[name]).preprocess(evaluated.images)
    apply = jax.jit(lambda v, batch: model.apply(v, batch, train=False))
    predictions = np.concatenate(
        [np.asarray(apply(variables, x[i : i + 1000])).argmax(-1) for i in range(0, len(x), 1000)]
    )
    accuracy = float(np.mean(predictions == evaluated.labels))
    assert accuracy == pytest.approx(rundir.read_result(runs[name])["final"]["test_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_load_model_takes_the_best_checkpoint_by_default(runs):
    best = rundir.read_result(runs["plain"])["val_best"]["step"]
    loaded = load_run(runs["plain"])
    assert loaded.step == best
    saved = raw_payload(runs["plain"], best)["state"]["params"]
    for key, value in flatten(saved).items():
        np.testing.assert_array_equal(flatten(loaded.variables["params"])[key], value)


@pytest.mark.slow
def test_preprocess_normalizes_uint8_images_as_training_did(runs, test_split):
    info = data_info(runs["plain"])
    manifest = json.loads((runs["plain"] / "manifest.json").read_text())["data"]
    assert info.classes[0] == "T-shirt/top" and info.image_shape == (28, 28, 1)
    assert info.mean.tolist() == manifest["normalization"]["mean"]
    x = info.preprocess(test_split.images[:3])
    in_step = jax.jit(normalize)(test_split.images[:3], info.mean, info.std)  # what the eval step computes
    assert x.dtype == np.float32 and np.array_equal(x, np.asarray(in_step))
    by_hand = (test_split.images[:3].astype(np.float32) / np.float32(255) - info.mean) / info.std
    np.testing.assert_allclose(x, by_hand, rtol=1e-6, atol=1e-6)
    with pytest.raises(UserError, match="must be uint8"):
        info.preprocess(test_split.images[:3].astype(np.float32))
    with pytest.raises(UserError, match=r"\(32, 32, 3\) do not match the run's stored images \(28, 28, 1\)"):
        info.preprocess(np.zeros((2, 32, 32, 3), np.uint8))


def _copy_with_config(run_dir, tmp_path, **changes):
    copy = tmp_path / "edited"
    shutil.copytree(run_dir, copy)
    config = config_lib.apply_overrides(rundir.load_config(copy), changes)
    (copy / "config.json").write_text(config_lib.to_json(config))
    return copy


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_its_edited_config_names_the_shapes(runs, tmp_path):
    copy = _copy_with_config(runs["plain"], tmp_path, **{"model.width": 16})
    with pytest.raises(UserError) as error:
        load_model(copy)
    message = str(error.value)
    assert "does not fit the ablation_net model" in message and "\n" not in message
    assert f"params/{FIRST_CONV}/kernel: saved (3, 3, 1, 8) vs model (3, 3, 1, 16)" in message
    assert "params/classifier/kernel: saved (32, 10) vs model (64, 10)" in message


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_names_missing_and_unexpected_keys(runs, tmp_path):
    copy = _copy_with_config(runs["plain"], tmp_path, **{"model.batch_norm": True})
    with pytest.raises(UserError) as error:
        load_model(copy)
    message = str(error.value)
    # 3 batch norms: scale and bias in params, mean and var in batch_stats; the convs lose their biases
    assert "missing in the checkpoint (12): params/stage1/ConvStack_0/ConvUnit_0/BatchNorm_0/bias" in message
    assert f"unexpected in the checkpoint (3): params/{FIRST_CONV}/bias" in message
    assert "... and 8 more" in message and "\n" not in message


# ----------------------------------------------------------------------------- export


@pytest.mark.slow
def test_export_npz_round_trips_bitwise_with_config_and_normalization_beside_it(runs, tmp_path):
    done = export_run(runs["bn"], out=tmp_path / "model.npz")
    _, variables = load_model(runs["bn"])
    expected = flat_variables(variables)
    with np.load(done.path) as data:
        assert sorted(data.files) == sorted(expected)
        for key, value in expected.items():
            assert data[key].dtype == value.dtype and data[key].tobytes() == value.tobytes(), key
    sidecar = json.loads(done.sidecar.read_text())
    assert done.sidecar == tmp_path / "model.npz.json" and sidecar["step"] == done.step
    assert sidecar["config"] == json.loads((runs["bn"] / "config.json").read_text())
    manifest = json.loads((runs["bn"] / "manifest.json").read_text())["data"]
    assert sidecar["normalization"]["mean"] == manifest["normalization"]["mean"]
    assert sidecar["data"]["classes"] == manifest["classes"]
    assert sidecar["tensors"]["batch_stats/stage1/ConvStack_0/ConvUnit_0/BatchNorm_0/var"]["shape"] == [8]
    for key, value in flat_variables(read_export(done.path)).items():
        assert value.tobytes() == expected[key].tobytes()


@pytest.mark.slow
def test_export_defaults_to_the_best_step_in_the_run_directory(runs, capsys):
    assert cli.main(["export", str(runs["plain"])]) == 0
    best = rundir.read_result(runs["plain"])["val_best"]["step"]
    assert (runs["plain"] / "export" / f"step{best}.npz").is_file()
    assert (runs["plain"] / "export" / f"step{best}.npz.json").is_file()
    assert f"step {best}" in capsys.readouterr().out


@pytest.mark.slow
def test_export_safetensors_round_trips_with_metadata(runs, tmp_path):
    from safetensors import safe_open

    done = export_run(runs["bn"], fmt="safetensors", out=tmp_path / "model.safetensors")
    expected = flat_variables(load_model(runs["bn"])[1])
    with safe_open(str(done.path), "np") as f:
        metadata = f.metadata()
        assert sorted(f.keys()) == sorted(expected)
        for key in f.keys():
            assert f.get_tensor(key).tobytes() == expected[key].tobytes()
    assert json.loads(metadata["config"])["model"]["batch_norm"] is True
    assert json.loads(metadata["normalization"])["std"] == json.loads(done.sidecar.read_text())["normalization"]["std"]


# ----------------------------------------------------------------------------- pictures


@pytest.mark.slow
def test_filters_png_has_one_min_max_scaled_tile_per_output_channel(runs, tmp_path):
    picture = plot_filters(runs["plain"], out=tmp_path / "filters.png")
    assert picture.layers == (FIRST_CONV,) and picture.grid == (3, 3)  # 8 channels, near-square
    with Image.open(picture.path) as png:
        assert png.format == "PNG" and min(png.size) > 100
    kernel = np.asarray(
        load_model(runs["plain"])[1]["params"]["stage1"]["ConvStack_0"]["ConvUnit_0"]["Conv_0"]["kernel"]
    )
    tiles, how = filter_tiles(kernel)
    assert tiles.shape == (8, 3, 3, 1) and how == "grey"
    k = kernel[:, :, 0, 5].astype(np.float64)
    np.testing.assert_allclose(tiles[5, ..., 0], (k - k.min()) / (k.max() - k.min()))
    image = plots.mosaic(tiles, cols=3)
    assert image.shape == (3 * 4 + 1, 3 * 4 + 1, 3)
    np.testing.assert_allclose(image[1 + 4 : 1 + 4 + 3, 1 + 8 : 1 + 8 + 3, 0], tiles[5, ..., 0])  # row 1, col 2


@pytest.mark.slow
def test_filters_of_rgb_and_deeper_layers(runs, tmp_path):
    rgb, how = filter_tiles(np.random.default_rng(0).normal(size=(5, 5, 3, 6)))
    assert rgb.shape == (6, 5, 5, 3) and how == "RGB" and rgb.min() == 0 and rgb.max() == 1
    picture = plot_filters(runs["bn"], layer="stage2/ConvStack_0/ConvUnit_0/Conv_0", out=tmp_path / "f2.png")
    assert picture.grid == (4, 4)  # 16 output channels, each the mean over 8 input channels
    with Image.open(picture.path) as png:
        png.verify()


@pytest.mark.slow
def test_features_png_of_an_image_file_converted_to_the_runs_input(runs, tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(photo)
    picture = plot_features(runs["bn"], photo, out=tmp_path / "features.png")
    assert picture.layers == ("stage1", "stage2", "stage3")
    with Image.open(picture.path) as png:
        assert png.format == "PNG"
    with Image.open(photo) as img:
        pixels = np.asarray(img.convert("L").resize((28, 28), Image.Resampling.BILINEAR))[None, ..., None]
    model, variables = load_model(runs["bn"])
    logits = np.asarray(model.apply(variables, data_info(runs["bn"]).preprocess(pixels), train=False))[0]
    assert picture.prediction.startswith(data_info(runs["bn"]).classes[int(logits.argmax())] + " (p=")
    nested = plot_features(runs["bn"], photo, layers=[FIRST_CONV, "stage3"], out=tmp_path / "f.png")
    assert nested.layers == (FIRST_CONV, "stage3")


# ----------------------------------------------------------------------------- command line


@pytest.mark.slow
def test_cli_inspect_json_and_diff(runs, capsys):
    run = str(runs["bn"])
    assert cli.main(["inspect", run, "--step", "10", "--diff", run, "--diff-step", "10", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["step"] == 10 and report["diff"]["identical"]
    assert cli.main(["inspect", run, "--diff", str(runs["bn"] / "checkpoints" / "5")]) == 0
    assert "diff: step 20 vs" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_filters_and_features_of_a_test_image(runs, tmp_path, capsys, fashion_data_dir):
    assert cli.main(["plot-filters", str(runs["bn"]), "--out", str(tmp_path / "f.png")]) == 0
    assert "3x3 grid" in capsys.readouterr().out
    assert (
        cli.main(
            [
                "plot-features",
                str(runs["bn"]),
                "--test-index",
                "0",
                "--layers",
                "stage1,stage2",
                "--data-dir",
                str(fashion_data_dir),
                "--out",
                str(tmp_path / "m.png"),
            ]
        )
        == 0
    )
    assert "stage1, stage2" in capsys.readouterr().out
    with Image.open(tmp_path / "m.png") as png:
        assert png.format == "PNG"


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["inspect", "{tmp}/nope"], "does not exist"),
        (["load", "{tmp}/nope"], "does not exist"),
        (["export", "{tmp}/nope"], "does not exist"),
        (["plot-filters", "{tmp}/nope"], "does not exist"),
        (["inspect", "{plain}", "--step", "7"], "checkpoint '7' not found"),
        (["export", "{plain}", "--step", "7"], "saved steps: [5, 10, 15, 20]"),
        (["inspect", "{plain}", "--diff-step", "5"], "--diff-step needs --diff"),
        (["plot-filters", "{plain}", "--layer", "stage1/Conv_0"], f"Conv layers: {FIRST_CONV}"),
        (["plot-features", "{plain}", "{tmp}/nope.png"], "cannot read image"),
        (["plot-features", "{plain}"], "either an image file or --test-index"),
        (
            ["plot-features", "{plain}", "{tmp}/photo.png", "--layers", "stage9"],
            "no layer 'stage9' in this model. Did you mean",
        ),
    ],
)
def test_cli_errors_exit_2_with_one_line(runs, tmp_path, capsys, args, message):
    if args[0] == "load":  # the Python API raises the same errors
        with pytest.raises(UserError, match=message):
            load_model(args[1].format(tmp=tmp_path))
        return
    argv = [a.format(tmp=tmp_path, plain=runs["plain"]) for a in args]
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "photo.png")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_load_model_is_importable_from_the_package_without_importing_jax_first():
    import subprocess

    code = (
        "import sys, cnn_jax; assert 'jax' not in sys.modules; from cnn_jax import load_model; "
        "print(load_model.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "cnn_jax.loading"


# ----------------------------------------------------------------------------- optimizer states of any kind

PARAMS = {
    "conv": {"kernel": np.ones((3, 3, 1, 4), np.float32), "bias": np.zeros(4, np.float32)},
    "head": {"kernel": np.ones((4, 2), np.float32), "bias": np.zeros(2, np.float32)},
}
MASK = {"conv": {"kernel": True, "bias": False}, "head": {"kernel": True, "bias": False}}
TRANSFORMS = {
    "sgd": optax.sgd(0.1),
    "nesterov_clip_l2": optax.chain(
        optax.clip_by_global_norm(1.0), optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9, nesterov=True)
    ),
    "adamw_masked_decay": optax.adamw(1e-3, mask=MASK),
    "multi_transform": optax.multi_transform(
        {
            "a": optax.adam(1e-3),
            "b": optax.chain(optax.sgd(0.1, momentum=0.9), optax.scale(0.1)),
            "c": optax.set_to_zero(),
        },
        {"conv": {"kernel": "a", "bias": "b"}, "head": {"kernel": "b", "bias": "c"}},
    ),
    "inject_hyperparams": optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3),
    "apply_if_finite": optax.apply_if_finite(optax.adam(1e-3), 3),
    "multi_steps": optax.MultiSteps(optax.adam(1e-3), 2),
    "lookahead": optax.lookahead(optax.adam(1e-3), 5, 0.5),
    "adafactor": optax.adafactor(1e-3),
}


@pytest.mark.parametrize("name", TRANSFORMS)
def test_any_optax_state_as_a_checkpoint_restores_it_is_summarized(name, tmp_path):
    """Orbax restores optax states without a target as lists, dicts, arrays and None (empty states, masked
    parameters): the summary counts every array once and describes every state, whatever its kind."""
    state = TRANSFORMS[name].init(PARAMS)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "c", {"opt_state": state})
    checkpointer.wait_until_finished()
    raw = jax.tree_util.tree_map(np.asarray, checkpointer.restore(tmp_path / "c"))["opt_state"]
    summary = optimizer_summary(raw, "custom")
    leaves = jax.tree_util.tree_leaves(state)
    assert summary["arrays"] == len(leaves) and summary["elements"] == sum(np.size(x) for x in leaves)
    fields = [f for s in summary["states"] for f in s["fields"].values()]
    assert sum(f.get("arrays", 1) for f in fields) == summary["arrays"]
    assert all(s["transform"] for s in summary["states"]) and json.loads(json.dumps(summary)) == summary


def test_leaves_that_are_not_arrays_are_described_not_refused():
    odd = [
        None,
        {},
        [],
        {"0": {"trace": {"w": np.ones(3)}}, "1": {"count": np.int32(4)}},
        {
            "mu": {"w": None, "b": np.ones(2)},
            "tag": "text",
            "scale": np.asarray(0.5, ml_dtypes.bfloat16),
            "flag": np.bool_(True),
            "obj": object(),
        },
        np.ones(2),
    ]
    summary = optimizer_summary(odd, None)
    by_path = {s["path"]: s for s in summary["states"]}
    assert [by_path[f"opt_state/{i}"]["transform"].startswith("empty") for i in range(3)] == [True] * 3
    assert by_path["opt_state/3/0"]["transform"] == "trace (momentum)"  # a tuple saved with digit keys
    assert by_path["opt_state/3/1"]["fields"] == {"count": {"value": 4}}
    fields = by_path["opt_state/4"]["fields"]
    assert fields["mu"] == {"arrays": 1, "elements": 2, "l2": pytest.approx(np.sqrt(2)), "masked": 1}
    assert fields["tag"]["other"] == ["str"] and fields["obj"]["other"] == ["object"]
    assert fields["scale"] == {"value": 0.5} and fields["flag"] == {"value": True}
    assert "bare leaf" in by_path["opt_state/5"]["transform"] and summary["arrays"] == 6
    report = {
        "checkpoints_dir": "c",
        "config": None,
        "best_by": {"metric": "m", "mode": "max"},
        "steps": [],
        "step": 1,
        "modules": [],
        "totals": {"params": 0, "batch_stats": 0, "total": 0},
        "tensors": [],
        "optimizer": summary,
    }
    text = format_report(report)
    assert "1 masked out" in text and "not arrays: str" in text and "count=4" in text
