"""A drop-in for `lax.conv_general_dilated` (as flax's nn.Conv calls it) that runs on oneDNN on the CPU.

Float32 NHWC/HWIO convolutions without dilation or feature groups, on a machine where the oneDNN library is
loaded (kernels/onednn.py), go through a custom VJP whose forward, input gradient and kernel gradient are
oneDNN's on the CPU and XLA's on any other platform (chosen when the program is lowered, so the same function
serves GPU and TPU); everything else is `lax.conv_general_dilated` unchanged. Results equal XLA's within float32
rounding (another summation order), and repeat bitwise from run to run.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

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


# Each call as a Shardy sharding rule over its operands (a, b) -> result: b is the batch; i, o the channels.
RULES = {
    "forward": "b h w i, k l i o -> b p q o",
    "input_grad": "b p q o, k l i o -> b h w i",
    "kernel_grad": "b h w i, b p q o -> k l i o",
}


@functools.cache
def _onednn(target: str, strides, pads, tail: tuple[int, ...]):
    """The oneDNN call `target` as a function of its operands (a, b), for a result of shape (batch, *tail) or, for
    the kernel gradient, `tail`. On a batch sharded over devices each device runs its own rows (the kernel
    gradient then sums over devices) instead of XLA gathering the whole batch; under vmap, one call per item."""
    reduces = target == "kernel_grad"

    def call(a, b):
        return _ffi(target, tail if reduces else (a.shape[0], *tail), a, b, strides, pads)

    def shardings(mesh, arg_shapes):
        spec = getattr(arg_shapes[0].sharding, "spec", ())
        axes = spec[0] if len(spec) else None  # the mesh axes the batch is split over
        rows, whole = NamedSharding(mesh, PartitionSpec(axes)), NamedSharding(mesh, PartitionSpec())
        return axes, (rows, rows if reduces else whole), whole if reduces else rows

    def partition(mesh, arg_shapes, result_shape):
        axes, args, result = shardings(mesh, arg_shapes)

        def local(a, b):
            return lax.psum(call(a, b), axes) if reduces and axes is not None else call(a, b)

        return mesh, local, result, args

    partitioned = custom_partitioning(call)
    partitioned.def_partition(
        partition,
        infer_sharding_from_operands=lambda mesh, arg_shapes, result_shape: shardings(mesh, arg_shapes)[2],
        sharding_rule=RULES[target],
    )
    batchable = jax.custom_batching.custom_vmap(partitioned)  # custom_partitioning has no batching rule

    @batchable.def_vmap
    def _(axis_size, in_batched, a, b):
        a, b = (x if batched else jnp.broadcast_to(x, (axis_size, *x.shape)) for x, batched in zip((a, b), in_batched))
        return jax.vmap(call)(a, b), True

    return batchable


def _output_shape(x, w, strides, pads):
    return jax.eval_shape(lambda x, w: _xla(x, w, strides, pads), x, w).shape


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, strides, pads):
    return lax.platform_dependent(
        x,
        w,
        cpu=lambda x, w: _onednn("forward", strides, pads, _output_shape(x, w, strides, pads)[1:])(x, w),
        default=lambda x, w: _xla(x, w, strides, pads),
    )


def _forward(x, w, strides, pads):
    return _conv(x, w, strides, pads), (x, w)


def _backward(strides, pads, saved, dy):
    x, w = saved

    def on_cpu(x, w, dy):
        dx = _onednn("input_grad", strides, pads, x.shape[1:])(dy, w)
        return dx, _onednn("kernel_grad", strides, pads, w.shape)(x, dy)

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


_LAX_SIGNATURE = inspect.signature(lax.conv_general_dilated)


def conv_general_dilated(*args, **kwargs):
    """`lax.conv_general_dilated` (same arguments), on oneDNN where `supported` and the padding crops nothing."""
    call = _LAX_SIGNATURE.bind(*args, **kwargs)
    call.apply_defaults()
    a = call.arguments
    if a["preferred_element_type"] in (None, jnp.float32) and supported(
        a["lhs"],
        a["rhs"],
        a["lhs_dilation"],
        a["rhs_dilation"],
        a["dimension_numbers"],
        a["feature_group_count"],
        a["batch_group_count"],
    ):
        strides = tuple(int(s) for s in a["window_strides"])
        pads = _explicit_pads(a["padding"], a["lhs"].shape[1:3], a["rhs"].shape[:2], strides)
        if min(min(pair) for pair in pads) >= 0:
            return _conv(a["lhs"], a["rhs"], strides, pads)
    return lax.conv_general_dilated(*args, **kwargs)
