"""Architecture accounting: per-layer output shape, parameters, FLOPs, receptive field and jump.

The model is traced abstractly (`jax.eval_shape`, no compute) while an interceptor watches every
module call. Receptive field r and jump j follow r_out = r_in + (k - 1) * j_in, j_out = j_in * s
for convs and pools. Inside a block, a tensor made outside any module (a residual sum, a
concatenation of branches) takes the largest receptive field produced so far in that block.
FLOPs count a multiply-add as 2 (FLOPs = 2 x MACs) for convs and dense layers; the rest (pools of
every kind, L2 included, norms, activations) is ignored. A conv with a stride (the 'stride' and
'strided_conv' downsamplings) is counted at its output resolution.
The same trace checks geometry: a layer whose window does not fit its input fails here, by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn_jax.errors import UserError
from cnn_jax.models import layers

LEAF_TYPES = (
    nn.Conv,
    nn.ConvTranspose,
    nn.Dense,
    nn.BatchNorm,
    layers.Pool,
    layers.AdaptiveAvgPool,
    layers.GlobalAvgPool,
    layers.Flatten,
    layers.Upsample,
    nn.Dropout,
)


@dataclass(frozen=True)
class Row:
    path: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    non_trainable: int
    flops: int
    receptive_field: int | None  # None: the whole input (after global pooling, flatten or dense)
    jump: float | None


@dataclass(frozen=True)
class Summary:
    model: str
    input_shape: tuple[int, int, int]
    rows: list[Row]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    flops: int  # per image

    def __str__(self) -> str:
        return self.table()

    def _repr_markdown_(self) -> str:  # a notebook shows the table
        return f"```\n{self.table()}\n```"

    def table(self) -> str:
        """A Keras-like text table with totals."""
        head = ("layer", "type", "output", "params", "FLOPs", "RF", "jump")
        body = [
            (
                r.path,
                r.kind,
                "x".join(map(str, r.output_shape)),
                f"{r.params + r.non_trainable:,}",
                _si(r.flops),
                "all" if r.receptive_field is None else str(r.receptive_field),
                "-" if r.jump is None else f"{r.jump:g}",
            )
            for r in self.rows
        ]
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]

        def line(cells: tuple[str, ...]) -> str:
            return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        rule = "-" * len(line(head))
        shape = "x".join(map(str, self.input_shape))
        return "\n".join(
            [
                f"{self.model} on {shape}",
                rule,
                line(head),
                rule,
                *map(line, body),
                rule,
                f"total params: {self.total_params:,}   trainable: {self.trainable_params:,}   "
                f"non-trainable: {self.non_trainable_params:,}",
                f"FLOPs per image: {self.flops:,} ({_si(self.flops)}; a multiply-add counts 2)",
            ]
        )


def _si(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _widest(seen: list[tuple[float | None, float | None]]) -> tuple[float | None, float | None]:
    """The geometry of a tensor combined from `seen` ones: the largest receptive field (None = global)."""
    if any(r is None for r, _ in seen):
        return (None, None)
    return max(seen, key=lambda g: g[0])


class _Tracer:
    """Method interceptor recording leaf layers and the (receptive field, jump) of every tensor."""

    def __init__(self):
        self.known: dict[int, tuple[float | None, float | None]] = {}
        self.keep_alive: list[Any] = []  # ids stay unique only while the tensors live
        self.frames: list[list] = [[]]  # per module call in progress: geometries seen or produced in it
        self.rows: list[tuple[tuple[str, ...], nn.Module, tuple[int, ...], int, float | None, float | None]] = []

    def geometry_of(self, x) -> tuple[float | None, float | None]:
        if id(x) in self.known:
            return self.known[id(x)]
        return _widest(self.frames[-1]) if self.frames[-1] else (1.0, 1.0)

    def remember(self, x, geometry) -> None:
        self.known[id(x)] = geometry
        self.keep_alive.append(x)
        for frame in self.frames:
            frame.append(geometry)

    def __call__(self, next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not args:
            return next_fun(*args, **kwargs)
        x = args[0]
        r_in, j_in = self.geometry_of(x)
        if isinstance(module, LEAF_TYPES):
            _check_fits(module, x)
            out = next_fun(*args, **kwargs)
            r_out, j_out = _propagate(module, r_in, j_in, x.shape)
            self.rows.append((module.scope.path, module, tuple(out.shape[1:]), _flops(module, x, out), r_out, j_out))
            self.remember(out, (r_out, j_out))
            return out
        self.frames.append([(r_in, j_in)])
        try:
            out = next_fun(*args, **kwargs)
        finally:
            frame = self.frames.pop()
        if not hasattr(out, "shape"):
            return out
        if id(out) not in self.known:
            self.remember(out, _widest(frame))
        if any(_own_variables(module).values()):  # a layer of its own making (e.g. an RBF output)
            r_out, j_out = self.known[id(out)]
            self.rows.append((module.scope.path, module, tuple(out.shape[1:]), 0, r_out, j_out))
        return out


def _window(module) -> tuple[int, int]:
    if isinstance(module, (nn.Conv, nn.ConvTranspose)):
        k = module.kernel_size[0]
        dilation = (
            module.kernel_dilation[0] if isinstance(module.kernel_dilation, tuple) else (module.kernel_dilation or 1)
        )
        strides = module.strides if module.strides is not None else (1,)
        stride = strides[0] if isinstance(strides, tuple) else strides
        return dilation * (k - 1) + 1, stride
    return module.window, module.stride


def _propagate(module, r, j, input_shape):
    if r is None or isinstance(module, (nn.Dense, layers.GlobalAvgPool, layers.Flatten)):
        return None, None
    if isinstance(module, layers.AdaptiveAvgPool):  # widest cell ceil(H / size), cells H / size apart
        h = input_shape[1]
        return r + (-(-h // module.size) - 1) * j, j * h / module.size
    if isinstance(module, (nn.Conv, layers.Pool)):
        k, s = _window(module)
        return r + (k - 1) * j, j * s
    if isinstance(module, nn.ConvTranspose):
        k, s = _window(module)
        return r + (k - 1) * j / s, j / s
    if isinstance(module, layers.Upsample):
        return r, j / module.factor
    return r, j


def _check_fits(module, x) -> None:
    """A VALID window larger than its input, or an input already reduced to nothing, is a config error."""
    if not isinstance(module, (nn.Conv, layers.Pool)) or x.ndim != 4:
        return
    h, w = x.shape[1:3]
    k, _ = _window(module)
    padding = module.padding
    if padding == "VALID":
        pad = 0
    elif isinstance(padding, int):
        pad = 2 * padding
    elif isinstance(padding, (tuple, list)):
        pad = min(sum(p) for p in padding)  # (low, high) per spatial axis
    else:
        pad = None  # SAME (or CIRCULAR): any input size works
    too_small = min(h, w) < 1 or (pad is not None and min(h, w) + pad < k)
    if too_small:
        path = "/".join(module.scope.path) or type(module).__name__
        raise UserError(
            f"layer '{path}' ({type(module).__name__} {k}x{k}, padding {padding}) cannot run on a {h}x{w} input "
            f"(shape {tuple(x.shape[1:])}): the input is too small after the layers before it. "
            "Use a larger input, fewer downsamplings, or SAME padding."
        )


def _flops(module, x, out) -> int:
    if isinstance(module, nn.Conv):
        k = math.prod(module.kernel_size)
        groups = module.feature_group_count
        return 2 * math.prod(out.shape[1:]) * k * x.shape[-1] // groups
    if isinstance(module, nn.ConvTranspose):
        return 2 * math.prod(x.shape[1:]) * math.prod(module.kernel_size) * out.shape[-1]
    if isinstance(module, nn.Dense):
        return 2 * x.shape[-1] * out.shape[-1]
    return 0


def summarize(model: nn.Module, input_shape: tuple[int, int, int], name: str = "") -> Summary:
    """Trace `model` on one image of `input_shape` without compute and account for every layer."""
    tracer = _Tracer()

    def init():
        with nn.intercept_methods(tracer):
            return model.init(
                {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
                jnp.zeros((1, *input_shape), jnp.float32),
                train=False,
            )

    variables = jax.eval_shape(init)
    params, stats = variables.get("params", {}), variables.get("batch_stats", {})
    rows = []
    for path, module, shape, flops, r, j in tracer.rows:
        own = _own_variables(_subtree(params, path)), _own_variables(_subtree(stats, path))
        rows.append(
            Row(
                "/".join(path),
                _kind(module),
                shape,
                _count(own[0]),
                _count(own[1]),
                flops,
                None if r is None else int(round(r)),
                j,
            )
        )
    trainable, non_trainable = _count(params), _count(stats)
    return Summary(
        name or type(model).__name__,
        tuple(input_shape),
        rows,
        trainable + non_trainable,
        trainable,
        non_trainable,
        sum(r.flops for r in rows),
    )


def _own_variables(tree_or_module) -> dict:
    """Variables held by this level itself, not by its submodules (for a module: per collection)."""
    if isinstance(tree_or_module, nn.Module):
        return {col: _own_variables(tree) for col, tree in tree_or_module.variables.items()}
    return (
        {k: v for k, v in tree_or_module.items() if not isinstance(v, dict)} if isinstance(tree_or_module, dict) else {}
    )


def _kind(module) -> str:
    return f"{module.kind.capitalize()}Pool" if isinstance(module, layers.Pool) else type(module).__name__


def _subtree(tree, path):
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return {}
        tree = tree[key]
    return tree


def _count(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))
