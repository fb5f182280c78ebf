"""Per-example losses and accuracy counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def per_example_loss(name: str, logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """'cross_entropy' (softmax, optional label smoothing) or 'mse': 1/2 sum_k (softmax_k - onehot_k)^2 (seed 004)."""
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    if name == "cross_entropy":
        targets = optax.smooth_labels(onehot, label_smoothing) if label_smoothing else onehot
        return optax.softmax_cross_entropy(logits, targets)
    if name == "mse":
        return 0.5 * jnp.sum((jax.nn.softmax(logits) - onehot) ** 2, axis=-1)
    raise ValueError(f"unknown loss {name}")  # config validation rejects this earlier


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """1.0 where the label is among the k largest logits."""
    if k == 1:
        return (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    _, top = jax.lax.top_k(logits, k)
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)
