"""Optax optimizers and learning-rate schedules built from the config."""

from __future__ import annotations

from typing import Any

import ml_collections
import optax


def make_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
    """Learning rate per step: optional linear warmup from 0, then constant, cosine or step decay."""
    lr, total = config.optimizer.lr, config.train.epochs * steps_per_epoch
    warmup = int(round(config.schedule.warmup_epochs * steps_per_epoch))
    name = config.schedule.name
    if name == "constant":
        main = optax.constant_schedule(lr)
    elif name == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps=max(total - warmup, 1))
    elif name == "step":
        boundaries = {
            int(round(b * steps_per_epoch)) - warmup: config.schedule.decay_factor
            for b in config.schedule.boundaries_epochs
        }
        main = optax.piecewise_constant_schedule(lr, {b: f for b, f in boundaries.items() if b > 0})
    else:
        raise ValueError(f"unknown schedule {name}")  # config validation rejects this earlier
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule, labels: Any = None
) -> optax.GradientTransformation:
    """Gradient clipping, then SGD / Adam with coupled L2, or AdamW with decoupled decay.

    With transfer `labels` ('new' | 'backbone' | 'frozen' per parameter): 'backbone' parameters get the
    learning rate times `transfer.backbone_lr_scale`, 'frozen' ones no update at all.
    """
    tx = _base_optimizer(config, schedule)
    if labels is None:
        return tx
    backbone = optax.chain(tx, optax.scale(config.transfer.backbone_lr_scale))
    return optax.multi_transform({"new": tx, "backbone": backbone, "frozen": optax.set_to_zero()}, labels)


def _base_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    opt, wd = config.optimizer, config.optimizer.weight_decay
    parts = []
    if opt.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
    if opt.name == "adamw":
        parts.append(optax.adamw(schedule, weight_decay=wd))
    else:
        if wd > 0:
            parts.append(optax.add_decayed_weights(wd))  # L2 added to the gradient, as torch's weight_decay
        if opt.name == "sgd":
            parts.append(optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
        elif opt.name == "adam":
            parts.append(optax.adam(schedule))
        else:
            raise ValueError(f"unknown optimizer {opt.name}")  # config validation rejects this earlier
    return optax.chain(*parts)
