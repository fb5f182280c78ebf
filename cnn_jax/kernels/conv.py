"""A drop-in for `lax.conv_general_dilated` (as flax's nn.Conv calls it) that runs on oneDNN on the CPU.

Float32 NHWC/HWIO convolutions without dilation or feature groups, on a machine where the oneDNN library is
loaded (kernels/onednn.py), go through a custom VJP whose forward, input gradient and kernel gradient are
oneDNN's on the CPU and XLA's on any other platform (chosen when the program is lowered, so the same function
serves GPU and TPU); everything else is `lax.conv_general_dilated` unchanged. Results equal XLA's within float32
rounding (another summation order), and repeat bitwise from run to run.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnn_jax.kernels import onednn

NHWC = ("NHWC", "HWIO", "NHWC")
Pads = tuple[tuple[int, int], tuple[int, int]]


def _xla(x, w, strides, pads):
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=NHWC)


def _ffi(target: str, shape, a, b, strides, pads):
    """The oneDNN handler `target` on operands a, b; its float32 result of `shape`."""
    call = jax.ffi.ffi_call(
        f"cnn_jax_conv_{target}", jax.ShapeDtypeStruct(shape, jnp.float32), vmap_method="sequential"
    )
    return call(
        a,
        b,
        strides=np.array(strides, np.int64),
        pad_low=np.array([lo for lo, _ in pads], np.int64),
        pad_high=np.array([hi for _, hi in pads], np.int64),
    )


def _output_shape(x, w, strides, pads):
    return jax.eval_shape(lambda x, w: _xla(x, w, strides, pads), x, w).shape


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, strides, pads):
    return lax.platform_dependent(
        x,
        w,
        cpu=lambda x, w: _ffi("forward", _output_shape(x, w, strides, pads), x, w, strides, pads),
        default=lambda x, w: _xla(x, w, strides, pads),
    )


def _forward(x, w, strides, pads):
    return _conv(x, w, strides, pads), (x, w)


def _backward(strides, pads, saved, dy):
    x, w = saved

    def on_cpu(x, w, dy):
        return _ffi("input_grad", x.shape, dy, w, strides, pads), _ffi("kernel_grad", w.shape, x, dy, strides, pads)

    def elsewhere(x, w, dy):
        return jax.vjp(lambda x, w: _xla(x, w, strides, pads), x, w)[1](dy)

    return lax.platform_dependent(x, w, dy, cpu=on_cpu, default=elsewhere)


_conv.defvjp(_forward, _backward)


def _explicit_pads(padding, spatial, kernel, strides) -> Pads:
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(spatial, kernel, strides, padding)
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def supported(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, batch_group_count) -> bool:
    """Whether this convolution can go to oneDNN: 2-D, float32, NHWC/HWIO, no dilation, one group."""
    dilations = (*(lhs_dilation or ()), *(rhs_dilation or ()))
    return (
        onednn.available()
        and lhs.ndim == 4
        and lhs.dtype == jnp.float32
        and rhs.dtype == jnp.float32
        and all(d == 1 for d in dilations)
        and feature_group_count == 1
        and batch_group_count == 1
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)
    )


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """`lax.conv_general_dilated`, on oneDNN where `supported` (and the padding crops nothing)."""
    if preferred_element_type in (None, jnp.float32) and supported(
        lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, batch_group_count
    ):
        strides = tuple(int(s) for s in window_strides)
        pads = _explicit_pads(padding, lhs.shape[1:3], rhs.shape[:2], strides)
        if min(min(pair) for pair in pads) >= 0:
            return _conv(lhs, rhs, strides, pads)
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        batch_group_count,
        precision,
        preferred_element_type,
    )
