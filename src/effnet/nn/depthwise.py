"""Depthwise convolutions that train fast on every x86 CPU.

MBConv's kxk depthwise convolution (paper Table 1) has two costs on CPU that
this module removes, without changing what is computed beyond float rounding:

* **Kernel cropping.** On a map smaller than the kernel most taps only ever
  meet padding: a 5x5 kernel with padding 2 on a 1x1 map reads its centre tap
  alone, on a 2x2 map its central 3x3. :func:`crop_window` finds the taps that
  meet data for a given size, stride and padding; the conv runs with those
  taps only (exact: the others multiply zeros), in training and inference.
* **The weight gradient.** oneDNN computes a depthwise convolution's weight
  gradient by im2col and one small GEMM per channel on CPUs without AVX-512
  (`x64:gemm:jit` in `ONEDNN_VERBOSE`), and with 16x16 channel blocks on
  AVX-512: 10-200x its forward on the small maps of the proxies and of B0 at
  32 px. Here it is a direct sum over pixels, vectorised along the channels of
  a channels_last tensor, with the taps of a kernel row in registers (a small C
  kernel, `_dwgrad.c`, built with the machine's compiler on first use: see
  :mod:`effnet.nn.native`).
  Which of the two computes a layer's weight gradient is measured, not
  assumed: the first backward of each shape times both and keeps the faster
  (which one wins depends on the ISA, the channels and the map size; see
  `benchmarks/bench_depthwise.py`). The choices are kept on disk per CPU, ISA
  and thread count (`depthwise-choices.json` in effnet's cache folder), so a
  resumed run takes the same path as the run it continues. Forward and input
  gradient stay oneDNN's.

Modules keep nn.Conv2d's parameters and state-dict keys; under tracing, ONNX
export and torch.compile they run a plain `F.conv2d`, so exported graphs
hold no custom op and no weight slice.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F

from ..cost import crop_window
from ..machine import cpu_model, onednn_isa
from .native import weight_grad_kernel

BACKENDS = ("auto", "direct", "onednn")
_ENV = "EFFNET_DEPTHWISE_GRAD"
_state = threading.local()

Pads = tuple[int, int, int, int]  # (top, bottom, left, right)


def _cropped(x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
             pads: Pads) -> tuple[tuple[slice, slice], Pads]:
    """The weight slices of the taps that meet data, and the padding that goes with them."""
    return _crop_geometry(x.shape[-2], x.shape[-1], weight.shape[-2], weight.shape[-1],
                          tuple(stride), tuple(pads))


@functools.lru_cache(maxsize=1024)
def _crop_geometry(h: int, w: int, kh: int, kw: int, stride: tuple[int, int],
                   pads: Pads) -> tuple[tuple[slice, slice], Pads]:
    """:func:`_cropped` for one geometry, computed once (each layer asks several times a step)."""
    top, bottom, left, right = pads
    lh, hh, top, bottom = crop_window(h, kh, stride[0], top, bottom)
    lw, hw, left, right = crop_window(w, kw, stride[1], left, right)
    return (slice(lh, hh + 1), slice(lw, hw + 1)), (top, bottom, left, right)


def _padded(x: torch.Tensor, pads: Pads) -> tuple[torch.Tensor, list[int]]:
    """x and the conv padding for (top, bottom, left, right): symmetric pads stay in the conv."""
    top, bottom, left, right = pads
    if top == bottom and left == right:
        return x, [top, left]
    return F.pad(x, (left, right, top, bottom)), [0, 0]


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
          stride: tuple[int, int], pads: Pads) -> torch.Tensor:
    """A depthwise F.conv2d with (top, bottom, left, right) padding, symmetric or not."""
    xin, padding = _padded(x, pads)
    return F.conv2d(xin, weight, bias, stride, padding, 1, weight.shape[0])


@contextlib.contextmanager
def weight_grad_backend(name: str) -> Iterator[None]:
    """Use `name` ('auto', 'direct' or 'onednn') for depthwise weight gradients inside.

    For benchmarks and tests; the environment variable EFFNET_DEPTHWISE_GRAD
    sets the default of a whole process.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown depthwise gradient backend {name!r}: use {BACKENDS}")
    old = getattr(_state, "backend", None)
    _state.backend = name
    try:
        yield
    finally:
        _state.backend = old


def _backend() -> str:
    name = getattr(_state, "backend", None) or os.environ.get(_ENV, "auto")
    return name if name in BACKENDS else "auto"


def _direct_possible(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and weight_grad_kernel() is not None)


Key = tuple  # (threads, dtype, input shape, cropped kernel, stride, cropped pads)
_CHOICES: dict[Key, str] = {}
_CHOICES_FILE = "depthwise-choices.json"


def _choice_key(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, int],
                pads: Pads) -> Key:
    """What a weight-gradient choice depends on within a process: threads, dtype, shape."""
    return (torch.get_num_threads(), x.dtype, tuple(x.shape), kernel, stride, pads)


def _stored_key(key: Key) -> str:
    """The key in the choices file, which other processes and machines share: CPU and ISA too."""
    return "|".join(map(str, (cpu_model(), onednn_isa(), *key)))


def _known_path(key: Key, x: torch.Tensor) -> str | None:
    """'direct' or 'onednn' where it is forced, the only one possible or already chosen in this
    process; None where it is still to be looked up or measured."""
    backend = _backend()
    if backend == "onednn" or not _direct_possible(x):
        return "onednn"
    if backend == "direct":
        return "direct"
    return _CHOICES.get(key)


def _stored_choices() -> dict[str, str]:
    from ..io_utils import cache_dir

    with contextlib.suppress(OSError, ValueError):
        data = json.loads((cache_dir() / _CHOICES_FILE).read_text())
        if isinstance(data, dict):
            return {str(k): str(v) for k, v in data.items()}
    return {}


def _store_choice(key: str, choice: str) -> None:
    """Add one choice to the file, keeping every choice already there (first one wins)."""
    from ..io_utils import atomic_write_json, cache_dir

    with contextlib.suppress(OSError):
        stored = _stored_choices()
        if key not in stored:
            atomic_write_json(cache_dir() / _CHOICES_FILE, {**stored, key: choice})


def _fastest(fns: dict[str, Any], rounds: int = 3) -> tuple[str, Any]:
    """The name of the fastest function (best of `rounds` timed calls after one warm-up call)
    and its result; a tie goes to the first."""
    results = {name: fn() for name, fn in fns.items()}  # warm-up: JIT compile, caches
    best: dict[str, float] = {}
    for name, fn in fns.items():
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best[name] = min(times)
    name = min(best, key=lambda n: (best[n], list(fns).index(n)))
    return name, results[name]


def _weight_grad_path(grad: torch.Tensor, x: torch.Tensor, w: torch.Tensor,
                      stride: tuple[int, int], pads: Pads, onednn: Any) -> str:
    """'direct' or 'onednn': which computes the weight gradient of this (cropped) conv.

    With 'auto', the first call for a shape on this machine times both (`onednn`
    computes oneDNN's weight gradient) and keeps the faster; later calls and
    processes reuse the choice.
    """
    kernel = tuple(w.shape[-2:])
    key = _choice_key(x, kernel, stride, pads)
    choice = _known_path(key, x)
    if choice is None:
        stored = _stored_key(key)
        choice = _stored_choices().get(stored)
        if choice is None:
            choice, _ = _fastest({"onednn": onednn, "direct": lambda: direct_weight_grad(
                grad, x, kernel, stride, pads)})  # type: ignore[arg-type]
            _store_choice(stored, choice)
        _CHOICES[key] = choice
    return choice


_POOL: tuple[int, int, ThreadPoolExecutor] | None = None


def _pool(threads: int) -> ThreadPoolExecutor:
    """A thread pool of `threads` workers, made again after a fork or a change of size."""
    global _POOL
    if _POOL is None or _POOL[:2] != (os.getpid(), threads):
        _POOL = (os.getpid(), threads, ThreadPoolExecutor(threads, "effnet-dw"))
    return _POOL[2]


def direct_weight_grad(grad: torch.Tensor, x: torch.Tensor, kernel: tuple[int, int],
                       stride: tuple[int, int], pads: Pads) -> torch.Tensor:
    """d loss / d weight of a depthwise conv, as a direct sum over output pixels.

    `x` is the conv's unpadded input, `grad` its output gradient; `pads` is
    (top, bottom, left, right). Returns a (C, 1, kh, kw) tensor. Per image the
    sum runs in the input's dtype, across images in float64. The channels are
    split between torch's intra-op threads; the result does not depend on
    their number.
    """
    kernels = weight_grad_kernel()
    if kernels is None:
        raise RuntimeError("the direct depthwise gradient needs a C compiler (cc, gcc or clang)")
    kern = kernels[x.dtype]
    n, c, h, w = x.shape
    oh, ow = grad.shape[-2:]
    xn = x.detach().contiguous(memory_format=torch.channels_last)
    gn = grad.detach().contiguous(memory_format=torch.channels_last)
    out = torch.zeros(kernel[0], kernel[1], c, dtype=torch.float64)
    args = (xn.data_ptr(), gn.data_ptr(), out.data_ptr(), n, h, w, c, oh, ow, *kernel, *stride,
            pads[0], pads[2])
    blocks = -(-c // 16)  # the kernel vectorises 16 channels at a time
    threads = max(1, min(torch.get_num_threads(), blocks))
    if threads == 1:
        kern(*args, 0, c)
    else:
        bounds = [min(c, 16 * round(i * blocks / threads)) for i in range(threads + 1)]
        jobs = [_pool(threads).submit(kern, *args, lo, hi)
                for lo, hi in zip(bounds, bounds[1:], strict=False)]
        for job in jobs:
            job.result()
    return out.to(x.dtype).permute(2, 0, 1).unsqueeze(1)


def _scale_backward(grad: torch.Tensor, x: torch.Tensor, w: torch.Tensor,
                    stride: tuple[int, int], mask: tuple[bool, ...]
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Input and weight gradients of y = x[::sh, ::sw] * w, a conv cropped to one tap."""
    gx = gw = None
    if mask[0]:
        gs = grad * w.reshape(1, -1, 1, 1)
        if stride == (1, 1):
            gx = gs
        else:
            gx = x.new_zeros(x.shape).contiguous(memory_format=torch.channels_last)
            gx[:, :, ::stride[0], ::stride[1]] = gs
    if mask[1]:
        gw = (grad * x[:, :, ::stride[0], ::stride[1]]).sum((0, 2, 3)).reshape(w.shape)
    return gx, gw


def depthwise_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                       stride: tuple[int, int], pads: Pads,
                       mask: tuple[bool, bool, bool]) -> tuple[torch.Tensor | None, ...]:
    """Gradients (input, weight, bias) of :func:`depthwise_conv2d`'s plain computation.

    The weight gradient has the full kernel's shape: taps that only meet
    padding get zero, as they would from autograd.
    """
    (rows, cols), cpads = _cropped(x, weight, stride, pads)
    w = weight[:, :, rows, cols]
    xin, padding = _padded(x, cpads)

    def onednn(which: list[bool]) -> tuple[torch.Tensor, ...]:
        return torch.ops.aten.convolution_backward(grad, xin, w, None, list(stride), padding,
                                                   [1, 1], False, [0, 0], w.shape[0], which)

    gx = gwc = gw = gb = None
    direct = False
    if w.shape[-2:] == (1, 1) and not any(cpads):  # depthwise_forward's per-channel scale
        gx, gwc = _scale_backward(grad, x, w, stride, mask)
    else:
        direct = mask[1] and _weight_grad_path(grad, x, w, stride, cpads,
                                               lambda: onednn([False, True, False])[1]) == "direct"
        if mask[0] or (mask[1] and not direct):  # one oneDNN call for all it computes
            gx, gwc, _ = onednn([mask[0], mask[1] and not direct, False])
            if gx is not None and xin is not x:  # the inverse of the padding (or cropping) of x
                top, bottom, left, right = cpads
                gx = F.pad(gx, (-left, -right, -top, -bottom))
    if direct:
        gwc = direct_weight_grad(grad, x, tuple(w.shape[-2:]), stride, cpads)  # type: ignore[arg-type]
    if gwc is not None:
        if gwc.shape == weight.shape:
            gw = gwc
        else:
            gw = weight.new_zeros(weight.shape)
            gw[:, :, rows, cols] = gwc
    if mask[2]:
        gb = grad.sum((0, 2, 3))
    return gx, gw, gb


class _DepthwiseConv(torch.autograd.Function):
    """A depthwise conv whose backward is :func:`depthwise_backward`."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, pads):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, pads, bias is not None)
        return depthwise_forward(x, weight, bias, stride, pads)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, pads, has_bias = ctx.geometry
        need = ctx.needs_input_grad
        gx, gw, gb = depthwise_backward(grad, x, weight, stride, pads,
                                        (need[0], need[1], need[2] and has_bias))
        return gx, gw, gb, None, None


def _plain(x: torch.Tensor) -> bool:
    """Run the plain F.conv2d: while tracing, exporting or compiling."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling())


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     stride: tuple[int, int], pads: Pads) -> torch.Tensor:
    """A depthwise conv (groups = channels, dilation 1) with kernel cropping and a fast backward.

    `pads` is (top, bottom, left, right). Equal to F.conv2d on the padded
    input, to float rounding, in value and in every gradient.
    """
    if _plain(x):
        return _conv(x, weight, bias, stride, pads)
    if (torch.is_grad_enabled() and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
            and (x.requires_grad or weight.requires_grad)):
        (rows, cols), cpads = _cropped(x, weight, stride, pads)
        kernel = (rows.stop - rows.start, cols.stop - cols.start)
        if (kernel == tuple(weight.shape[-2:])
                and _known_path(_choice_key(x, kernel, stride, cpads), x) == "onednn"):
            # Nothing to crop and oneDNN computes the weight gradient: plain autograd, which
            # makes the same oneDNN call as depthwise_backward would, without its overhead.
            return _conv(x, weight, bias, stride, pads)
        return _DepthwiseConv.apply(x, weight, bias, stride, pads)
    return depthwise_forward(x, weight, bias, stride, pads)


def depthwise_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      stride: tuple[int, int], pads: Pads) -> torch.Tensor:
    """The depthwise conv with only the taps that meet data (see :func:`crop_window`)."""
    (rows, cols), cpads = _cropped(x, weight, stride, pads)
    w = weight[:, :, rows, cols]
    if w.shape[-2:] == (1, 1) and not any(cpads):  # one tap left: a per-channel scale
        y = x[:, :, ::stride[0], ::stride[1]] * w.reshape(1, -1, 1, 1)
        return y if bias is None else y + bias.reshape(1, -1, 1, 1)
    return _conv(x, w, bias, stride, cpads)

