"""The one config object: schema with defaults, experiment-file loading, overrides, validation.

A config is an `ml_collections.ConfigDict` whose keys and types are fixed by
`default_config()`. Experiment files start from it and change values; the command
line changes values with `--config.section.field=value`. The model section is open:
`model.name` and the keyword arguments of that model, which this module does not know;
`cnn_jax.validation` checks them against the model's own fields.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import ml_collections

from cnn_jax.errors import UserError, did_you_mean, unknown_choice

MODEL_SECTION = "model."  # open section: model.name plus the chosen model's own fields
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")
LOSSES = ("cross_entropy", "mse")
BEST_MODES = ("max", "min")
SPLIT_METRICS = ("accuracy", "loss", "top5")  # logged per evaluated split as val_<m> and test_<m>
VALIDATION_METRICS = tuple(f"val_{m}" for m in SPLIT_METRICS)  # what may select a checkpoint or a setting
COMPUTE_DTYPES = ("float32", "bfloat16")
NORMALIZATIONS = ("auto", "dataset", "source")
FROZEN_BATCH_NORMS = ("inference", "batch")
FROZEN_ONLY = ("transfer.frozen_batch_norm", "transfer.feature_cache")  # see run_id
DATA_SOURCES = ("auto", "device", "stream")
BAD_IMAGE_POLICIES = ("stop", "skip")
# How the data reaches the step, never what it is: left out of the run id (device and streamed runs of one
# config compute the same numbers; tests/test_streaming.py), and a run may resume under other values.
EXECUTION_FIELDS = ("dataset.source", "dataset.device_budget_mb", "dataset.workers")
# Fields added after run ids were last changed, with their defaults: at the default they are left out of the
# run id, so adding them kept every existing run's id (each default computes what runs did before it existed).
LATER_FIELDS = {
    "dataset.resize": 0,
    "dataset.center_crop": 0,
    "dataset.grey_to_rgb": False,
    "transfer.source_model": "",
    "transfer.normalization": "auto",
    "transfer.frozen_batch_norm": "inference",
    "transfer.feature_cache": True,
    "dataset.image_size": 0,
    "dataset.bad_images": "stop",
    "dataset.augment.random_resized_crop": False,
    "dataset.augment.rotation": 0.0,
    "dataset.augment.greyscale": 0.0,
}


def default_config() -> ml_collections.ConfigDict:
    """Every field a run has, with defaults that work on a laptop CPU."""
    c = ml_collections.ConfigDict()
    c.experiment = "default"
    c.seed = 0

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "fashion_mnist"
    # held out of the train split, class-stratified, the same for every run with this seed: what selects
    # checkpoints and tuned settings (never the test split); 0 turns it off
    c.dataset.validation_fraction = 0.1
    c.dataset.validation_seed = 0
    c.dataset.train_subset = 0  # >0: train on N class-balanced examples of the rest, the same for every seed
    # >0: evaluate validation and test on N class-balanced examples each, for quick checks only (the report
    # flags such runs: their test numbers are not the test set's)
    c.dataset.eval_subset = 0
    # the model's input, made from the stored images in jit (cnn_jax/data/preprocess.py): resize to S x S (0: as
    # stored), then keep the central C x C (0: all), and repeat a grey channel three times
    c.dataset.resize = 0
    c.dataset.center_crop = 0
    c.dataset.grey_to_rgb = False
    # device: the uint8 splits live on the accelerator (fast; they must fit) | stream: read and decoded on the
    # host, batch by batch (data/loader.py) | auto: device when the images have one size and the arrays fit in
    # device_budget_mb, else stream. The same numbers either way.
    c.dataset.source = "auto"
    c.dataset.device_budget_mb = 4096.0
    c.dataset.workers = 0  # streamed data: grain worker processes decoding images (0: threads of the run's process)
    # streamed data, ImageNet's recipe on the host (data/loader.py HostTransform): > 0 makes every image
    # S x S (evaluation: shorter side to S / 0.875, central crop); needed when image sizes vary
    c.dataset.image_size = 0
    c.dataset.bad_images = "stop"  # streamed data, an undecodable image: stop | skip (replaced and counted)
    c.dataset.augment = ml_collections.ConfigDict()
    c.dataset.augment.random_crop_padding = 0  # zero-pad P pixels, crop back (He et al. 2015)
    c.dataset.augment.translate = 0  # shift up to T pixels, reflect-filled (Keras RandomTranslation)
    c.dataset.augment.horizontal_flip = False
    c.dataset.augment.random_resized_crop = False  # with dataset.image_size: the crop of Szegedy et al. 2015
    c.dataset.augment.rotation = 0.0  # rotate by up to R degrees, reflect-filled (Keras RandomRotation)
    c.dataset.augment.greyscale = 0.0  # convert to grey with this probability (torchvision RandomGrayscale)

    c.model = ml_collections.ConfigDict()
    c.model.name = "seed_cnn"  # every other model.* key is a field of that model: `cnn-jax models NAME`

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"
    c.optimizer.lr = 3e-3
    c.optimizer.momentum = 0.9  # SGD only
    c.optimizer.nesterov = False  # SGD only
    c.optimizer.weight_decay = 0.0  # coupled L2 for sgd/adam, decoupled for adamw
    c.optimizer.grad_clip_norm = 0.0  # 0 disables clipping

    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "cosine"
    c.schedule.warmup_epochs = 0.0
    c.schedule.boundaries_epochs = (30.0, 60.0, 80.0)  # step schedule only
    c.schedule.decay_factor = 0.1  # step schedule only

    c.loss = ml_collections.ConfigDict()
    c.loss.name = "cross_entropy"
    c.loss.label_smoothing = 0.0
    c.loss.aux_weight = 0.3  # weight of each auxiliary classifier's loss (GoogLeNet; Szegedy et al. 2014)

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 6
    c.train.batch_size = 128
    c.train.eval_batch_size = 1000
    c.train.log_every_steps = 20
    c.train.skip_nonfinite_updates = False  # True: a step with a non-finite loss or gradient changes nothing (counted)
    # float32 | bfloat16: dtype of activations and of the parameter copies used in the forward/backward pass;
    # parameters, optimizer state, batch-norm statistics and the loss stay float32
    c.train.compute_dtype = "float32"

    c.transfer = ml_collections.ConfigDict()  # see cnn_jax/train/transfer.py
    # a finished run to start from: its directory, or the experiment FILE.py[:preset] that made it; or a
    # pretrained weights file (.pth, .safetensors, .h5: torchvision or Keras, cnn_jax/weights/) for model.name
    c.transfer.source = ""
    c.transfer.checkpoint = "best"  # best (by the source's checkpoint.best_metric) | latest | a step
    c.transfer.load = ("*",)  # patterns of parameter / batch-norm paths copied from the source ...
    c.transfer.skip = ()  # ... except these (e.g. the head: "dense/*"), which start from a fresh init
    c.transfer.trainable = ("*",)  # patterns of what the optimizer updates; the rest stays bitwise frozen
    c.transfer.backbone_lr_scale = 1.0  # learning-rate factor of trainable parameters copied from the source
    c.transfer.adapt_input = "none"  # none | grey_to_rgb | rgb_to_grey: first conv's input channels
    # the zoo model a weights file is for, when it is not model.name (e.g. vgg16 weights into vgg16_cifar,
    # with transfer.load = ('stage*',)); '' = model.name
    c.transfer.source_model = ""
    # auto: the pretrained weights' own input normalization for a weights file (or a run imported from one),
    # the train split's statistics otherwise | dataset: always the train split's | source: the source's
    c.transfer.normalization = "auto"
    # a batch-norm layer whose scale and bias are frozen: 'inference' normalizes with its stored statistics
    # while the rest trains (Keras' behaviour); 'batch' with each batch's statistics, as in training mode
    c.transfer.frozen_batch_norm = "inference"
    # with only the head training on a frozen backbone (and no augmentation or dropout before it), compute the
    # backbone's features once, cached in runs/<experiment>/.feature_cache, and train the head on them
    c.transfer.feature_cache = True

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 500
    c.checkpoint.keep = 2
    c.checkpoint.best_metric = "val_accuracy"  # a validation metric: the test split never selects
    c.checkpoint.best_mode = "max"
    return c


# ----------------------------------------------------------------------------- loading


def load_experiment(spec: str) -> ml_collections.ConfigDict:
    """Load `path/to/file.py[:preset]`: calls the file's `get_config(preset)`."""
    module, path, preset = open_experiment(spec)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise UserError(f"experiment file '{path}' defines no get_config(preset) function.")
    config = call_experiment(path, get_config, preset)
    check_schema(config)
    if config.experiment == "default":
        config.experiment = path.stem
    return config


def open_experiment(spec: str) -> tuple[Any, Path, str]:
    """Import the experiment file of `path/to/file.py[:preset]`; returns (module, path, checked preset)."""
    path_str, _, preset = spec.partition(":")
    path = Path(path_str)
    if not path.is_file():
        raise UserError(f"experiment file '{path}' does not exist. Give a path like experiments/fashion_mnist_cnn.py.")
    module = load_module(path)
    presets = tuple(getattr(module, "PRESETS", ("default",)))
    preset = preset or presets[0]
    if preset not in presets:
        raise unknown_choice(f"preset of {path}", preset, presets)
    return module, path, preset


def call_experiment(path: Path, function, preset: str) -> Any:
    """Call a function of an experiment file; its exceptions are user errors, not tracebacks."""
    try:
        return function(preset)
    except UserError:
        raise
    except Exception as exc:  # an experiment file is user code: report, don't trace back
        raise UserError(
            f"experiment file '{path}' raised in {function.__name__}('{preset}'): {type(exc).__name__}: {exc}"
        ) from exc


def load_module(path: Path):
    """Import a Python file by its path (experiment files, and the files they build on: experiments/ is
    not a package); a failure is a UserError naming the file."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"cnn_jax_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise UserError(f"experiment file '{path}' failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def check_schema(config: Any, schema: ml_collections.ConfigDict | None = None, prefix: str = "") -> None:
    """Fail on keys the schema does not know or values of the wrong type."""
    schema = default_config() if schema is None else schema
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(f"get_config() must return an ml_collections.ConfigDict, got {type(config).__name__}.")
    for key in config.keys():
        field = prefix + key
        if field.startswith(MODEL_SECTION) and field != "model.name":
            continue  # a field of the chosen model, checked against it by cnn_jax.validation
        if key not in schema:
            raise UserError(
                f"unknown config field '{field}'.{did_you_mean(field, [prefix + k for k in schema.keys()])}"
            )
        value, expected = config[key], schema[key]
        if isinstance(expected, ml_collections.ConfigDict):
            check_schema(value, expected, field + ".")
        elif not _same_kind(value, expected):
            raise UserError(
                f"config field '{field}' = {value!r} has type {type(value).__name__}; "
                f"expected {type(expected).__name__}."
            )


def _same_kind(value: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(expected, bool)
    if isinstance(expected, float):
        return isinstance(value, (int, float))
    if isinstance(expected, (tuple, list)):
        return isinstance(value, (tuple, list))
    return isinstance(value, type(expected))


# ----------------------------------------------------------------------------- overrides


def parse_override(arg: str) -> tuple[str, str]:
    """Split `--config.a.b=value` into ('a.b', 'value')."""
    if not arg.startswith("--config.") or "=" not in arg:
        raise UserError(
            f"malformed override '{arg}': write --config.section.field=value, e.g. --config.optimizer.lr=0.05."
        )
    key, _, value = arg[len("--config.") :].partition("=")
    if not key or any(not part.isidentifier() for part in key.split(".")):
        raise UserError(f"malformed override '{arg}': '{key}' is not a dotted field name.")
    return key, value


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """Set dotted fields; string values are parsed by the type of the field they replace."""
    config = ml_collections.ConfigDict(config.to_dict())
    for dotted, value in overrides.items():
        if dotted.startswith(MODEL_SECTION) and dotted != "model.name":
            _set_model_field(config, dotted, value)
            continue
        *parents, leaf = dotted.split(".")
        node, path = config, ""
        for part in parents + [leaf]:
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                keys = [path + k for k in node.keys()] if isinstance(node, ml_collections.ConfigDict) else []
                raise UserError(f"unknown config field '{path + part}'.{did_you_mean(path + part, keys)}")
            if part != leaf:
                node, path = node[part], path + part + "."
        current = node[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            raise UserError(
                f"config field '{dotted}' is a section; set one of its fields: {', '.join(current.keys())}."
            )
        new = parse_value(dotted, value, current) if isinstance(value, str) else value
        if not _same_kind(new, current):
            raise UserError(f"config field '{dotted}' expects {type(current).__name__}, got {value!r}.")
        node[leaf] = float(new) if isinstance(current, float) else new
    return config


def _set_model_field(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
    """Set a field of the model section as given: its type is the model's, so `cnn_jax.validation` reads
    command-line text by the type of the model's field and checks it."""
    key = dotted[len(MODEL_SECTION) :]
    if "." in key:
        raise UserError(
            f"unknown config field '{dotted}': model fields are not nested; write --config.model.FIELD=VALUE."
        )
    if key in config.model:
        del config.model[key]  # a new value may have another type (e.g. 0.3 for an int 0)
    config.model[key] = tuple(value) if isinstance(value, list) else value


def parse_value(field: str, text: str, current: Any) -> Any:
    """Parse a command-line string to the type of the field's current value."""
    try:
        if isinstance(current, bool):
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, (tuple, list)):
            if all(isinstance(v, str) for v in current):  # names and patterns: "a,b" is accepted too
                try:
                    value = ast.literal_eval(text) if text.strip() else ()
                except (ValueError, SyntaxError):
                    value = tuple(part.strip() for part in text.split(",") if part.strip())
            else:
                value = ast.literal_eval(text) if text.strip() else ()
            return tuple(value) if isinstance(value, (tuple, list)) else (value,)
        return text
    except (ValueError, SyntaxError):
        raise UserError(
            f"--config.{field}={text}: expected {type(current).__name__} (current value {current!r})."
        ) from None


# ----------------------------------------------------------------------------- validation


def validate_fields(config: ml_collections.ConfigDict) -> None:
    """Reject impossible values of every field but the model's (see `cnn_jax.validation.validate`)."""
    check_schema(config)
    _choice("optimizer.name", config.optimizer.name, OPTIMIZERS)
    _choice("schedule.name", config.schedule.name, SCHEDULES)
    _choice("loss.name", config.loss.name, LOSSES)
    _choice("checkpoint.best_metric", config.checkpoint.best_metric, VALIDATION_METRICS)
    _choice("checkpoint.best_mode", config.checkpoint.best_mode, BEST_MODES)
    _choice("train.compute_dtype", config.train.compute_dtype, COMPUTE_DTYPES)
    _choice("dataset.source", config.dataset.source, DATA_SOURCES)
    _choice("dataset.bad_images", config.dataset.bad_images, BAD_IMAGE_POLICIES)
    _positive("dataset.device_budget_mb", config.dataset.device_budget_mb)
    _positive("optimizer.lr", config.optimizer.lr)
    for field in (
        "train.epochs",
        "train.batch_size",
        "train.eval_batch_size",
        "train.log_every_steps",
        "checkpoint.every_steps",
        "checkpoint.keep",
    ):
        _positive(field, _get(config, field))
    if not 0.0 <= config.dataset.augment.greyscale <= 1.0:
        raise UserError(
            f"config field 'dataset.augment.greyscale' = {config.dataset.augment.greyscale}: a probability."
        )
    if config.dataset.augment.random_resized_crop and not config.dataset.image_size:
        raise UserError(
            "config field 'dataset.augment.random_resized_crop' needs dataset.image_size (the crop's output side)."
        )
    for field in ("optimizer.momentum", "loss.label_smoothing", "dataset.validation_fraction"):
        value = _get(config, field)
        if not 0.0 <= value < 1.0:
            raise UserError(f"config field '{field}' = {value}: must be in [0, 1).")
    for field in (
        "optimizer.weight_decay",
        "optimizer.grad_clip_norm",
        "schedule.warmup_epochs",
        "dataset.train_subset",
        "dataset.eval_subset",
        "dataset.resize",
        "dataset.center_crop",
        "loss.aux_weight",
        "dataset.augment.random_crop_padding",
        "dataset.augment.translate",
        "dataset.augment.rotation",
        "dataset.workers",
        "dataset.image_size",
    ):
        value = _get(config, field)
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"config field '{field}' = {value}: must be >= 0.")
    if config.schedule.warmup_epochs >= config.train.epochs:
        raise UserError(
            f"config field 'schedule.warmup_epochs' = {config.schedule.warmup_epochs}: "
            f"must be smaller than train.epochs = {config.train.epochs}."
        )
    if not 0.0 < config.schedule.decay_factor <= 1.0:
        raise UserError(f"config field 'schedule.decay_factor' = {config.schedule.decay_factor}: must be in (0, 1].")
    _choice("transfer.adapt_input", config.transfer.adapt_input, ("none", "grey_to_rgb", "rgb_to_grey"))
    _choice("transfer.normalization", config.transfer.normalization, NORMALIZATIONS)
    _choice("transfer.frozen_batch_norm", config.transfer.frozen_batch_norm, FROZEN_BATCH_NORMS)
    _positive("transfer.backbone_lr_scale", config.transfer.backbone_lr_scale)
    if config.dataset.resize and config.dataset.center_crop > config.dataset.resize:
        raise UserError(
            f"config field 'dataset.center_crop' = {config.dataset.center_crop} is larger than dataset.resize = "
            f"{config.dataset.resize}; crop at most what the resize gives."
        )
    if not config.transfer.trainable:
        raise UserError(
            "config field 'transfer.trainable' is empty: nothing would train; give patterns such as ('dense/*',)."
        )
    checkpoint = config.transfer.checkpoint
    if checkpoint not in ("best", "latest") and not checkpoint.isdigit():
        raise UserError(f"config field 'transfer.checkpoint' = {checkpoint!r}: use 'best', 'latest' or a step number.")
    if not config.experiment or "/" in config.experiment:
        raise UserError(f"config field 'experiment' = {config.experiment!r}: must be a non-empty name without '/'.")


def validate_against_data(config: ml_collections.ConfigDict, train_size: int) -> None:
    """Checks that need the size of the train split (after the validation examples are held out)."""
    held = " after holding out validation" if config.dataset.validation_fraction else ""
    if config.dataset.train_subset > train_size:
        raise UserError(
            f"config field 'dataset.train_subset' = {config.dataset.train_subset} is larger than the train split "
            f"of '{config.dataset.name}' ({train_size} examples{held})."
        )
    train_size = config.dataset.train_subset or train_size
    if config.train.batch_size > train_size:
        raise UserError(
            f"config field 'train.batch_size' = {config.train.batch_size} is larger than the train split "
            f"of '{config.dataset.name}' ({train_size} examples{held}); use at most {train_size}."
        )


def _choice(field: str, value: str, allowed) -> None:
    if value not in allowed:
        raise unknown_choice(f"config field '{field}'", value, allowed)


def _positive(field: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"config field '{field}' = {value}: must be > 0.")


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


# ----------------------------------------------------------------------------- identity


def to_json(config: ml_collections.ConfigDict) -> str:
    """Canonical JSON text of a config (sorted keys, tuples as lists)."""
    return json.dumps(config.to_dict(), sort_keys=True, indent=2)


def from_json(text: str) -> ml_collections.ConfigDict:
    """Inverse of `to_json`, restoring tuples where the schema has them."""
    return apply_overrides(default_config(), _flatten(json.loads(text)))


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix + key + "."))
        else:
            flat[prefix + key] = tuple(value) if isinstance(value, list) else value
    return flat


def run_id(config: ml_collections.ConfigDict) -> str:
    """Stable 12-hex-digit id of a fully resolved config (`EXECUTION_FIELDS`, and `LATER_FIELDS` at their
    defaults, left out).

    `transfer.frozen_batch_norm` and `transfer.feature_cache` change what a run that freezes parameters
    computes, so they are left out only where nothing is frozen (transfer.trainable = ('*',))."""
    tree = _without(config.to_dict(), EXECUTION_FIELDS)
    frozen = tuple(config.transfer.trainable) != ("*",)
    at_default = [f for f, default in LATER_FIELDS.items() if _get(config, f) == default]
    tree = _without(tree, [f for f in at_default if not (f in FROZEN_ONLY and frozen)])
    return hashlib.sha256(json.dumps(tree, sort_keys=True, indent=2).encode()).hexdigest()[:12]


def _without(tree: dict, fields) -> dict:
    """A copy of the nested dict `tree` without the dotted `fields`."""
    tree = json.loads(json.dumps(tree))
    for field in fields:
        *sections, key = field.split(".")
        node = tree
        for section in sections:
            node = node[section]
        node.pop(key, None)
    return tree


def diff(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict) -> list[str]:
    """Human-readable lines for the fields where two configs differ."""
    fa, fb = _flatten(a.to_dict()), _flatten(b.to_dict())
    return [f"{k}: {fa.get(k)!r} != {fb.get(k)!r}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
