"""The pure, jittable train and eval steps. Metrics are sums, so they merge by addition."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn

from cnn_jax.data.augment import augment
from cnn_jax.train.losses import per_example_loss, topk_correct
from cnn_jax.train.state import TrainState
from cnn_jax.train.transfer import frozen_batch_norms, keep_frozen, stored_statistics

Batch = dict[str, jax.Array]  # image uint8 (B,H,W,C), label int32 (B,), mask bool (B,)
Metrics = dict[str, jax.Array]  # loss_sum, correct, correct_top5, count


def empty_metrics() -> Metrics:
    return {k: jnp.zeros((), jnp.float32) for k in ("loss_sum", "correct", "correct_top5", "count", "skipped")}


def empty_totals() -> dict[str, Metrics]:
    """The train metric sums a run carries (and checkpoints): since the epoch began, and since the last log."""
    return {"epoch": empty_metrics(), "interval": empty_metrics()}


def add_to_totals(totals: dict[str, Metrics], sums: Metrics) -> dict[str, Metrics]:
    return jax.tree_util.tree_map(lambda total, new: total + new, totals, {"epoch": sums, "interval": sums})


def metric_means(totals: dict[str, float]) -> dict[str, float]:
    """Means from metric sums."""
    n = max(float(totals["count"]), 1.0)
    return {
        "loss": float(totals["loss_sum"]) / n,
        "accuracy": float(totals["correct"]) / n,
        "top5": float(totals["correct_top5"]) / n,
    }


def _metric_sums(logits, labels, losses, mask) -> Metrics:
    weight = mask.astype(jnp.float32)
    top5 = topk_correct(logits, labels, 5) if logits.shape[-1] > 5 else jnp.ones_like(weight)
    return {
        "loss_sum": jnp.sum(losses * weight),
        "correct": jnp.sum(topk_correct(logits, labels, 1) * weight),
        "correct_top5": jnp.sum(top5 * weight),
        "count": jnp.sum(weight),
        "skipped": jnp.zeros((), jnp.float32),
    }


def _variables(state: TrainState, params) -> dict:
    return {"params": params, "batch_stats": state.batch_stats} if state.batch_stats else {"params": params}


def cast_floating(tree, dtype):
    """The pytree with its floating-point leaves cast to `dtype`; other leaves unchanged."""
    return jax.tree_util.tree_map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _precision_casts(compute_dtype: str) -> tuple[Callable, Callable]:
    """(to_compute, to_float32): the casts into and out of the forward pass; identities for float32."""
    if compute_dtype == "float32":
        return (lambda tree: tree), (lambda tree: tree)
    return (lambda tree: cast_floating(tree, compute_dtype)), (lambda tree: cast_floating(tree, jnp.float32))


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
    inputs: Callable[[jax.Array], jax.Array],
    trainable: dict | None = None,
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]:
    """train_step(state, batch, key) -> (state, metric sums); `key` drives augmentation and dropout.
    `inputs` makes the model's input from the batch's images (a `data.preprocess.InputTransform`).

    `trainable` ({"params": mask, "batch_stats": mask} of Python bools, transfer learning) keeps the
    masked-out parameters and batch statistics bit for bit as they were; with
    `transfer.frozen_batch_norm = 'inference'` a batch norm whose scale and bias are frozen also normalizes
    with its stored statistics. With
    `train.skip_nonfinite_updates`, a step whose loss or gradients are not finite leaves the state as it
    was (but for the step counter) and counts as 'skipped' instead of adding to the metrics.

    The objective adds `loss.aux_weight` times the loss of each auxiliary classifier a model sows as
    'intermediates/aux_logits'; the reported loss is the main classifier's.

    With `train.compute_dtype` bfloat16 the forward and backward pass run on bfloat16 copies of the
    images and parameters, cast inside the differentiated function so the gradients reach the float32
    parameters as float32; logits are cast back to float32 for the loss and the metrics.
    """
    aug = config.dataset.augment
    loss_name, smoothing, aux_weight = config.loss.name, config.loss.label_smoothing, config.loss.aux_weight
    skip_nonfinite = config.train.skip_nonfinite_updates
    to_compute, to_float32 = _precision_casts(config.train.compute_dtype)
    frozen_norms = frozenset()
    if trainable is not None and config.transfer.frozen_batch_norm == "inference":
        frozen_norms = frozen_batch_norms(trainable)

    def train_step(state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, Metrics]:
        aug_key, dropout_key = jax.random.split(key)
        images = augment(
            batch["image"],
            aug_key,
            crop_padding=aug.random_crop_padding,
            translate=aug.translate,
            horizontal_flip=aug.horizontal_flip,
            rotation=aug.rotation,
            greyscale=aug.greyscale,
        )
        images = to_compute(inputs(images))

        def loss_fn(params):
            with stored_statistics(frozen_norms):
                logits, updates = model.apply(
                    _variables(state, to_compute(params)),
                    images,
                    train=True,
                    rngs={"dropout": dropout_key},
                    mutable=["batch_stats", "intermediates"],
                )
            logits = to_float32(logits)
            losses = per_example_loss(loss_name, logits, batch["label"], smoothing)
            aux_logits = to_float32(updates.get("intermediates", {}).get("aux_logits", ()))  # sown by aux heads
            objective = losses + sum(
                aux_weight * per_example_loss(loss_name, aux, batch["label"], smoothing) for aux in aux_logits
            )
            return jnp.mean(objective), (logits, losses, updates)

        grads, (logits, losses, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
        opt_updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, opt_updates)
        batch_stats = updates.get("batch_stats", state.batch_stats)
        if trainable is not None:
            params = keep_frozen(trainable["params"], state.params, params)
            batch_stats = keep_frozen(trainable["batch_stats"], state.batch_stats, batch_stats)
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
        sums = _metric_sums(logits, batch["label"], losses, batch["mask"])
        if not skip_nonfinite:
            return new_state, sums
        finite = jnp.isfinite(sums["loss_sum"]) & all_finite(grads)
        kept = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), new_state, state)
        sums = {k: jnp.where(finite, v, 0.0) for k, v in sums.items()}
        return kept.replace(step=state.step + 1), {**sums, "skipped": 1.0 - finite.astype(jnp.float32)}

    return train_step


def all_finite(tree) -> jax.Array:
    """True when every element of every leaf is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def make_eval_step(
    model: nn.Module,
    inputs: Callable[[jax.Array], jax.Array],
    *,
    compute_dtype: str = "float32",
) -> Callable[[TrainState, Batch], Metrics]:
    """eval_step(state, batch) -> metric sums over the batch's real (unmasked) examples; plain cross-entropy.

    The forward pass runs in `compute_dtype` (see make_train_step); logits, loss and metrics in float32.
    """
    to_compute, to_float32 = _precision_casts(compute_dtype)

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        images = to_compute(inputs(batch["image"]))
        logits = to_float32(model.apply(_variables(state, to_compute(state.params)), images, train=False))
        losses = per_example_loss("cross_entropy", logits, batch["label"])
        return _metric_sums(logits, batch["label"], losses, batch["mask"])

    return eval_step
