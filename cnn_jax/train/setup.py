"""Everything a run needs before its first step: validated config, data on device, model, optimizer."""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn

from cnn_jax import config as config_lib
from cnn_jax import rundir, validation
from cnn_jax.data import catalog
from cnn_jax.data.arrays import balanced_subset, hold_out
from cnn_jax.data.loader import HostTransform
from cnn_jax.data.pipeline import DeviceSplit, channel_stats, slice_batch, to_device
from cnn_jax.data.preprocess import InputTransform
from cnn_jax.data.streamed import StreamedSplit, test_split_name
from cnn_jax.errors import UserError
from cnn_jax.loading import data_info, load_model
from cnn_jax.models import build_model
from cnn_jax.models.summary import summarize
from cnn_jax.train import feature_cache, streaming, transfer
from cnn_jax.train.devices import DataMesh, data_mesh
from cnn_jax.train.optim import make_optimizer, make_schedule
from cnn_jax.train.state import TrainState, create_train_state
from cnn_jax.train.steps import empty_metrics, empty_totals, make_eval_step, metric_means
from cnn_jax.weights import files as weights_files
from cnn_jax.weights.importer import ImportedWeights, import_weights


@dataclass(frozen=True)
class DataPaths:
    data_dir: Path  # the TFDS data dir
    search_roots: tuple[Path, ...]  # where local copies are looked for


@dataclass(frozen=True)
class RunSetup:
    config: ml_collections.ConfigDict
    data: catalog.LoadedDataset
    model: nn.Module
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    steps_per_epoch: int
    inputs: InputTransform  # stored uint8 images -> the model's input (normalization, resize, ...)
    # on the device, or (streamed: read batch by batch on the host, see train/streaming.py) on disk
    train: DeviceSplit | StreamedSplit
    validation: DeviceSplit | StreamedSplit | None  # held out of the train split; None when validation_fraction = 0
    test: DeviceSplit | StreamedSplit
    validation_record: dict | None  # how the validation split was drawn (see data/arrays.py hold_out)
    model_summary: dict  # params, trainable_params, flops (per image)
    devices: DataMesh  # the batch is split over these; state and data are replicated
    trainable: dict | None  # transfer learning: masks of what trains ({"params": ..., "batch_stats": ...})
    transfer_source: Path | None  # transfer learning: the run (or weights file) whose weights start this one
    imported: ImportedWeights | None  # transfer learning from a pretrained weights file: its arrays
    # what the steps apply to a batch's images: the model and `inputs`, or (feature cache) the head alone
    # to the backbone's stored features; see `with_cached_features`
    step_model: Any = None
    step_inputs: Any = None
    feature_cache: dict | None = None  # manifest record: used or why not, the cache file
    streamed: streaming.StreamedData | None = None  # None: the splits are on the device
    pipeline_reason: str = ""  # why the data is on the device or streamed

    def __post_init__(self):
        if self.step_model is None:
            object.__setattr__(self, "step_model", self.model)
            object.__setattr__(self, "step_inputs", self.inputs)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The model's input (H, W, C): the stored images after `inputs` (resize, crop, grey to RGB)."""
        return self.inputs.output_shape(self.batch_image_shape)

    @property
    def batch_image_shape(self) -> tuple[int, int, int]:
        """The (H, W, C) of a batch's uint8 images: as stored, or as the host transform makes them."""
        return self.streamed.transform.output_shape if self.streamed else self.data.dataset.image_shape

    def fresh_state(self) -> TrainState:
        return create_train_state(self.model, self.tx, self.input_shape, self.config.seed)

    def on_devices(self, payload: Any) -> Any:
        """A state (or checkpoint payload) placed as the train step expects it: on every device."""
        return self.devices.replicate(payload)

    def initial_state(self, log=print) -> TrainState:
        """The state at step 0: a fresh init, with the source run's selected weights copied in."""
        state = self.fresh_state()
        if self.transfer_source is None:
            return state
        if self.imported is not None:
            source, which = self.imported.variables, "pretrained weights"
        else:
            _, source = load_model(self.transfer_source, self.config.transfer.checkpoint)
            which = f"checkpoint {self.config.transfer.checkpoint}"
        variables, copied = transfer.transplant(
            {"params": state.params, "batch_stats": state.batch_stats}, source, self.config, str(self.transfer_source)
        )
        log(
            f"Transfer: {len(copied)} arrays copied from {self.transfer_source} ({which}); "
            f"trainable: {', '.join(self.config.transfer.trainable)}."
        )
        params = variables["params"]
        return state.replace(
            params=params, batch_stats=variables.get("batch_stats", {}), opt_state=self.tx.init(params)
        )

    def with_cached_features(self, state: TrainState, folder: Path, log=print) -> RunSetup:
        """This setup with the head training on cached backbone features where `transfer.feature_cache` and
        train/feature_cache.py allow it (stored in `folder`/.feature_cache, `folder` being the one that holds
        the run directory); else this setup, with the reason in `feature_cache`."""
        if self.transfer_source is None:
            return self
        if self.streamed is not None:
            return replace(self, feature_cache={"used": False, "reason": "the data is streamed"})
        if not self.config.transfer.feature_cache:
            return replace(self, feature_cache={"used": False, "reason": "transfer.feature_cache is false"})
        reason = feature_cache.why_not(self.config, self.model, self.input_shape, self.trainable)
        if reason:
            log(f"Feature cache not used: {reason}.")
            return replace(self, feature_cache={"used": False, "reason": reason})
        head = feature_cache.head_of(self.trainable)
        variables = {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}
        key = feature_cache.cache_key(
            {
                "model": self.config.model.to_dict(),
                "backbone": feature_cache.variables_digest(variables, head),
                "data": self.data.fingerprints,
                "dataset": self.config.dataset.to_dict(),
                "input": self.inputs.record(),
            }
        )
        path = Path(folder) / feature_cache.CACHE_DIR / f"{key}.npz"
        splits = {"train": self.train, **self.eval_splits}
        batch = self.config.train.eval_batch_size
        found = path.exists()
        t0 = time.perf_counter()
        arrays = feature_cache.load_or_compute(
            path, lambda: feature_cache.extract(self.model, variables, self.inputs, splits, head, batch)
        )
        seconds = time.perf_counter() - t0
        log(
            f"Feature cache: only '{head}' trains, on the frozen backbone's features "
            f"({'read from' if found else 'computed once and stored in'} {path}, {seconds:.1f} s)."
        )
        on = {
            name: self.devices.replicate(feature_cache.as_split(split, arrays[name])) for name, split in splits.items()
        }
        return replace(
            self,
            train=on["train"],
            validation=on.get("val"),
            test=on["test"],
            step_model=feature_cache.HeadOnly(feature_cache.head_factory(self.model, self.input_shape, head), head),
            step_inputs=feature_cache.identity,
            feature_cache={
                "used": True,
                "head": head,
                "file": str(path),
                "reused": found,
                "seconds": round(seconds, 1),
            },
        )

    def payload_structure(self) -> dict:
        """Shapes and dtypes of a checkpoint's contents, without initializing any parameters."""
        return {"state": jax.eval_shape(self.fresh_state), "train_totals": empty_totals()}

    def transfer_manifest(self) -> dict | None:
        if self.transfer_source is None:
            return None
        if self.imported is not None:
            return {**self.config.transfer.to_dict(), "weights": self.imported.record}
        source = rundir.read_result(self.transfer_source) or {}
        return {
            **self.config.transfer.to_dict(),
            "source_dir": str(self.transfer_source.resolve()),
            "source_run_id": source.get("run_id"),
        }

    @functools.cached_property
    def evaluate(self):
        """jitted evaluate(state, split) -> metric sums (see `make_evaluate`)."""
        return make_evaluate(self)

    @property
    def eval_splits(self) -> dict[str, DeviceSplit]:
        """The splits evaluated at each epoch's end, by metric prefix: 'val' (if held out) and 'test'."""
        return {"val": self.validation, "test": self.test} if self.validation is not None else {"test": self.test}

    def eval_metrics(self, state: TrainState) -> dict[str, float]:
        """Loss, top-1 and top-5 accuracy on every evaluated split, each example counted once."""
        state = self.on_devices(state)
        metrics = {}
        for name, split in self.eval_splits.items():
            if self.streamed is None:
                sums, size = self.evaluate(state, split), split.size
            else:
                batch = self.config.train.eval_batch_size
                sums, size = streaming.evaluate(self.eval_batch, state, split, self.streamed, self.devices, batch)
            metrics.update(split_metrics(jax.device_get(sums), size, name))
        return metrics

    @functools.cached_property
    def eval_batch(self):
        """jitted eval_batch(state, batch) -> metric sums of one batch (streamed data)."""
        eval_step = make_eval_step(self.step_model, self.step_inputs, compute_dtype=self.config.train.compute_dtype)
        return jax.jit(lambda state, batch: eval_step(state, self.devices.split_batch(batch)))

    def data_manifest(self) -> dict:
        dataset = self.data.dataset
        return {
            "name": dataset.name,
            "source": self.data.source,
            "fingerprints": self.data.fingerprints,
            "sizes": {s: len(d) for s, d in dataset.splits.items()},
            "train_examples_used": self.train.size,
            "eval_subset": self.config.dataset.eval_subset,
            "validation": self.validation_record,
            "image_shape": list(self.batch_image_shape),
            "stored_image_shape": list(dataset.image_shape) if dataset.image_shape else "varies",
            "pipeline": self.streamed.record() if self.streamed else {"pipeline": "device"},
            "pipeline_reason": self.pipeline_reason,
            "classes": list(dataset.class_names),
            "normalization": {"mean": list(self.inputs.mean), "std": list(self.inputs.std)},
            "input": {**self.inputs.record(), "model_input_shape": list(self.input_shape)},
            **({"feature_cache": self.feature_cache} if self.feature_cache else {}),
        }


def split_metrics(sums: dict, size: int, name: str) -> dict[str, float]:
    """`name`_loss, _accuracy and _top5 from evaluation sums that must count all `size` examples once."""
    if int(sums["count"]) != size:
        raise RuntimeError(f"evaluation counted {int(sums['count'])} of {size} {name} examples")
    return {f"{name}_{k}": v for k, v in metric_means(sums).items()}


def build(
    config: ml_collections.ConfigDict, paths: DataPaths, log=print, transfer_source: Path | None = None
) -> RunSetup:
    """Validate, load data to the device, build model and optimizer; no training compute.

    `transfer_source` (a finished run directory, or a pretrained weights file) is where `initial_state`
    copies weights from."""
    validation.validate(config)
    devices = data_mesh(config)
    d, roots = config.dataset, list(paths.search_roots)
    choice = catalog.choose_source(d.name, paths.data_dir, roots, d.source, d.device_budget_mb)
    if choice.streamed:
        data = catalog.load_streamed(d.name, paths.data_dir, roots, log=log)
    else:
        data = catalog.load(d.name, paths.data_dir, roots, log=log)
    splits = data.dataset.splits
    if "test" not in splits and test_split_name(splits) is None:
        raise UserError(f"dataset '{d.name}' ({data.source}) has no test split (found {sorted(splits)}).")
    train_split, test_split = splits["train"], splits[test_split_name(splits)]
    held = None
    if config.dataset.validation_fraction:
        held = hold_out(
            train_split, config.dataset.validation_fraction, config.dataset.validation_seed, data.dataset.num_classes
        )
        train_split = held.train
    config_lib.validate_against_data(config, len(train_split))
    if config.dataset.train_subset:
        train_split = balanced_subset(train_split, config.dataset.train_subset)
    if config.dataset.eval_subset:
        test_split = balanced_subset(test_split, config.dataset.eval_subset, "dataset.eval_subset")
        if held is not None:
            held = replace(
                held, validation=balanced_subset(held.validation, config.dataset.eval_subset, "dataset.eval_subset")
            )
    model = build_model(config.model, num_classes=data.dataset.num_classes)
    imported = None
    if transfer_source is not None and weights_files.is_weights_file(str(transfer_source)):
        source_model = config.transfer.source_model or config.model.to_dict()
        imported = import_weights(str(transfer_source), source_model)
        log(f"Pretrained weights: {transfer_source} ({imported.record['layout']} layout, {imported.record['found']}).")
    stream = streamed_data(config, data, devices, choice.reason) if choice.streamed else None
    if stream is None and d.image_size:
        raise UserError(
            f"config field 'dataset.image_size' = {d.image_size} applies to streamed data, and '{d.name}' is on the "
            "device; set dataset.source=stream, or dataset.resize to resize resident images in jit."
        )
    image_shape = stream.transform.output_shape if stream else data.dataset.image_shape

    def train_stats():
        if stream is None:
            return channel_stats(train_split)
        transform = stream.record()["host_transform"]
        key = {"data": data.fingerprints, "rows": _rows_digest(train_split), "transform": transform}
        log(f"Channel statistics of the {len(train_split)} train images (read once, then cached) ...")
        return streaming.channel_stats(train_split, stream, Path(paths.data_dir) / catalog.STREAM_CACHE_SUBDIR, key)

    inputs = input_transform(config, train_stats, image_shape, imported, transfer_source)
    input_shape = inputs.output_shape(image_shape)
    summary = summarize(model, input_shape)  # fails by layer name if the geometry cannot work
    steps_per_epoch = len(train_split) // config.train.batch_size
    schedule = make_schedule(config, steps_per_epoch)
    eval_batch = config.train.eval_batch_size
    labels = trainable = None
    if transfer.is_active(config):
        abstract = jax.eval_shape(
            functools.partial(model.init, train=False),
            jax.random.PRNGKey(0),
            jnp.zeros((1, *input_shape), jnp.float32),
        )
        transfer.check_patterns(abstract, config)
        labels = transfer.optimizer_labels(abstract["params"], config)
        trainable = {
            "params": transfer.trainable_mask(abstract["params"], config),
            "batch_stats": transfer.trainable_mask(abstract.get("batch_stats", {}), config),
        }
    return RunSetup(
        config=config,
        data=data,
        model=model,
        tx=make_optimizer(config, schedule, labels),
        schedule=schedule,
        steps_per_epoch=steps_per_epoch,
        inputs=inputs,
        train=train_split if stream else devices.replicate(to_device(train_split)),
        validation=None if held is None else _resident(held.validation, stream, devices, eval_batch),
        validation_record=None if held is None else held.record,
        test=_resident(test_split, stream, devices, eval_batch),
        devices=devices,
        model_summary={
            "params": summary.total_params,
            "trainable_params": summary.trainable_params,
            "flops": summary.flops,
        },
        trainable=trainable,
        transfer_source=transfer_source,
        imported=imported,
        streamed=stream,
        pipeline_reason=choice.reason,
    )


def _resident(split, stream, devices: DataMesh, eval_batch: int):
    """An evaluation split as the run reads it: streamed as it is, else on the device, padded."""
    return split if stream else devices.replicate(to_device(split, pad_to_multiple=eval_batch))


def _rows_digest(split: StreamedSplit) -> str:
    return hashlib.sha256(split.rows.astype(np.int64).tobytes()).hexdigest()


def streamed_data(config: ml_collections.ConfigDict, data, devices: DataMesh, reason: str) -> streaming.StreamedData:
    """How a streamed run reads its images: the host transform (dataset.image_size), workers, bad images."""
    d = config.dataset
    shape = data.dataset.image_shape
    if shape is None and not d.image_size:
        raise UserError(
            f"the images of '{d.name}' vary in size; set dataset.image_size (e.g. 224) to resize and crop them on "
            "the host (training: dataset.augment.random_resized_crop)."
        )
    transform = HostTransform(
        size=d.image_size,
        channels=shape[-1] if shape else 3,
        shape=shape,
        random_resized_crop=d.augment.random_resized_crop,
    )
    return streaming.StreamedData(transform, d.workers, d.bad_images == "skip", reason)


def input_transform(
    config: ml_collections.ConfigDict,
    train_stats,
    image_shape: tuple[int, int, int],
    imported: ImportedWeights | None,
    transfer_source: Path | None,
) -> InputTransform:
    """The run's `InputTransform`: `dataset.resize`, `center_crop`, `grey_to_rgb`, and the normalization
    `transfer.normalization` chooses (the train split's statistics, `train_stats()`, or the source's own)."""
    d, choice = config.dataset, config.transfer.normalization
    if d.center_crop and not d.resize and d.center_crop > min(image_shape[:2]):
        raise UserError(
            f"config field 'dataset.center_crop' = {d.center_crop} is larger than the stored images "
            f"({image_shape[0]}x{image_shape[1]}); set dataset.resize too, or crop less."
        )
    if d.grey_to_rgb and image_shape[2] != 1:
        raise UserError(f"config field 'dataset.grey_to_rgb' is set, but '{d.name}' has {image_shape[2]} channels.")
    source_norm = None
    if imported is not None and choice in ("auto", "source"):
        source_norm = (imported.preprocessing.mean, imported.preprocessing.std)
    elif transfer_source is not None and imported is None and choice != "dataset":
        info = data_info(transfer_source)
        if choice == "source" or info.pretrained:
            source_norm = (tuple(info.mean.tolist()), tuple(info.std.tolist()))
    if source_norm is None:
        mean, std = train_stats()
        source_norm = (tuple(mean.tolist()), tuple(std.tolist()))
    mean, std = source_norm
    channels = 3 if d.grey_to_rgb else image_shape[2]
    if d.grey_to_rgb and len(mean) == 1:
        mean, std = mean * 3, std * 3
    if len(mean) != channels:
        hint = " Set dataset.grey_to_rgb=true to repeat the grey channel." if channels == 1 else ""
        raise UserError(
            f"transfer: the source normalizes {len(mean)} channels and the model's input has {channels}.{hint}"
        )
    return InputTransform(mean, std, d.resize, d.center_crop, d.grey_to_rgb)


def make_evaluate(setup: RunSetup):
    """jitted evaluate(state, split) -> metric sums over every real example of the split, once."""
    eval_step = make_eval_step(setup.step_model, setup.step_inputs, compute_dtype=setup.config.train.compute_dtype)
    batch_size = setup.config.train.eval_batch_size

    def evaluate(state: TrainState, split: DeviceSplit):
        def body(i, totals):
            sums = eval_step(state, setup.devices.split_batch(slice_batch(split, i, batch_size)))
            return jax.tree_util.tree_map(jnp.add, totals, sums)

        return jax.lax.fori_loop(0, split.num_batches(batch_size), body, empty_metrics())

    return jax.jit(evaluate)
