"""The layer vocabulary of the course, as flax modules so that summaries can see every layer.

Conventions: NHWC tensors; every module takes (x, train=False); padding is 'SAME', 'VALID'
or an int (that many zeros on each side). Modules built from other layers take them as fields
(`conv`, `norm`, `act`), so an ablation of a layer is a change of one argument.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn_jax import tuning

ModuleDef = Any  # a flax Module class, or a functools.partial of one with some fields bound


def identity(x: jax.Array) -> jax.Array:
    return x


ACTIVATIONS = {"relu": nn.relu, "leaky_relu": nn.leaky_relu, "elu": nn.elu, "gelu": nn.gelu, "none": identity}
BATCH_NORM = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)  # torch's defaults (momentum 0.1 there)
DOWNSAMPLE_KINDS = ("max", "avg", "stride", "none")
KERNEL_SCHEMES = {"3x3": (3,), "5x5": (5,), "7x7": (7,), "3x3x2": (3, 3), "3x3x3": (3, 3, 3)}
UPSAMPLE_KINDS = ("nearest", "bilinear", "zeros")


def flax_padding(padding: str | int):
    """'SAME' / 'VALID' / int p -> the padding argument of flax convs and pools."""
    return padding if isinstance(padding, str) else ((padding, padding), (padding, padding))


def max_pool(x: jax.Array, window: int = 2, stride: int | None = None) -> jax.Array:
    """VALID max pooling over H and W of an NHWC batch, equal to `nn.max_pool` in value and gradient.

    Non-overlapping windows (window == stride) use a crop + reshape + max with a hand-written
    gradient (`_tiled_max_pool`), cheaper on CPU than XLA's select-and-scatter (cnn_jax/tuning.py);
    CNN_JAX_PLAIN=1 (cnn_jax/tuning.py) or overlapping windows use `nn.max_pool` itself.
    """
    stride = window if stride is None else stride
    if window != stride or tuning.plain():
        return nn.max_pool(x, (window, window), strides=(stride, stride), padding="VALID")
    return _tiled_max_pool(x, window)


def _tiles(x: jax.Array, window: int) -> jax.Array:
    """(B, H, W, C) -> (B, H//window, window, W//window, window, C), the rows and columns left over cropped."""
    b, h, w, c = x.shape
    hh, ww = h // window, w // window
    return x[:, : hh * window, : ww * window, :].reshape(b, hh, window, ww, window, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _tiled_max_pool(x: jax.Array, window: int) -> jax.Array:
    return _tiles(x, window).max(axis=(2, 4))


def _tiled_max_pool_forward(x: jax.Array, window: int):
    return _tiled_max_pool(x, window), x


def _tiled_max_pool_backward(window: int, x, grad):
    """Each window's gradient goes to its first maximum in row-major order, as XLA's select-and-scatter
    (the gradient of `nn.max_pool`) does; the cropped rows and columns get zero. The maximum is found
    again by a running comparison of the window's own elements: a version that tested equality with the
    forward's output made sharded and vmapped training drift from one-device training
    (tests/test_devices.py, tests/test_seed_group.py), presumably when XLA recomputed the input."""
    tiles = _tiles(x, window)
    positions = [(i, j) for i in range(window) for j in range(window)]
    best, winner = tiles[:, :, 0, :, 0, :], jnp.zeros(grad.shape, jnp.int32)
    for k, (i, j) in enumerate(positions[1:], start=1):
        larger = tiles[:, :, i, :, j, :] > best
        best = jnp.where(larger, tiles[:, :, i, :, j, :], best)
        winner = jnp.where(larger, k, winner)
    zero = jnp.zeros_like(grad)
    share = [jnp.where(winner == k, grad, zero) for k in range(len(positions))]
    rows = [jnp.stack(share[i * window : (i + 1) * window], axis=3) for i in range(window)]
    b, hh, ww, c = grad.shape
    dx = jnp.stack(rows, axis=2).reshape(b, hh * window, ww * window, c)
    crop = ((0, 0), (0, x.shape[1] - hh * window), (0, x.shape[2] - ww * window), (0, 0))
    return (jnp.pad(dx, crop),)


_tiled_max_pool.defvjp(_tiled_max_pool_forward, _tiled_max_pool_backward)


class ConvUnit(nn.Module):
    """Conv (kernel, stride, padding) -> optional norm -> activation. No bias before a norm.

    `norm` is a batch-norm-like module factory (called with `use_running_average`), e.g. `BATCH_NORM`;
    `act` is any elementwise function, e.g. `ACTIVATIONS["elu"]`.
    """

    features: int
    kernel: int = 3
    stride: int = 1
    padding: str | int = "SAME"
    norm: ModuleDef | None = None
    act: Callable[[jax.Array], jax.Array] = nn.relu
    use_bias: bool | None = None  # default: True without a norm, False with one
    kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        use_bias = (self.norm is None) if self.use_bias is None else self.use_bias
        x = nn.Conv(
            self.features,
            (self.kernel, self.kernel),
            strides=(self.stride, self.stride),
            padding=flax_padding(self.padding),
            use_bias=use_bias,
            kernel_init=self.kernel_init,
        )(x)
        if self.norm is not None:
            x = self.norm(use_running_average=not train)(x)
        return self.act(x)


class Pool(nn.Module):
    """Max or average pooling with a square window (2x2/2 by default; 3x3/2 overlaps, as in AlexNet)."""

    kind: str = "max"
    window: int = 2
    stride: int = 2
    padding: str | int = "VALID"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.kind == "max" and self.padding == "VALID":
            return max_pool(x, window=self.window, stride=self.stride)
        pool = nn.max_pool if self.kind == "max" else nn.avg_pool
        kwargs = {} if self.kind == "max" else {"count_include_pad": False}
        return pool(
            x,
            (self.window, self.window),
            strides=(self.stride, self.stride),
            padding=flax_padding(self.padding),
            **kwargs,
        )


class Downsample(nn.Module):
    """The downsampling switch: 'max' / 'avg' pooling over `window` with `stride`; 'stride', an
    extra 3x3 `conv` with that stride and SAME padding (as All-CNN-C replaces each pooling layer),
    so H and W become ceil(H / stride); or 'none' (identity)."""

    kind: str = "max"
    window: int = 2
    stride: int = 2
    features: int | None = None  # channels of the strided conv; default: keep the input's
    conv: ModuleDef = ConvUnit

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.kind in ("max", "avg"):
            return Pool(self.kind, window=self.window, stride=self.stride)(x)
        if self.kind == "stride":
            return self.conv(self.features or x.shape[-1], kernel=3, stride=self.stride, padding="SAME")(x, train)
        if self.kind == "none":
            return x
        raise ValueError(f"unknown downsample kind {self.kind!r}; allowed: {DOWNSAMPLE_KINDS}")


class ConvStack(nn.Module):
    """The kernel-scheme switch: '5x5' is one conv, '3x3x2' two stacked 3x3 (same receptive field),
    '7x7' vs '3x3x3' likewise; every conv is a `conv` unit, so a norm and nonlinearity follow each."""

    features: int
    scheme: str = "3x3"
    padding: str | int = "SAME"
    conv: ModuleDef = ConvUnit

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.scheme not in KERNEL_SCHEMES:
            raise ValueError(f"unknown kernel scheme {self.scheme!r}; allowed: {tuple(KERNEL_SCHEMES)}")
        for kernel in KERNEL_SCHEMES[self.scheme]:
            x = self.conv(self.features, kernel=kernel, padding=self.padding)(x, train)
        return x


class GlobalAvgPool(nn.Module):
    """Mean over H and W: (N, H, W, C) -> (N, C)."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return jnp.mean(x, axis=(1, 2))


class AdaptiveAvgPool(nn.Module):
    """Average pooling to a fixed `size` x `size` output, with torchvision's adaptive windows:
    output cell i averages input rows floor(i * H / size) .. ceil((i + 1) * H / size) - 1."""

    size: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        def pool_axis(x: jax.Array, axis: int) -> jax.Array:
            n = x.shape[axis]
            cells = [
                jax.lax.slice_in_dim(x, i * n // self.size, -(-(i + 1) * n // self.size), axis=axis)
                for i in range(self.size)
            ]
            return jnp.concatenate([c.mean(axis=axis, keepdims=True) for c in cells], axis=axis)

        return pool_axis(pool_axis(x, 1), 2)


class Flatten(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return x.reshape(x.shape[0], -1)


class Dropout(nn.Module):
    """Dropout active only when train=True (uses the 'dropout' rng)."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return nn.Dropout(self.rate, deterministic=not train)(x) if self.rate > 0 else x


class MLPHead(nn.Module):
    """Dense layers with activation and dropout between them, then the class logits."""

    hidden: Sequence[int]
    num_classes: int
    dropout: float = 0.0
    act: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for width in self.hidden:
            x = Dropout(self.dropout)(self.act(nn.Dense(width)(x)), train)
        return nn.Dense(self.num_classes)(x)


class Upsample(nn.Module):
    """Upsample H and W by an integer factor: 'nearest' (repeat), 'bilinear', or 'zeros'
    (bed of nails: each value at the top-left of its factor x factor cell, zeros elsewhere)."""

    factor: int = 2
    kind: str = "nearest"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        n, h, w, c = x.shape
        f = self.factor
        if self.kind == "nearest":
            return jnp.repeat(jnp.repeat(x, f, axis=1), f, axis=2)
        if self.kind == "bilinear":
            return jax.image.resize(x, (n, h * f, w * f, c), method="bilinear")
        if self.kind == "zeros":
            out = jnp.zeros((n, h, f, w, f, c), x.dtype).at[:, :, 0, :, 0, :].set(x)
            return out.reshape(n, h * f, w * f, c)
        raise ValueError(f"unknown upsample kind {self.kind!r}; allowed: {UPSAMPLE_KINDS}")


class TransposedConv(nn.Module):
    """Learned upsampling: a transposed convolution (kernel, stride, SAME padding)."""

    features: int
    kernel: int = 3
    stride: int = 2

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return nn.ConvTranspose(
            self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride), padding="SAME"
        )(x)
