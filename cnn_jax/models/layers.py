"""The layer vocabulary of the course, as flax modules so that summaries can see every layer.

Conventions: NHWC tensors; every module takes (x, train=False); padding is 'SAME', 'VALID',
an int (that many zeros on each side) or ((low, high), (low, high)) for H and W (a negative
number crops). Modules built from other layers take them as fields
(`conv`, `norm`, `act`), so an ablation of a layer is a change of one argument.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen import pooling

from cnn_jax import tuning
from cnn_jax.kernels.conv import conv_general_dilated

ModuleDef = Any  # a flax Module class, or a functools.partial of one with some fields bound
# flax's convolution, on oneDNN where the CPU library is built (cnn_jax/kernels/conv.py), else on XLA's own
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


def identity(x: jax.Array) -> jax.Array:
    return x


ACTIVATIONS = {"relu": nn.relu, "leaky_relu": nn.leaky_relu, "elu": nn.elu, "gelu": nn.gelu, "none": identity}
BATCH_NORM = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)  # torch's defaults (momentum 0.1 there)
# The downsampling switch; what each kind does is said in one place, the docstring of `Downsample`.
DOWNSAMPLE_KINDS = ("max", "avg", "l2", "stride", "strided_conv", "none")
STRIDED_CONV = "strided_conv"  # the kind that the block applies to its own conv (see `Downsample`)
L2_POOL_EPSILON = 1e-12  # inside the square root of L2 pooling: a finite gradient at an all-zero window
KERNEL_SCHEMES = {"3x3": (3,), "5x5": (5,), "7x7": (7,), "3x3x2": (3, 3), "3x3x3": (3, 3, 3)}
UPSAMPLE_KINDS = ("nearest", "bilinear", "zeros")


Padding = str | int | tuple[tuple[int, int], tuple[int, int]]


def flax_padding(padding: Padding):
    """'SAME' / 'VALID' / int p / ((low, high), (low, high)) -> the padding argument of flax convs and pools."""
    if isinstance(padding, str):
        return padding
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    return tuple((int(low), int(high)) for low, high in padding)


def _low_high(padding: Padding, kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Explicit (low, high) pairs of a stride-1 conv's padding; 'SAME' as XLA pads it (low = (kernel - 1) // 2)."""
    if padding == "SAME":
        return (((kernel - 1) // 2, kernel // 2),) * 2
    if padding == "VALID":
        return ((0, 0), (0, 0))
    if isinstance(padding, str):
        raise ValueError(f"padding {padding!r}: expected 'SAME', 'VALID', an int or (low, high) pairs")
    return flax_padding(padding)


def strided_padding(padding: Padding, kernel: int, window: int = 2) -> tuple[tuple[int, int], tuple[int, int]]:
    """The padding of the conv that takes the stride for the 'strided_conv' downsampling.

    The conv (kernel `kernel`, stride 1, `padding`) followed by a VALID pool of `window` with stride s
    becomes the conv alone with stride s and this padding: the stride-1 padding less `window - 1`
    rows and columns at the bottom and right (a negative number crops). The strided conv then
    computes exactly the stride-1 conv's output at the top-left corner of every pooling window, so
    its output has the pool's size, floor((H' - window) / s) + 1 with H' the stride-1 conv's output,
    for every input size, even or odd, and any s. For a SAME 3x3 conv and 2x2 windows this is
    (1, 0): PyTorch's padding=1 on even sizes; XLA's 'SAME' would pad (0, 1) instead (windows
    shifted by a pixel) and give ceil(H / 2), not the pool's floor(H / 2), on odd sizes.
    """
    return tuple((low, high - (window - 1)) for low, high in _low_high(padding, kernel))


def max_pool(x: jax.Array, window: int = 2, stride: int | None = None) -> jax.Array:
    """VALID max pooling over H and W of an NHWC batch, equal to `nn.max_pool` in value and gradient.

    Non-overlapping windows (window == stride) have a hand-written gradient (`_tiled_max_pool`), cheaper
    on CPU than XLA's select-and-scatter (cnn_jax/tuning.py); CNN_JAX_PLAIN=1 (cnn_jax/tuning.py) or
    overlapping windows use `nn.max_pool` itself.
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
    """Not differentiated (evaluation): XLA's reduce-window, 1.5x faster there than the tiles' max on CPU
    (seed_cnn evaluation: README, "Speed on a CPU"); the same values."""
    return nn.max_pool(x, (window, window), strides=(window, window), padding="VALID")


def _tiled_max_pool_forward(x: jax.Array, window: int):
    """Differentiated (training): the crop + reshape + max, which XLA fuses with the gradient's tiles."""
    return _tiles(x, window).max(axis=(2, 4)), x


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


def padded_if_smaller_than_kernel(x: jax.Array, kernel: int, stride: int, padding) -> tuple[jax.Array, Any]:
    """(x, padding) for a conv; on a map smaller than the kernel (VGG's 2x2 stage 5 on 32x32 images) the
    padding is applied to x here and the conv is VALID. XLA's CPU convolution with its own padding runs such
    maps about 100x slower than the same VALID conv on the padded input (a 3x3 conv of 512 channels on 100
    2x2 maps: 0.96 s against 9 ms, jaxlib 0.10.2); the barrier keeps XLA from folding the pad back in."""
    height, width = x.shape[1:3]
    if min(height, width) >= kernel or padding == "VALID":
        return x, padding
    pads = (
        jax.lax.padtype_to_pads((height, width), (kernel, kernel), (stride, stride), padding)
        if isinstance(padding, str)
        else padding
    )
    if not any(low or high for low, high in pads):
        return x, "VALID"
    config = [(0, 0, 0), *((low, high, 0) for low, high in pads), (0, 0, 0)]
    return jax.lax.optimization_barrier(jax.lax.pad(x, jnp.zeros((), x.dtype), config)), "VALID"


class ConvUnit(nn.Module):
    """Conv (kernel, stride, padding) -> optional norm -> activation. No bias before a norm.

    `norm` is a batch-norm-like module factory, e.g. `BATCH_NORM`, whose layer takes `use_running_average`
    when called (so that transfer learning can switch a frozen layer to its stored statistics);
    `act` is any elementwise function, e.g. `ACTIVATIONS["elu"]`.
    """

    features: int
    kernel: int = 3
    stride: int = 1
    padding: Padding = "SAME"
    norm: ModuleDef | None = None
    act: Callable[[jax.Array], jax.Array] = nn.relu
    use_bias: bool | None = None  # default: True without a norm, False with one
    kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        use_bias = (self.norm is None) if self.use_bias is None else self.use_bias
        x, padding = padded_if_smaller_than_kernel(x, self.kernel, self.stride, flax_padding(self.padding))
        x = Conv(
            self.features,
            (self.kernel, self.kernel),
            strides=(self.stride, self.stride),
            padding=padding,
            use_bias=use_bias,
            kernel_init=self.kernel_init,
        )(x)
        if self.norm is not None:
            x = self.norm()(x, use_running_average=not train)
        return self.act(x)


class Pool(nn.Module):
    """Max, average or L2 pooling with a square window (2x2/2 by default; 3x3/2 overlaps, as in AlexNet).

    'avg' averages over the window's elements inside the input (padding is not counted); 'l2' is
    sqrt(sum of squares over the window + L2_POOL_EPSILON), padding counting as zeros: the epsilon
    (1e-12, i.e. 1e-6 added to an all-zero window's output) keeps the gradient finite there, where
    the derivative of a bare square root is infinite (and 0 x inf would be NaN).
    """

    kind: str = "max"
    window: int = 2
    stride: int = 2
    padding: Padding = "VALID"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        window, strides, padding = (self.window, self.window), (self.stride, self.stride), flax_padding(self.padding)
        if self.kind == "max" and self.padding == "VALID":
            return max_pool(x, window=self.window, stride=self.stride)
        if self.kind == "max":
            return nn.max_pool(x, window, strides=strides, padding=padding)
        if self.kind == "avg":
            return nn.avg_pool(x, window, strides=strides, padding=padding, count_include_pad=False)
        if self.kind == "l2":
            squares = pooling.pool(x * x, 0.0, jax.lax.add, window, strides, padding)
            return jnp.sqrt(squares + L2_POOL_EPSILON)
        raise ValueError(f"unknown pool kind {self.kind!r}; allowed: ('max', 'avg', 'l2')")


class Downsample(nn.Module):
    """The downsampling switch `downsample`, in every model that has it (DOWNSAMPLE_KINDS):

    - 'max', 'avg', 'l2': max, average or L2-norm pooling (`Pool`; L2 = sqrt of the sum of squares
      plus L2_POOL_EPSILON) over `window` with `stride`, VALID: H becomes floor((H - window) / stride) + 1.
      No parameters.
    - 'stride': an extra 3x3 `conv` with that stride and SAME padding, as All-CNN-C replaces each
      pooling layer (Springenberg et al. 2014): H becomes ceil(H / stride); one more conv's parameters.
    - 'strided_conv': no layer of its own. The conv that precedes the downsampling point takes the
      stride instead, with `strided_padding`, as Strided-CNN-C does (Springenberg et al. 2014): the
      same parameters as the pools and the pool's output size, and that conv computes at the lower
      resolution. The block or model that owns the conv applies it (ablation_net's and VGG's stages,
      LeNet-5, seed_cnn); this module refuses it, and a model that cannot apply it leaves it out of
      its CHOICES (AlexNet, whose first conv already has stride 4 before an overlapping pool; the
      ResNet stem pool, which allows max, avg, stride and none).
    - 'none': the identity.
    """

    kind: str = "max"
    window: int = 2
    stride: int = 2
    features: int | None = None  # channels of the strided conv; default: keep the input's
    conv: ModuleDef = ConvUnit

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.kind in ("max", "avg", "l2"):
            return Pool(self.kind, window=self.window, stride=self.stride)(x)
        if self.kind == "stride":
            return self.conv(self.features or x.shape[-1], kernel=3, stride=self.stride, padding="SAME")(x, train)
        if self.kind == "none":
            return x
        if self.kind == STRIDED_CONV:
            raise ValueError(
                "downsample 'strided_conv' has no layer of its own: the conv before the downsampling point "
                "takes the stride (layers.strided_padding); this model does not apply it"
            )
        raise ValueError(f"unknown downsample kind {self.kind!r}; allowed: {DOWNSAMPLE_KINDS}")


class ConvStack(nn.Module):
    """The kernel-scheme switch: '5x5' is one conv, '3x3x2' two stacked 3x3 (same receptive field),
    '7x7' vs '3x3x3' likewise; every conv is a `conv` unit, so a norm and nonlinearity follow each.

    `stride` > 1 goes to the last conv, for the 'strided_conv' downsampling: that conv replaces
    itself followed by a VALID pool of `window` (default: `stride`) with that stride, and pads as
    `strided_padding` says, so the output has the pool's size.
    """

    features: int
    scheme: str = "3x3"
    padding: Padding = "SAME"
    conv: ModuleDef = ConvUnit
    stride: int = 1
    window: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.scheme not in KERNEL_SCHEMES:
            raise ValueError(f"unknown kernel scheme {self.scheme!r}; allowed: {tuple(KERNEL_SCHEMES)}")
        kernels = KERNEL_SCHEMES[self.scheme]
        for i, kernel in enumerate(kernels):
            if self.stride > 1 and i == len(kernels) - 1:
                padding = strided_padding(self.padding, kernel, window=self.window or self.stride)
                x = self.conv(self.features, kernel=kernel, stride=self.stride, padding=padding)(x, train)
            else:
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
