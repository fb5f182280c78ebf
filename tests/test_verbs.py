"""Every read-only verb on every kind of run the product makes (issue 15): no verb may end in a traceback.

Run kinds: tiny real runs on real Fashion-MNIST (128 images, one epoch of 4 steps, checkpoints at steps 2
and 4), made as users make them (`run-task` of a sweep, `train`), each on first use: one per optimizer
recipe (sgd, sgd+nesterov, adam, adamw; with and without weight decay, clipping and a schedule), with and
without batch norm, a transfer run with frozen parts, two seeds trained as one program. Every verb runs
in-process through `cnn_jax.cli.main`, parametrized as run kind x verb; the sweeps made of these runs
get `status` and `report`.

The shipped experiments: every preset of every experiments/*.py (a new file is tested by being added;
_name.py files are helpers) validates each of its runs' configs and builds each of their models; marked
slow, its first run is also trained for two steps, inspected and exported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnn_jax import cli, rundir, validation
from cnn_jax import config as config_lib
from cnn_jax.analysis.export import FORMATS, read_export
from cnn_jax.checkpoints import flatten
from cnn_jax.data import catalog, tfds_store
from cnn_jax.data.arrays import Split
from cnn_jax.data.local_files import read_local
from cnn_jax.errors import UserError
from cnn_jax.loading import data_info, load_model
from cnn_jax.models import model_entry
from cnn_jax.sweep.plan import Plan, has_sweep, load_plan
from cnn_jax.train.setup import DataPaths

from conftest import ROOT, SHARED_DATA, shared

TEST_IMAGES = 1000  # the test split every run here evaluates on: its first 1,000 images
EXPERIMENT = '''
"""Run kinds for tests/test_verbs.py: sweeps over optimizer recipes, and two seeds of one config."""
from cnn_jax.config import default_config
from cnn_jax.sweep.plan import Axis, Sweep

PRESETS = ("kinds", "more", "seeds")
LENET = {"model.name": "lenet5"}
PLAIN = {"model.name": "ablation_net", "model.batch_norm": False}
BN = {"model.name": "ablation_net", "model.batch_norm": True}
KINDS = {
    "sgd": {**PLAIN, "optimizer.name": "sgd", "optimizer.momentum": 0.0, "schedule.name": "constant"},
    "adamw": {**BN, "optimizer.name": "adamw", "optimizer.weight_decay": 1e-4, "optimizer.grad_clip_norm": 1.0},
    "nesterov": {**BN, "optimizer.name": "sgd", "optimizer.nesterov": True, "optimizer.weight_decay": 5e-4,
                 "optimizer.grad_clip_norm": 1.0, "schedule.name": "step", "schedule.boundaries_epochs": (0.5,)},
    "adam": {**LENET, "optimizer.name": "adam", "optimizer.weight_decay": 1e-4, "schedule.name": "constant"},
}
LEVELS = {"kinds": ("sgd", "adamw"), "more": ("nesterov", "adam")}


def get_config(preset="kinds"):
    c = default_config()
    c.experiment = "verbs"
    c.model.name = "lenet5"  # the seeds; the kinds set their own model
    c.optimizer.name = "adamw"
    c.optimizer.weight_decay = 1e-4
    c.schedule.warmup_epochs = 0.25
    c.dataset.train_subset = 128
    c.dataset.eval_subset = 500
    c.train.batch_size = 32
    c.train.eval_batch_size = 500
    c.train.epochs = 1
    c.train.log_every_steps = 2
    c.checkpoint.every_steps = 2
    c.checkpoint.keep = 5
    return c


def get_sweep(preset="kinds"):
    if preset == "seeds":
        return Sweep(axes=(), seeds=(0, 1))
    return Sweep(axes=(Axis("kind", {name: KINDS[name] for name in LEVELS[preset]}),), seeds=(0,))
'''
SWEEPS = {"kinds": ("sgd", "adamw"), "more": ("nesterov", "adam"), "seeds": ("seed_group",)}
STEPS = (2, 4)  # the saved steps of every run kind: 4 steps, a checkpoint every 2
TRANSFORMS = {  # run kind -> the optimizer states its inspection names
    "sgd": ("empty", "scale_by_schedule"),
    "adamw": ("empty", "scale_by_adam", "scale_by_schedule"),
    "transfer": ("multi_transform", "masked", "scale_by_adam", "empty", "scale_by_schedule"),
    "nesterov": ("empty", "trace (momentum)", "scale_by_schedule"),
    "adam": ("empty", "scale_by_adam", "scale_by_schedule"),
    "seed_group": ("empty", "scale_by_adam", "scale_by_schedule"),
}
slow = pytest.mark.slow
RUN_KINDS = ["sgd", "adamw", "transfer", *(pytest.param(k, marks=slow) for k in ("nesterov", "adam", "seed_group"))]


@contextlib.contextmanager
def local_data_catalog(data_dir: Path):
    """The data catalog serving the real datasets in SHARED_DATA straight from their local files, each read
    once, with the first TEST_IMAGES test images: the TFDS import and read-back that runs go through
    otherwise (tests/test_tfds_import.py) take about 25 s per dataset on a 2-core CPU, and evaluating
    10,000 test images at every epoch end as long as the rest of a tiny run; neither is what is tested."""
    cache, real_load = {}, catalog.load

    def load(name, data_dir, search_roots, log=print):
        folder = catalog.find_local(name, [SHARED_DATA])
        if folder is None:
            return real_load(name, data_dir, search_roots, log=log)
        if name not in cache:
            known = catalog.KNOWN.get(name)
            dataset = read_local(name, folder, known.class_names if known else ())
            catalog.verify(dataset)
            test = dataset.splits["test"]
            dataset = dataclasses.replace(
                dataset, splits={**dataset.splits, "test": Split(test.images[:TEST_IMAGES], test.labels[:TEST_IMAGES])}
            )
            cache[name] = catalog.LoadedDataset(
                dataset, f"local files {folder} (tests)", tfds_store.split_fingerprints(dataset)
            )
        return cache[name]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(catalog, "load", load)
        yield DataPaths(data_dir, ())


def need_data(name: str) -> None:
    """Skip, saying what is missing, unless SHARED_DATA holds dataset `name`."""
    if catalog.find_local(name, [SHARED_DATA]) is None:
        shared(catalog.KNOWN[name].local_dirnames[0] if name in catalog.KNOWN else name)


def model_flags(config, with_name: bool = False) -> list[str]:
    """--config.model.FIELD=VALUE for the model fields a config changes from the defaults (its name only
    `with_name`: `summary` takes it as an argument)."""
    defaults = config_lib.default_config().model
    return [
        f"--config.model.{key}={value}"
        for key, value in config.model.items()
        if value != defaults.get(key) and (with_name or key != "name")
    ]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `cnn-jax ARGS`, checked to hold no traceback."""
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "internal error" not in err, err
    return code, out, err


@pytest.fixture(scope="module")
def data_paths(tmp_path_factory):
    need_data("fashion_mnist")
    with local_data_catalog(tmp_path_factory.mktemp("data")) as paths:
        yield paths


def quietly(argv: list[str]) -> int:
    """`cnn-jax ARGV` with its printing kept out of the output of the test that first asks for a run kind."""
    with contextlib.redirect_stdout(io.StringIO()):
        return cli.main(argv)


class RunKinds:
    """The run kinds in one runs root, each trained the first time a test asks for it."""

    def __init__(self, root: Path, paths: DataPaths):
        self.experiment, self.runs_root, self.root = root / "verbs.py", root / "runs", root
        self.experiment.write_text(textwrap.dedent(EXPERIMENT))
        self.data = ["--data-dir", str(paths.data_dir)]
        self.plans: dict[str, Plan] = {}

    def sweep(self, preset: str) -> Plan:
        """The plan of the sweep `preset`, all of its runs trained (two seeds in one program for 'seeds')."""
        if preset not in self.plans:
            plan = load_plan(f"{self.experiment}:{preset}")
            plan.write_record(self.runs_root, "tests/test_verbs.py")
            size = len(plan.runs) if preset == "seeds" else 1
            for group in plan.seed_groups(size):
                assert (
                    quietly(
                        [
                            "run-task",
                            plan.spec,
                            "--index",
                            str(group[0].index),
                            "--vmap-seeds",
                            str(size),
                            "--runs-root",
                            str(self.runs_root),
                            *self.data,
                        ]
                    )
                    == 0
                )
            self.plans[preset] = plan
        return self.plans[preset]

    def __getitem__(self, kind: str) -> Path:
        if kind == "transfer":
            return self._transfer()
        preset = next(p for p, kinds in SWEEPS.items() if kind in kinds)
        plan = self.sweep(preset)
        run = plan.runs[-1] if kind == "seed_group" else next(r for r in plan.runs if r.levels["kind"] == kind)
        return plan.run_dir(self.runs_root, run)

    def _transfer(self) -> Path:
        """`train` from the sgd run: its dense head replaced and trained anew, one other layer fine-tuned at a
        tenth of the rate, the rest frozen (paths found from the saved params, whatever the model calls them)."""
        run_dir = self.root / "transfer"
        if not (run_dir / rundir.RESULT).exists():
            source = self["sgd"]
            params = flatten(load_model(source)[1]["params"])
            modules = list(dict.fromkeys(key.rsplit("/", 1)[0] for key in params))
            head = next(m for m in reversed(modules) if np.ndim(params.get(f"{m}/kernel")) == 2)
            tuned = next(m for m in modules if m != head)
            assert (
                quietly(
                    [
                        "train",
                        str(self.experiment),
                        "--workdir",
                        str(run_dir),
                        "--no-progress",
                        *self.data,
                        *model_flags(rundir.load_config(source), with_name=True),
                        f"--config.transfer.source={source}",
                        f"--config.transfer.skip=('{head}/*',)",
                        f"--config.transfer.trainable=('{head}/*', '{tuned}/*')",
                        "--config.transfer.backbone_lr_scale=0.1",
                    ]
                )
                == 0
            )
        return run_dir


@pytest.fixture(scope="module")
def kinds(tmp_path_factory, data_paths):
    return RunKinds(tmp_path_factory.mktemp("verbs"), data_paths)


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_run_kind_is_what_it_claims(kind, kinds):
    run = kinds[kind]
    config, manifest = rundir.load_config(run), json.loads((run / rundir.MANIFEST).read_text())
    assert rundir.read_result(run)["steps"] == STEPS[-1]
    assert bool(load_model(run)[1].get("batch_stats")) == config.model.get("batch_norm", False)
    assert manifest.get("seed_group") == ([0, 1] if kind == "seed_group" else None)
    assert (manifest["transfer"] is None) == (not config.transfer.source)


# ----------------------------------------------------------------------------- inspect


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_inspect_names_every_optimizer_state(kind, kinds, capsys):
    run = kinds[kind]
    code, out, _ = run_cli(capsys, "inspect", run)
    section = out[out.index(f"optimizer state ({rundir.load_config(run).optimizer.name})") :]
    assert code == 0 and "saved steps" in out and "tensors" in out
    for transform in TRANSFORMS[kind]:
        assert transform in section, (transform, section)
    assert "state with fields" not in section and "bare leaf" not in section  # every state was recognized


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_inspect_json_accounts_for_every_optimizer_array(kind, kinds, capsys):
    run = kinds[kind]
    code, out, _ = run_cli(capsys, "inspect", run, "--json")
    report = json.loads(out)
    assert code == 0 and [s["step"] for s in report["steps"]] == list(STEPS) and report["step"] == STEPS[-1]
    optimizer = report["optimizer"]
    fields = [f for s in optimizer["states"] for f in s["fields"].values()]
    counts = [f["value"] for f in fields if "value" in f]
    assert counts and set(counts) == {STEPS[-1]}  # every step count (schedule, adam) saw the 4 updates
    assert sum(f.get("elements", 1) for f in fields) == optimizer["elements"] >= len(counts)
    assert sum(f.get("arrays", 1) for f in fields) == optimizer["arrays"]


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_inspect_diff_with_itself_is_identical_and_with_another_step_is_not(kind, kinds, capsys):
    run = kinds[kind]
    code, out, _ = run_cli(capsys, "inspect", run, "--diff", run)
    assert code == 0 and "identical" in out.splitlines()[-1]
    code, out, _ = run_cli(
        capsys, "inspect", run, "--step", STEPS[0], "--diff", run / "checkpoints" / str(STEPS[-1]), "--json"
    )
    diff = json.loads(out)["diff"]
    assert code == 0 and not diff["identical"] and diff["max_abs_diff"] > 0 and not diff["shape_differs"]


@pytest.mark.parametrize("kind", RUN_KINDS)
@pytest.mark.parametrize("step", ["best", "latest", *map(str, STEPS)])
def test_inspect_each_step(kind, kinds, step, capsys):
    run = kinds[kind]
    code, out, _ = run_cli(capsys, "inspect", run, "--step", step, "--json")
    assert code == 0 and json.loads(out)["step"] == (int(step) if step.isdigit() else STEPS[-1])
    code, out, _ = run_cli(capsys, "inspect", run / "checkpoints" / str(STEPS[0]))
    assert code == 0 and f"step {STEPS[0]}: variables by module" in out


# ----------------------------------------------------------------------------- verbs that load the model


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_eval_reproduces_the_final_metrics(kind, kinds, data_paths, capsys):
    run = kinds[kind]
    code, out, _ = run_cli(capsys, "eval", run, "--checkpoint", "latest", "--data-dir", data_paths.data_dir)
    metrics = json.loads(out)
    final = rundir.read_result(run)["final"]
    assert code == 0 and metrics["checkpoint_step"] == STEPS[-1]
    assert metrics["test_accuracy"] == pytest.approx(final["test_accuracy"], abs=1e-6)
    assert metrics["test_loss"] == pytest.approx(final["test_loss"], rel=1e-5)


@pytest.mark.parametrize("kind", RUN_KINDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_export_holds_the_checkpoint_variables(kind, kinds, fmt, tmp_path, capsys):
    run = kinds[kind]
    out_file = tmp_path / f"model.{fmt}"
    code, out, err = run_cli(capsys, "export", run, "--format", fmt, "--out", out_file)
    if fmt == "safetensors" and importlib.util.find_spec("safetensors") is None:
        assert code == 2 and err.startswith("error: ") and "pip install safetensors" in err
        return
    assert code == 0 and out_file.exists() and json.loads(Path(f"{out_file}.json").read_text())["step"] == STEPS[-1]
    variables = flatten(load_model(run)[1])
    exported = flatten(read_export(out_file))
    assert exported.keys() == variables.keys()
    for key, value in variables.items():
        np.testing.assert_array_equal(exported[key], np.asarray(value))


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_plot_filters_draws_the_first_conv_layer(kind, kinds, tmp_path, capsys):
    run = kinds[kind]
    code, out, _ = run_cli(capsys, "plot-filters", run, "--out", tmp_path / "filters.png")
    assert code == 0 and "grid" in out and Image.open(tmp_path / "filters.png").size > (10, 10)


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_plot_features_of_an_image_file_and_of_a_test_image(kind, kinds, data_paths, tmp_path, capsys):
    run = kinds[kind]
    image = tmp_path / "input.png"
    Image.fromarray(np.linspace(0, 255, 40 * 36 * 3).astype(np.uint8).reshape(40, 36, 3)).save(image)
    code, out, _ = run_cli(capsys, "plot-features", run, image, "--out", tmp_path / "a.png")
    assert code == 0 and "predicted" in out and (tmp_path / "a.png").exists()
    code, out, _ = run_cli(
        capsys,
        "plot-features",
        run,
        "--test-index",
        "3",
        "--step",
        "latest",
        "--out",
        tmp_path / "b.png",
        "--data-dir",
        data_paths.data_dir,
    )
    assert code == 0 and "predicted" in out and (tmp_path / "b.png").exists()


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_load_model_and_data_info(kind, kinds):
    run = kinds[kind]
    info = data_info(run)
    model, variables = load_model(run, "latest")
    assert info.name == "fashion_mnist" and len(info.classes) == 10 and info.image_shape == (28, 28, 1)
    logits = model.apply(variables, info.preprocess(np.zeros((2, *info.image_shape), np.uint8)), train=False)
    assert np.shape(logits) == (2, 10) and np.all(np.isfinite(logits))


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_summary_of_the_run_model_counts_what_the_checkpoint_holds(kind, kinds, capsys):
    run = kinds[kind]
    config = rundir.load_config(run)
    code, out, _ = run_cli(capsys, "summary", config.model.name, "--input", "28x28x1", "--json", *model_flags(config))
    summary = json.loads(out)
    totals = json.loads(run_cli(capsys, "inspect", run, "--json")[1])["totals"]
    assert code == 0 and (summary["trainable_params"], summary["total_params"]) == (totals["params"], totals["total"])


# ----------------------------------------------------------------------------- sweeps made of these runs


@pytest.mark.filterwarnings("error::UserWarning")  # e.g. matplotlib: a legend without labels
@pytest.mark.parametrize("preset", ["kinds", pytest.param("more", marks=slow), pytest.param("seeds", marks=slow)])
def test_status_and_report_of_a_sweep(kinds, preset, tmp_path, capsys):
    runs = len(kinds.sweep(preset).runs)
    code, out, _ = run_cli(capsys, "status", kinds.experiment, preset, "--runs-root", kinds.runs_root)
    assert code == 0 and f"{runs} runs: {runs} done" in out
    code, out, _ = run_cli(capsys, "report", kinds.runs_root / "verbs", "--preset", preset, "--out", tmp_path)
    assert code == 0 and f"{runs} of {runs} runs finished" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert all((tmp_path / name).exists() for name in report["files"])
    assert sum(v["finished"] for v in report["variants"]) == runs and all(v["variant"] for v in report["variants"])


# ----------------------------------------------------------------------------- the shipped experiments


def shipped_presets() -> list:
    """(file, preset) of every experiments/*.py but the helpers (_name.py), read at collection; a file that
    does not load gets one entry whose test fails with the reason."""
    params = []
    for path in sorted(p for p in (ROOT / "experiments").glob("*.py") if not p.name.startswith("_")):
        try:
            module, _, _ = config_lib.open_experiment(str(path))
            presets = tuple(getattr(module, "PRESETS", ("default",)))
        except UserError:
            presets = ("",)
        params += [
            pytest.param(f"{path}:{preset}" if preset else str(path), id=f"{path.stem}:{preset}") for preset in presets
        ]
    return params


def distinct_first_runs(params: list) -> list:
    """The presets whose first trainable run differs from every earlier preset's in more than rate, seed and
    experiment name (allcnn/resnet `paper` is `full` at a fixed rate: training it again tests nothing new),
    leaving out ImageNet-sized models (published for 224x224 inputs: VGG16's 138M parameters make even two
    steps and their checkpoints minutes of a CPU); test_preset_validates_and_builds_its_models covers those."""
    kept, seen = [], set()
    for param in params:
        try:
            config = next(
                c for c in preset_configs(param.values[0]) if not c.transfer.source
            ).copy_and_resolve_references()
            config.optimizer.lr, config.experiment, config.seed = 0.0, "", 0
            key = config_lib.to_json(config)
            if model_entry(config.model.name).input_shape[0] >= 224:
                continue
        except (UserError, StopIteration):
            key = param.id  # a file that does not load: its test fails with the reason
        if key not in seen:
            kept.append(param)
            seen.add(key)
    return kept


def preset_configs(spec: str) -> list:
    """Every run's config of an experiment preset: the runs of its sweep, or its one config."""
    return [run.config for run in load_plan(spec).runs] if has_sweep(spec) else [config_lib.load_experiment(spec)]


def input_of(config) -> tuple[str, int]:
    """The input shape HxWxC and number of classes of the config's dataset (a known one)."""
    if config.dataset.name in catalog.KNOWN_FOLDERS:  # images of varied sizes, made image_size square
        size = config.dataset.image_size
        return f"{size}x{size}x3", catalog.KNOWN_FOLDERS[config.dataset.name][0]
    known = catalog.KNOWN[config.dataset.name]
    if config.dataset.image_size:
        return f"{config.dataset.image_size}x{config.dataset.image_size}x{known.image_shape[2]}", len(
            known.class_counts["train"]
        )
    return "x".join(map(str, known.image_shape)), len(known.class_counts["train"])


SUMMARIZED: set[str] = set()  # model configs already built by an earlier preset (cpu and full share many)


@pytest.mark.parametrize("spec", shipped_presets())
def test_preset_validates_and_builds_its_models(spec, capsys):
    configs = preset_configs(spec)
    for config in configs:
        validation.validate(config)
        source = config.transfer.source
        if source.split(":")[0].endswith(".py"):
            assert config_lib.load_experiment(str(ROOT / source)).dataset.name, source
    for config in configs:
        shape, classes = input_of(config)
        args = ["summary", config.model.name, "--input", shape, "--num-classes", classes, *model_flags(config)]
        if " ".join(map(str, args)) not in SUMMARIZED:
            code, out, _ = run_cli(capsys, *args)
            assert code == 0 and "total params" in out
            SUMMARIZED.add(" ".join(map(str, args)))


def cut_down(config) -> dict[str, object]:
    """Overrides that make a preset's run two epochs of one step of 25 images, evaluated on 100 examples of each
    split (two epochs, so that a sweep level's warm-up of one epoch stays valid: a sweep's own fields cannot be
    overridden)."""
    cut = {
        "dataset.train_subset": 25,
        "dataset.eval_subset": 100,
        "train.batch_size": 25,
        "train.epochs": 2,
        "train.eval_batch_size": 500,
        "train.log_every_steps": 1,
        "checkpoint.every_steps": 1,
    }
    return {**cut, **({"schedule.warmup_epochs": 1.0} if config.schedule.warmup_epochs >= 2 else {})}


@slow
@pytest.mark.parametrize("spec", distinct_first_runs(shipped_presets()))
def test_preset_trains_two_steps_and_reads_back(spec, data_paths, tmp_path, capsys):
    """The preset's first run without a transfer source (`run-task` of its sweep, or `train`), cut to two steps."""
    index, config = next((i, c) for i, c in enumerate(preset_configs(spec)) if not c.transfer.source)
    need_data(config.dataset.name)
    overrides = cut_down(config)
    flags = [f"--config.{key}={value}" for key, value in overrides.items()]
    if has_sweep(spec):
        plan = load_plan(spec, {key: str(value) for key, value in overrides.items()})
        run = plan.run_dir(tmp_path, plan.runs[index])
        args = ["run-task", spec, "--index", index, "--runs-root", tmp_path]
    else:
        run, args = tmp_path / "run", ["train", spec, "--workdir", tmp_path / "run", "--no-progress"]
    assert run_cli(capsys, *args, *flags, "--data-dir", data_paths.data_dir)[0] == 0
    assert rundir.read_result(run)["steps"] == 2
    for extra in ([], ["--json"], ["--step", "1", "--diff", run]):
        assert run_cli(capsys, "inspect", run, *extra)[0] == 0
    assert run_cli(capsys, "export", run, "--out", tmp_path / "model.npz")[0] == 0
    assert flatten(read_export(tmp_path / "model.npz")).keys() == flatten(load_model(run)[1]).keys()


# ----------------------------------------------------------------------------- the ImageNet-weights experiment

IMAGENET_TRANSFER = f"{ROOT / 'experiments' / 'transfer_imagenet_vgg16.py'}:cpu"


def test_the_imagenet_transfer_experiment_stops_first_when_the_weights_file_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNN_JAX_VGG16_WEIGHTS", "vgg16-397923af.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    code, _, err = run_cli(capsys, "sweep", IMAGENET_TRANSFER, "--runs-root", tmp_path / "runs")
    assert code == 2 and err.count("\n") == 1
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in err
    assert not (tmp_path / "runs").exists()


@slow
def test_the_imagenet_transfer_experiment_runs_from_a_weights_file(data_paths, tmp_path, capsys, monkeypatch):
    """CI holds no ImageNet weights: a randomly initialized torchvision-layout VGG16 file takes their place,
    and the features and last-block variants each train two steps from it."""
    torch = pytest.importorskip("torch")
    import torch_reference

    need_data("cifar10")
    torch.manual_seed(0)
    weights = tmp_path / "vgg16-random.pth"
    torch.save(torch_reference.randomized(torch_reference.build("vgg16")).state_dict(), weights)
    monkeypatch.setenv("CNN_JAX_VGG16_WEIGHTS", str(weights))
    overrides = cut_down(config_lib.load_experiment(IMAGENET_TRANSFER))
    plan = load_plan(IMAGENET_TRANSFER, {key: str(value) for key, value in overrides.items()})
    flags = [f"--config.{key}={value}" for key, value in overrides.items()]
    file_kernel = torch.load(weights, weights_only=True)["features.28.weight"].numpy().transpose(2, 3, 1, 0)
    for variant in ("init=features", "init=last_block"):
        index, run = next((i, r) for i, r in enumerate(plan.runs) if r.variant == variant and r.seed == 0)
        args = ["run-task", IMAGENET_TRANSFER, "--index", index, "--runs-root", tmp_path]
        assert run_cli(capsys, *args, *flags, "--data-dir", data_paths.data_dir)[0] == 0
        run_dir = plan.run_dir(tmp_path, run)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["transfer"]["weights"]["file"] == str(weights)
        assert manifest["data"]["normalization"]["mean"] == [0.485, 0.456, 0.406]
        last_conv = load_model(run_dir, "latest")[1]["params"]["stage5"]["ConvUnit_2"]["Conv_0"]["kernel"]
        frozen = variant == "init=features"
        assert np.array_equal(np.asarray(last_conv), file_kernel) == frozen, variant
        assert manifest["data"].get("feature_cache", {}).get("used", False) == frozen
