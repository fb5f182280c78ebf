"""Ceiling probe: how much of the CPU train step do the convolution kernel gradients hold?

    flock /tmp/cnn_jax_cpu.lock python benchmarks/wgrad_probe.py [--models seed_cnn,resnet20,allcnn_all_c]
        [--shape-models seed_cnn,resnet20] [--ledger-models seed_cnn,resnet20] [--steps 10] [--repeats 3]
        [--warmup 2] [--out benchmarks/results/wgrad_probe.json]       # ~7.5 min on 2 cores

Not used by the library. `probe_conv` is XLA's convolution (forward and input gradient:
`lax.conv_general_dilated`, NHWC/HWIO) whose kernel gradient is computed on the host by PyTorch's
`aten.convolution_backward` (output_mask [False, True, False]: oneDNN's backward-weights convolution)
through `jax.pure_callback`. `pure_callback` hands the callback host copies of its operands; from there
on nothing is copied (`torch.from_numpy` + `permute`: NCHW sizes over NHWC memory, i.e. channels-last,
which oneDNN takes as is); the `torch_nchw` mode copies them to contiguous NCHW first, as PyTorch eager
holds them. The probe is plugged into the project's models as conv_formulations.py's levers are: a
conv function for flax's nn.Conv, registered as train_step_speed.py variants.

Measured, each in its own process through train_step_speed.py's spawn and workers (batch 128, random
data, medians of windows):

  check   gradients of one batch's loss, the probe's against the library's (XLA's), as the largest
          per-parameter max|difference| / max|XLA's|; beside it, the same for conv_formulations'
          `wgrad_matmul_conv` (another float32 summation order: a yardstick for rounding);
  steps   train img/s of the library default, the probe (`wgrad_torch`) and PyTorch eager; for the
          ledger models also `wgrad_xla` (the probe's custom_vjp with XLA's own kernel gradient: a
          control), `wgrad_zero` (kernel gradients replaced by zeros: the step without them) and
          `wgrad_callback_zero` (a host callback returning zeros: that step plus the callbacks' cost);
  shapes  per distinct conv of a model, ms per call (at least MIN_SHAPE_WINDOWS windows): XLA's kernel
          gradient alone (jitted, with the project's XLA flags), torch's convolution_backward alone
          (channels-last and NCHW; torch on every core), the probe's callback, a callback returning
          zeros (the callback's overhead), and XLA's against oneDNN's forward and input gradient.

The summary estimates the step if the kernel gradients ran at torch's (NHWC) speed without callback
overhead: `step - sum(XLA wgrad) + sum(torch wgrad)` (isolated timings) and `wgrad_zero step +
sum(torch wgrad)` (XLA's in-step cost, with the recomputation it fuses into them), against PyTorch
eager's step; and both again with each forward and input-gradient conv taken by oneDNN where faster.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_step_speed as tss  # noqa: E402  (before cnn_jax: it records the user's XLA_FLAGS)

NHWC = ("NHWC", "HWIO", "NHWC")
MODES = ("torch", "torch_nchw", "xla", "zero", "callback_zero")  # how the probe's kernel gradient is made
STEP_VARIANTS = {
    "wgrad_torch": "torch",
    "wgrad_torch_nchw": "torch_nchw",
    "wgrad_xla": "xla",
    "wgrad_zero": "zero",
    "wgrad_callback_zero": "callback_zero",
}
STEP_ROWS = (  # the step table's columns
    "project:default",
    "project:wgrad_torch",
    "project:wgrad_xla",
    "project:wgrad_zero",
    "project:wgrad_callback_zero",
    "torch",
)
WINDOW_S = 0.25  # target length of one timing window of a per-shape measurement
MIN_SHAPE_WINDOWS = 5  # per-shape medians take at least this many windows (they are short)
NOT_WRITABLE = "The given NumPy array is not writable"  # callback arguments are read-only views


# ----------------------------------------------------------------------------- the probe convolution


def torch_kernel_grad(x: np.ndarray, g: np.ndarray, kernel_shape, strides, pads, layout: str) -> np.ndarray:
    """oneDNN's kernel gradient (HWIO) of the NHWC input x and output gradient g, via aten.convolution_backward."""
    import torch

    kh, kw, cin, cout = kernel_shape
    # np.asarray of the callback's CPU arrays is a read-only view; permuted, NCHW sizes over NHWC memory
    # (channels_last), still without a copy.
    xt = torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2)
    gt = torch.from_numpy(np.asarray(g)).permute(0, 3, 1, 2)
    weight = torch.empty((cout, cin, kh, kw))  # only its sizes (and memory format) are read
    if layout == "nchw":
        xt, gt = xt.contiguous(), gt.contiguous()
    else:
        weight = weight.contiguous(memory_format=torch.channels_last)
    _, dw, _ = torch.ops.aten.convolution_backward(
        gt, xt, weight, None, list(strides), [p[0] for p in pads], [1, 1], False, [0, 0], 1, [False, True, False]
    )
    return dw.permute(2, 3, 1, 0).contiguous().numpy()


def zeros_kernel_grad(x: np.ndarray, g: np.ndarray, kernel_shape) -> np.ndarray:
    """A host callback that reads nothing and returns zeros: the callback's own cost."""
    return np.zeros(kernel_shape, np.float32)


def xla_conv(x, w, strides, pads):
    from jax import lax

    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=NHWC)


def xla_input_grad(x, w, g, strides, pads):
    """XLA's input gradient of the NHWC conv (x, w) -> y for dL/dy = g."""
    import jax

    return jax.vjp(lambda x_: xla_conv(x_, w, strides, pads), x)[1](g)[0]


def kernel_grad(mode: str, x, w, g, strides, pads):
    """The kernel gradient of the NHWC conv (x, w) -> y for dL/dy = g, made as `mode` says (see MODES)."""
    import jax
    import jax.numpy as jnp

    if mode == "xla":
        return jax.vjp(lambda w_: xla_conv(x, w_, strides, pads), w)[1](g)[0]
    if mode == "zero":
        return jnp.zeros_like(w)
    out = jax.ShapeDtypeStruct(w.shape, jnp.float32)
    if mode == "callback_zero":
        return jax.pure_callback(functools.partial(zeros_kernel_grad, kernel_shape=w.shape), out, x, g)
    if any(lo != hi for lo, hi in pads):  # torch pads symmetrically: pad x here, the conv then pads nothing
        x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)])
        pads = ((0, 0), (0, 0))
    layout = "nchw" if mode == "torch_nchw" else "channels_last"
    callback = functools.partial(torch_kernel_grad, kernel_shape=w.shape, strides=strides, pads=pads, layout=layout)
    return jax.pure_callback(callback, out, x.astype(jnp.float32), g.astype(jnp.float32)).astype(w.dtype)


@functools.cache
def _probe(mode: str):
    """The custom_vjp convolution of `mode`: XLA's forward and input gradient, `kernel_grad(mode)` for the kernel."""
    import jax

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
    def conv(x, w, strides, pads):
        return xla_conv(x, w, strides, pads)

    def forward(x, w, strides, pads):
        return conv(x, w, strides, pads), (x, w)

    def backward(strides, pads, saved, g):
        x, w = saved
        return xla_input_grad(x, w, g, strides, pads), kernel_grad(mode, x, w, g, strides, pads)

    conv.defvjp(forward, backward)
    return conv


def probe_conv(mode: str):
    """A `lax.conv_general_dilated` replacement (as flax's nn.Conv calls it) whose kernel gradient is `mode`'s."""
    import conv_formulations as formulations
    from jax import lax

    def conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
             feature_group_count=1, batch_group_count=1, precision=None, preferred_element_type=None):  # fmt: skip
        dilation = (*(lhs_dilation or ()), *(rhs_dilation or ()))
        if formulations._plain(lhs, rhs, dilation, dimension_numbers, feature_group_count, batch_group_count):
            return lax.conv_general_dilated(
                lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                feature_group_count, batch_group_count, precision, preferred_element_type,
            )  # fmt: skip
        strides = tuple(int(s) for s in window_strides)
        pads = explicit_pads(padding, lhs.shape[1:3], rhs.shape[:2], strides)
        return _probe(mode)(lhs, rhs, strides, pads)

    return conv


def explicit_pads(padding, spatial, kernel, strides) -> tuple[tuple[int, int], ...]:
    """'SAME' / 'VALID' / pairs -> explicit (low, high) pairs, hashable."""
    from jax import lax

    if isinstance(padding, str):
        padding = lax.padtype_to_pads(spatial, kernel, strides, padding)
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def use_torch_threads() -> int:
    """Give PyTorch every core, as train_step_speed's torch worker does; the count."""
    import torch

    torch.set_num_threads(os.cpu_count())
    warnings.filterwarnings("ignore", message=NOT_WRITABLE)
    return torch.get_num_threads()


def probe_variant(mode: str):
    """A train_step_speed variant: the library's program with every conv's kernel gradient made by `mode`."""

    def build(config, input_shape, mean, std) -> tss.ProjectProgram:
        import conv_formulations as formulations

        if mode.startswith("torch"):
            use_torch_threads()
        conv = probe_conv(mode)
        program = tss.library_variant(config, input_shape, mean, std)
        return tss.ProjectProgram(
            train_step=formulations.traced_with(conv, program.train_step),
            eval_step=formulations.traced_with(conv, program.eval_step),
            drive=formulations.traced_with(conv, program.drive),
            init_state=program.init_state,
        )

    return build


def register_variants() -> None:
    for name, mode in STEP_VARIANTS.items():
        tss.PROJECT_VARIANTS[name] = probe_variant(mode)


# ----------------------------------------------------------------------------- workers


def check_worker(model_name: str, opts) -> dict:
    """One batch's parameter gradients: the probe's and wgrad_matmul's against the library's (XLA's)."""
    import conv_formulations as formulations
    import jax
    import optax

    from cnn_jax import tuning  # noqa: F401  (sets the project's XLA flags before JAX starts a backend)
    from cnn_jax.data.preprocess import InputTransform
    from cnn_jax.models import build_model

    use_torch_threads()
    shape, batch_size = tss.INPUT_SHAPES[model_name], opts.batch_size
    images, labels = tss.random_data(batch_size, shape, classes=tss.num_classes(model_name))
    mean, std = tss.channel_stats(images)
    config = tss.project_config(model_name, batch_size)
    state = tss.library_variant(config, shape, mean, std).init_state()
    model = build_model(config.model, num_classes=tss.num_classes(model_name))
    inputs = InputTransform(tuple(mean.tolist()), tuple(std.tolist()))

    def grads(params):
        def loss(p):
            logits, _ = model.apply(
                {"params": p, "batch_stats": state.batch_stats},
                inputs(images),
                train=True,
                rngs={"dropout": jax.random.PRNGKey(1)},
                mutable=["batch_stats"],
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        return jax.grad(loss)(params)

    reference = jax.jit(grads)(state.params)
    matmul = formulations.from_channels(formulations.wgrad_matmul_conv, 1)
    result = {}
    for name, conv in {"wgrad_torch": probe_conv("torch"), "wgrad_matmul (yardstick)": matmul}.items():
        other = jax.jit(formulations.traced_with(conv, grads))(state.params)
        diffs = jax.tree_util.tree_map(relative_difference, reference, other)
        flat = jax.tree_util.tree_leaves_with_path(diffs)
        worst = max(flat, key=lambda kv: kv[1])
        result[name] = {"max_rel_diff": worst[1], "worst_param": jax.tree_util.keystr(worst[0])}
    return result


def relative_difference(a, b) -> float:
    """max|a - b| / max|a| (max|b| where a is all zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(a).max()
    return float(np.abs(a - b).max() / scale) if scale else float(np.abs(b).max())


def model_convs(model_name: str, batch_size: int) -> list[dict]:
    """The model's distinct convolutions (input shape, kernel shape, strides, explicit padding) and their counts."""
    import conv_formulations as formulations
    import jax
    import jax.numpy as jnp
    from jax import lax

    from cnn_jax.models import build_model

    found: dict[tuple, int] = {}

    def record(lhs, rhs, window_strides, padding, *args, **kwargs):
        strides = tuple(int(s) for s in window_strides)
        key = (lhs.shape, rhs.shape, strides, explicit_pads(padding, lhs.shape[1:3], rhs.shape[:2], strides))
        found[key] = found.get(key, 0) + 1
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, *args, **kwargs)

    model = build_model(model_name, num_classes=tss.num_classes(model_name))
    shape = (batch_size, *tss.INPUT_SHAPES[model_name])
    with formulations.with_conv(record):
        jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False))
    return [
        {"x": list(x), "w": list(w), "strides": list(s), "pads": [list(p) for p in pads], "count": n}
        for (x, w, s, pads), n in found.items()
    ]


def ms_per_call(call, repeats: int) -> float:
    """Median ms of `call()` (which returns once done) over `repeats` windows of ~WINDOW_S each."""
    call()  # compile / warm up
    t0 = time.perf_counter()
    call()
    calls = max(2, math.ceil(WINDOW_S / max(time.perf_counter() - t0, 1e-6)))
    rates = tss.window_rates(lambda n: [call() for _ in range(n)], calls, repeats, 1)
    return 1000.0 / statistics.median(rates)


def run_blocking(fn, *args):
    """fn(*args), waited for."""
    import jax

    return jax.block_until_ready(fn(*args))


def torch_fwd_dgrad(x: np.ndarray, w: np.ndarray, g: np.ndarray, strides, pads):
    """Callables timing oneDNN's forward and input-gradient convolution on channels-last (NHWC) tensors."""
    import torch

    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    gt = torch.from_numpy(g).permute(0, 3, 1, 2)
    wt = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
    stride, padding = list(strides), [p[0] for p in pads]

    def forward():
        return torch.ops.aten.convolution(xt, wt, None, stride, padding, [1, 1], False, [0, 0], 1)

    def input_grad():
        return torch.ops.aten.convolution_backward(
            gt, xt, wt, None, stride, padding, [1, 1], False, [0, 0], 1, [True, False, False]
        )

    return forward, input_grad


def shapes_worker(model_name: str, opts) -> dict:
    """Per distinct conv, ms per call: XLA's kernel gradient (and forward, input gradient) against torch's,
    the probe's callback and an empty one."""
    import jax

    from cnn_jax import tuning  # sets the project's XLA flags before JAX starts a backend

    threads = use_torch_threads()
    windows = max(opts.repeats, MIN_SHAPE_WINDOWS)
    rows = []
    for index, conv in enumerate(model_convs(model_name, opts.batch_size)):
        strides, pads = tuple(conv["strides"]), tuple(tuple(p) for p in conv["pads"])
        rng = np.random.default_rng(0)
        x = rng.standard_normal(conv["x"], np.float32)
        w = rng.standard_normal(conv["w"], np.float32)
        y_shape = jax.eval_shape(functools.partial(xla_conv, strides=strides, pads=pads), x, w).shape
        g = rng.standard_normal(y_shape, np.float32)
        xd, wd, gd = (jax.device_put(a) for a in (x, w, g))
        xt, tpads = x, pads
        if any(lo != hi for lo, hi in pads):  # torch pads symmetrically: pad x itself
            xt, tpads = np.pad(x, ((0, 0), *pads, (0, 0))), ((0, 0), (0, 0))
        jitted = {
            "xla_wgrad": functools.partial(kernel_grad, "xla"),
            "probe_callback": functools.partial(kernel_grad, "torch"),
            "empty_callback": functools.partial(kernel_grad, "callback_zero"),
            "xla_fwd": lambda x_, w_, g_, strides, pads: xla_conv(x_, w_, strides, pads),
            "xla_dgrad": lambda x_, w_, g_, strides, pads: xla_input_grad(x_, w_, g_, strides, pads),
        }
        jitted = {k: jax.jit(functools.partial(f, strides=strides, pads=pads)) for k, f in jitted.items()}
        torch_fwd, torch_dgrad = torch_fwd_dgrad(xt, w, g, strides, tpads)
        direct = {
            "torch_wgrad_nhwc": functools.partial(torch_kernel_grad, xt, g, w.shape, strides, tpads, "channels_last"),
            "torch_wgrad_nchw": functools.partial(torch_kernel_grad, xt, g, w.shape, strides, tpads, "nchw"),
            "torch_fwd_nhwc": torch_fwd,
            "torch_dgrad_nhwc": torch_dgrad,
        }
        timings = {k: ms_per_call(functools.partial(run_blocking, f, xd, wd, gd), windows) for k, f in jitted.items()}
        timings.update({k: ms_per_call(f, windows) for k, f in direct.items()})
        xla_dw = np.asarray(jitted["xla_wgrad"](xd, wd, gd))
        rows.append(
            {
                **conv,
                "y": list(y_shape),
                "input_grad_used": index > 0,  # the first conv reads the images: no input gradient in a step
                "kernel_grad_gflop": 2 * math.prod(y_shape) * math.prod(conv["w"][:3]) / 1e9,
                "ms": timings,
                "torch_vs_xla_rel_diff": relative_difference(xla_dw, direct["torch_wgrad_nhwc"]()),
                "callback_vs_xla_rel_diff": relative_difference(
                    xla_dw, np.asarray(jitted["probe_callback"](xd, wd, gd))
                ),
            }
        )
    return {"convs": rows, "torch_threads": threads, "tuning": tuning.describe()}


WORKERS = {"check": check_worker, "shapes": shapes_worker}


# ----------------------------------------------------------------------------- driver


def spawn(impl: str, model_name: str, opts) -> dict:
    """train_step_speed.spawn, with this file as the worker (it knows the probe's variants and workers)."""
    return tss.spawn(impl, model_name, opts, script=str(Path(__file__).resolve()))


def median_rate(row: dict) -> float | None:
    return statistics.median(row["train_rates"]) if "train_rates" in row else None


def conv_totals(shapes: dict) -> dict[str, float]:
    """ms per step of each per-shape timing, summed over the model's convs (input gradients where a step has one)."""
    totals: dict[str, float] = {}
    for conv in shapes["convs"]:
        for key, value in conv["ms"].items():
            used = conv["input_grad_used"] or "dgrad" not in key
            totals[key] = totals.get(key, 0.0) + conv["count"] * value * used
    return totals


def summarize(steps: dict, shapes: dict | None, batch_size: int) -> dict:
    """Step times (ms), per-step sums of the per-shape timings, and the estimated steps against PyTorch eager's."""
    ms = {k: batch_size * 1000.0 / r for k, r in ((k, median_rate(v)) for k, v in steps.items()) if r}
    out: dict = {"step_ms": ms}
    if not shapes or "convs" not in shapes:
        return out
    totals = out["conv_totals_ms"] = conv_totals(shapes)
    default, eager, zero = ms.get("project:default"), ms.get("torch"), ms.get("project:wgrad_zero")
    if default is None:
        return out
    torch_wgrad = totals["torch_wgrad_nhwc"]
    estimates = {"isolated": default - totals["xla_wgrad"] + torch_wgrad}
    if zero is not None:
        estimates["in_step"] = zero + torch_wgrad
        out["xla_wgrad_in_step_ms"] = default - zero
        if "project:wgrad_callback_zero" in ms:
            out["callback_overhead_in_step_ms"] = ms["project:wgrad_callback_zero"] - zero
    out["estimated_step_ms"] = estimates
    # Beyond the kernel gradients: each forward and input-gradient conv to oneDNN (NHWC) where it is faster.
    saved = 0.0
    for conv in shapes["convs"]:
        t, ops = conv["ms"], ("fwd", "dgrad") if conv["input_grad_used"] else ("fwd",)
        saved += conv["count"] * sum(max(0.0, t[f"xla_{op}"] - t[f"torch_{op}_nhwc"]) for op in ops)
    out["estimated_step_all_convs_ms"] = {k: v - saved for k, v in estimates.items()}
    if eager:
        gap = default - eager
        out["gap_to_torch_ms"] = gap
        out["fraction_of_gap_explained"] = {k: (default - v) / gap if gap > 0 else None for k, v in estimates.items()}
        out["estimate_vs_torch"] = {k: eager / v for k, v in estimates.items()}
    return out


def markdown(result: dict) -> str:
    """The three tables: steps, per-shape timings, summary."""
    b = result["settings"]["batch_size"]
    lines = [
        "| model | default img/s | probe (wgrad_torch) | wgrad_xla (control) | wgrad_zero | wgrad_callback_zero |"
        " PyTorch eager | probe grads max rel diff (yardstick) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in result["models"].items():
        rates = {k: median_rate(v) for k, v in m["steps"].items()}
        cells = [f"{rates[k]:,.0f}" if rates.get(k) else "-" for k in STEP_ROWS]
        check = m.get("check", {})
        probe, yard = check.get("wgrad_torch", {}), check.get("wgrad_matmul (yardstick)", {})
        diff = f"{probe['max_rel_diff']:.1e} ({yard['max_rel_diff']:.1e})" if "max_rel_diff" in probe else "-"
        lines.append(f"| {name} | {' | '.join(cells)} | {diff} |")
    lines += [
        "",
        "ms per call, batch " + str(b) + ":",
        "",
        "| model | conv (x -> kernel, stride) | n | XLA wgrad | torch wgrad NHWC | torch wgrad NCHW | probe callback |"
        " empty callback | fwd XLA / torch | dgrad XLA / torch | wgrad torch/XLA rel diff |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in result["models"].items():
        for c in m.get("shapes", {}).get("convs", []):
            t = c["ms"]
            dgrad = f"{t['xla_dgrad']:.2f} / {t['torch_dgrad_nhwc']:.2f}" if c["input_grad_used"] else "(not used)"
            lines.append(
                f"| {name} | {'x'.join(map(str, c['x'][1:]))} -> {'x'.join(map(str, c['w']))}, s{c['strides'][0]} "
                f"| {c['count']} | {t['xla_wgrad']:.2f} | {t['torch_wgrad_nhwc']:.2f} | {t['torch_wgrad_nchw']:.2f} | "
                f"{t['probe_callback']:.2f} | {t['empty_callback']:.2f} | {t['xla_fwd']:.2f} / "
                f"{t['torch_fwd_nhwc']:.2f} | {dgrad} | {c['torch_vs_xla_rel_diff']:.1e} |"
            )
    lines += [
        "",
        "| model | step ms | XLA wgrad ms: isolated sum / in step (default - wgrad_zero) | torch wgrad NHWC sum |"
        " callback overhead in step | est. step ms: isolated / in-step | PyTorch eager ms | share of gap explained |"
        " est. step, + fwd and dgrad to oneDNN where faster: isolated / in-step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in result["models"].items():
        s = m["summary"]
        if "estimated_step_ms" not in s:
            continue
        tot, est, frac = s["conv_totals_ms"], s["estimated_step_ms"], s.get("fraction_of_gap_explained", {})
        every = s["estimated_step_all_convs_ms"]
        lines.append(
            f"| {name} | {s['step_ms']['project:default']:.0f} | {tot['xla_wgrad']:.0f} / "
            f"{cell(s, 'xla_wgrad_in_step_ms')} | {tot['torch_wgrad_nhwc']:.0f} | "
            f"{cell(s, 'callback_overhead_in_step_ms')} | {cell(est, 'isolated')} / {cell(est, 'in_step')} | "
            f"{cell(s['step_ms'], 'torch')} | {cell(frac, 'isolated', '{:.0%}')} / {cell(frac, 'in_step', '{:.0%}')} "
            f"| {cell(every, 'isolated')} / {cell(every, 'in_step')} |"
        )
    return "\n".join(lines)


def cell(d: dict, key: str, form: str = "{:.0f}") -> str:
    return form.format(d[key]) if d.get(key) is not None else "-"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="seed_cnn,resnet20,allcnn_all_c", help="models for the check and steps")
    parser.add_argument("--shape-models", default="seed_cnn,resnet20", help="models timed per conv shape")
    parser.add_argument("--ledger-models", default="seed_cnn,resnet20", help="models that also get --ledger-variants")
    parser.add_argument("--variants", default="default,wgrad_torch", help="project variants for every model")
    parser.add_argument("--ledger-variants", default="wgrad_xla,wgrad_zero,wgrad_callback_zero")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch eager's step")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/wgrad_probe.json"))
    args = parser.parse_args(argv)
    known = {*tss.PROJECT_VARIANTS, *STEP_VARIANTS}
    for flag, value, allowed in (
        ("--models", args.models, tss.INPUT_SHAPES),
        ("--shape-models", args.shape_models, tss.INPUT_SHAPES),
        ("--ledger-models", args.ledger_models, tss.INPUT_SHAPES),
        ("--variants", args.variants, known),
        ("--ledger-variants", args.ledger_variants, known),
    ):
        unknown = [x for x in value.split(",") if x and x not in allowed]
        if unknown:
            parser.error(f"{flag}: unknown {unknown[0]!r}; allowed: {', '.join(allowed)}")
    return args


def split(value: str) -> list[str]:
    return [x for x in value.split(",") if x]


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    register_variants()
    if "--worker" in argv:
        opts = tss.parse_args(argv)
        impl, model_name = opts.worker
        if impl not in WORKERS:
            tss.main(argv)
            return
        print(tss.RESULT_PREFIX + json.dumps(WORKERS[impl](model_name, opts)), flush=True)
        return
    args = parse_args(argv)
    opts = tss.parse_args(  # the options train_step_speed's spawn passes on to its workers
        [f"--steps={args.steps}", f"--repeats={args.repeats}", f"--warmup={args.warmup}"]
        + [f"--batch-size={args.batch_size}", "--epoch-images=0"]
    )
    if getattr(opts, "torch_device", "cpu") == "auto":
        opts.torch_device = "cpu"  # this probe is about the CPU
    print(
        f"{os.cpu_count()} CPU cores ({tss.cpu_model()}), batch {args.batch_size}, {args.repeats} windows of "
        f"{args.steps} steps after {args.warmup} warm-up steps; random data (speed only)",
        flush=True,
    )
    t_start = time.perf_counter()
    models = {}
    for name in dict.fromkeys(split(args.models) + split(args.shape_models)):
        entry = models.setdefault(name, {"steps": {}})
        if name in split(args.models):
            entry["check"] = spawn("check", name, opts)
            print(f"  {name} check: {entry['check']}", flush=True)
        if name in split(args.shape_models):
            entry["shapes"] = spawn("shapes", name, opts)
            print(f"  {name} shapes: {len(entry['shapes'].get('convs', []))} convs "
                  f"{entry['shapes'].get('error', '')}", flush=True)  # fmt: skip
        if name not in split(args.models):
            continue
        variants = split(args.variants) + (split(args.ledger_variants) if name in split(args.ledger_models) else [])
        impls = [f"project:{v}" for v in dict.fromkeys(variants)] + ([] if args.no_torch else ["torch"])
        for impl in impls:
            row = spawn(impl, name, opts)
            entry["steps"][impl] = row
            rate = median_rate(row)
            print(f"  {name} {impl}: " + (f"{rate:.0f} img/s train" if rate else row.get("error", "?")), flush=True)
    for entry in models.values():
        entry["summary"] = summarize(entry["steps"], entry.get("shapes"), args.batch_size)
    result = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": "random data: speed only",
        "probe": "XLA forward and input gradient; kernel gradient by torch.ops.aten.convolution_backward "
        "(oneDNN) in a jax.pure_callback, zero-copy channels-last views",
        "wall_s": time.perf_counter() - t_start,
        "models": models,
        "provenance": tss.provenance_info(),
    }
    table = markdown(result)
    result["markdown"] = table
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print("\n" + table + f"\n\nwritten: {args.out} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
