"""Pretrained-weight import: the imported zoo model computes the source model's logits, and every bad
file is refused in one line.

Source models are randomly initialized (batch-norm statistics and affine parameters randomized, so a
swapped key changes the output) and saved in the formats users download: a torchvision state dict as
.pth or .safetensors (tests/torch_reference.py builds torchvision's modules key for key) and Keras 3's
VGG16 as .h5 (see test_keras_vgg16_logits_equal).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnn_jax.errors import UserError
from cnn_jax.weights import files
from cnn_jax.weights.importer import TORCHVISION, TORCHVISION_GOOGLENET, import_weights

torch = pytest.importorskip("torch", reason="the torch-format checks need PyTorch (the test extra installs it)")
import torch_reference  # noqa: E402  (needs torch)

RELATIVE = 1e-4  # max |flax - torch| / max |torch| over the logits


def torch_file(tmp_path: Path, name: str, fmt: str = "pth", seed: int = 0, **kwargs) -> tuple[Path, object]:
    """A randomized torchvision-layout model of zoo name `name`, saved as .pth or .safetensors."""
    torch.manual_seed(seed)
    model = torch_reference.randomized(torch_reference.build(name, **kwargs), seed)
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "pth":
        torch.save(model.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path, model


def images(size: int, n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype(np.float32)


def relative_difference(imported, torch_model, x: np.ndarray) -> float:
    ours = np.asarray(imported.model.apply(imported.variables, x, train=False))
    with torch.no_grad():
        theirs = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert ours.shape == theirs.shape
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    return torch_file(tmp_path_factory.mktemp("weights"), "resnet18")


def test_resnet18_pth_logits_equal_at_224_and_160(resnet18_file):
    path, model = resnet18_file
    imported = import_weights(str(path), "resnet18")
    for size in (224, 160):
        assert relative_difference(imported, model, images(size)) < RELATIVE
    assert imported.preprocessing == TORCHVISION
    assert imported.record["num_classes"] == 1000
    assert imported.record["ignored"]["count"] == 20  # the 20 batch norms' num_batches_tracked


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "fmt", "sizes"),
    [
        ("vgg11_bn", "safetensors", (224, 96)),
        ("resnet50", "safetensors", (224, 160)),
        ("alexnet_torchvision", "pth", (224, 256)),
    ],
)
def test_torchvision_logits_equal(tmp_path, name, fmt, sizes):
    path, model = torch_file(tmp_path, name, fmt)
    imported = import_weights(str(path), name)
    for size in sizes:
        assert relative_difference(imported, model, images(size)) < RELATIVE, size


@pytest.mark.slow
def test_googlenet_with_and_without_aux_heads(tmp_path):
    path, model = torch_file(tmp_path, "googlenet", num_classes=10)
    plain = import_weights(str(path), "googlenet")  # the aux heads' keys are deliberately ignored
    with_aux = import_weights(str(path), {"name": "googlenet", "aux_heads": True})
    for size in (224, 160):
        assert relative_difference(plain, model, images(size)) < RELATIVE
        assert relative_difference(with_aux, model, images(size)) < RELATIVE
    assert plain.record["num_classes"] == 10
    assert with_aux.record["ignored"]["count"] < plain.record["ignored"]["count"]
    assert with_aux.variables["params"]["aux2"]["fc2"]["kernel"].shape == (1024, 10)
    assert plain.preprocessing == TORCHVISION_GOOGLENET
    (tmp_path / "noaux").mkdir()
    without_aux, _ = torch_file(tmp_path / "noaux", "googlenet", aux_logits=False)
    with pytest.raises(UserError, match=r"missing in the file \(18\): aux1\."):
        import_weights(str(without_aux), {"name": "googlenet", "aux_heads": True})


# ----------------------------------------------------------------------------- bad input


def test_missing_file_names_the_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(UserError, match=r"weights file 'vgg16-397923af.pth' not found .*torch/hub/checkpoints"):
        import_weights("vgg16-397923af.pth", "vgg16")


def test_a_file_in_the_torch_cache_is_found_by_name(resnet18_file, tmp_path, monkeypatch):
    path, _ = resnet18_file
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet18-f37072fd.pth").write_bytes(path.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    imported = import_weights("resnet18-f37072fd.pth", "resnet18")
    assert imported.record["found"] == f"in the cache {cache}"


def test_truncated_file(resnet18_file, tmp_path):
    path, _ = resnet18_file
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match=r"could not be read as a PyTorch state dict: .*Is the download complete"):
        import_weights(str(cut), "resnet18")


def test_file_of_another_architecture(resnet18_file):
    path, _ = resnet18_file
    with pytest.raises(UserError, match=r"does not fit model 'resnet34'.*missing in the file \(\d+\): layer1\.2\."):
        import_weights(str(path), "resnet34")
    with pytest.raises(UserError, match=r"does not fit model 'vgg16'"):
        import_weights(str(path), "vgg16")


def test_extra_and_reshaped_keys(resnet18_file, tmp_path):
    path, _ = resnet18_file
    state = torch.load(path, weights_only=True)
    torch.save({**state, "layer5.0.conv1.weight": torch.zeros(3)}, tmp_path / "extra.pth")
    with pytest.raises(UserError, match=r"in the file but not in the model \(1\): layer5\.0\.conv1\.weight"):
        import_weights(str(tmp_path / "extra.pth"), "resnet18")
    state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"][:, :32]
    torch.save(state, tmp_path / "reshaped.pth")
    with pytest.raises(UserError, match=r"shapes differ \(1\): layer1\.0\.conv1\.weight \(64, 32, 3, 3\)"):
        import_weights(str(tmp_path / "reshaped.pth"), "resnet18")


def test_models_that_cannot_take_the_weights(resnet18_file):
    path, _ = resnet18_file
    with pytest.raises(UserError, match=r"model 'resnet20' cannot take torchvision weights; supported: vgg11"):
        import_weights(str(path), "resnet20")
    with pytest.raises(UserError, match=r"a layer the torchvision layout does not have .*model.downsample"):
        import_weights(str(path), {"name": "resnet18", "downsample": "stride"})


def test_not_a_state_dict_and_unknown_extension(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(UserError, match=r"holds a list, not a state dict"):
        import_weights(str(tmp_path / "list.pth"), "resnet18")
    (tmp_path / "w.ckpt").write_bytes(b"x")
    assert not files.is_weights_file(str(tmp_path / "w.ckpt"))
    with pytest.raises(UserError, match=r"unknown extension '.ckpt'"):
        files.read(str(tmp_path / "w.ckpt"))


# ----------------------------------------------------------------------------- Keras


def keras_vgg16():
    """Keras 3's VGG16 (JAX backend), randomly initialized, with random biases and no softmax."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras", reason="the Keras-format check needs Keras 3 (the test extra installs it)")
    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None, classifier_activation=None)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(0.05 * rng.normal(size=layer.bias.shape).astype(np.float32))
    return keras, model


def write_applications_layout(model, path: Path) -> None:
    """The layout of the Keras applications' own files (vgg16_weights_tf_dim_ordering_tf_kernels.h5,
    written by Keras 2): root attribute 'layer_names', per layer 'weight_names' naming its datasets."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}_{'Wb'[i]}_1:0" for i in range(len(layer.weights))]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for name, weight in zip(names, layer.weights):
                group.create_dataset(name, data=np.asarray(weight.numpy()))


@pytest.mark.slow
def test_keras_vgg16_logits_equal(tmp_path):
    """Keras' VGG16 takes caffe-style BGR input; the import reverses the first conv's input channels, so the
    zoo model takes RGB pixels minus the ImageNet mean and gives the same logits."""
    keras, model = keras_vgg16()
    from keras.applications.vgg16 import preprocess_input

    pixels = np.random.default_rng(1).uniform(0, 255, size=(2, 224, 224, 3)).astype(np.float32)
    theirs = np.asarray(model(preprocess_input(pixels.copy())))
    model.save(tmp_path / "full.h5")  # Keras 3's legacy whole-model HDF5 ('model_weights' group)
    model.save_weights(tmp_path / "vgg16.weights.h5")  # Keras 3's weights layout ('layers/<name>/vars')
    write_applications_layout(model, tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5")
    for name in ("full.h5", "vgg16.weights.h5", "vgg16_weights_tf_dim_ordering_tf_kernels.h5"):
        imported = import_weights(str(tmp_path / name), "vgg16")
        p = imported.preprocessing
        x = (pixels / 255.0 - np.asarray(p.mean, np.float32)) / np.asarray(p.std, np.float32)
        ours = np.asarray(imported.model.apply(imported.variables, x, train=False))
        assert np.abs(ours - theirs).max() / np.abs(theirs).max() < RELATIVE, name
        assert imported.record["layout"] == "keras"
    with pytest.raises(UserError, match=r"model 'resnet50' cannot take keras weights"):
        import_weights(str(tmp_path / "vgg16.weights.h5"), "resnet50")


# ----------------------------------------------------------------------------- the run-like directory


def test_import_weights_writes_a_directory_the_tools_read(resnet18_file, tmp_path, capsys):
    from cnn_jax import cli
    from cnn_jax.loading import data_info, load_model

    path, torch_model = resnet18_file
    out = tmp_path / "resnet18-imported"
    assert cli.main(["import-weights", str(path), "--model", "resnet18", "--out", str(out)]) == 0
    assert "imported 102 arrays" in capsys.readouterr().out
    model, variables = load_model(out)  # the default 'best' is the one checkpoint
    info = data_info(out)
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 224, 224, 3), dtype=np.uint8)
    x = info.preprocess(pixels)
    expected = (pixels / 255.0 - np.asarray(TORCHVISION.mean)) / np.asarray(TORCHVISION.std)
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)
    ours = np.asarray(model.apply(variables, x, train=False))
    with torch.no_grad():
        theirs = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < RELATIVE
    for command in (["inspect", str(out)], ["summary", str(out)], ["export", str(out), "--out", str(tmp_path / "e")]):
        assert cli.main(command) == 0, command
    assert "11,689,512" in capsys.readouterr().out  # summary: torchvision's ResNet-18 parameter count
    import cnn_jax

    again = cnn_jax.import_weights(path, "resnet18", runs_root=tmp_path)  # the Python API, default location
    assert again.parent == tmp_path / "pretrained" and again.name.startswith("resnet18-")
    assert cnn_jax.data_info(again).pretrained


def test_a_failed_import_writes_nothing(resnet18_file, tmp_path, capsys):
    from cnn_jax import cli

    path, _ = resnet18_file
    assert cli.main(["import-weights", str(path), "--model", "vgg16", "--out", str(tmp_path / "x" / "vgg")]) == 2
    error = capsys.readouterr().err
    assert "does not fit model 'vgg16'" in error and error.count("\n") == 1
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").iterdir())
