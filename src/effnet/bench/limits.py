"""Machine limits: matmul peak, copy bandwidth and the bytes-moved bound of depthwise convs."""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..model_factory import create_model
from .harness import _no_grad_call, describe_device, num_threads, time_alternating
from .records import DepthwiseBound, DepthwiseLayer, InferenceRow, PeakFraction
from .results import LimitsResult


def matmul_peak(n: int = 2048, repeats: int = 5, device: str = "cpu",
                dtype: torch.dtype = torch.float32) -> float:
    """The machine's dense matmul rate in GFLOP/s (2 n^3 per n x n product), median of rounds."""
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    t = time_alternating({"mm": lambda: torch.mm(a, b)}, repeats, min_time=0.5, device=dev)
    return 2 * n**3 / statistics.median(t["mm"]) / 1e9


def copy_bandwidth(mbytes: int = 256, repeats: int = 5, device: str = "cpu") -> float:
    """Memory bandwidth in GB/s of a large tensor copy (bytes read + bytes written)."""
    dev = torch.device(device)
    src = torch.randn(mbytes * 2**20 // 4, device=dev)
    dst = torch.empty_like(src)
    t = time_alternating({"copy": lambda: dst.copy_(src)}, repeats, min_time=0.5, device=dev)
    return 2 * src.nbytes / statistics.median(t["copy"]) / 1e9


def depthwise_bound(name: str = "b0", batch: int = 1, resolution: int | None = None,
                    bandwidth_gbs: float | None = None, repeats: int = 5) -> DepthwiseBound:
    """The bytes-moved lower bound of the depthwise convolutions against their measured time.

    A depthwise k x k conv does k^2 multiply-adds per output element but must
    read its input and write its output once: at least (in + out + weights) x
    4 bytes. With the copy bandwidth B, time >= bytes / B, whatever the
    arithmetic peak. Measured times are for each layer alone (BN folded, bias
    on), NCHW and channels_last.
    """
    model = create_model(name).eval()
    res = resolution or model.pretrained_cfg["input_size"][-1]
    shapes: list[tuple[nn.Conv2d, tuple[int, ...]]] = []

    def hook(mod: nn.Module, args: Any, _out: Any) -> None:
        if isinstance(mod, nn.Conv2d) and mod.groups > 1 and mod.groups == mod.in_channels:
            shapes.append((mod, tuple(args[0].shape)))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(batch, 3, res, res))
    for h in handles:
        h.remove()
    bw = bandwidth_gbs or copy_bandwidth()
    fns: dict[str, Callable[[], Any]] = {}
    layers: list[DepthwiseLayer] = []
    for i, (conv, shape) in enumerate(shapes):
        with torch.no_grad():
            out = conv(torch.zeros(shape))
        nbytes = 4 * (math.prod(shape) + out.numel() + conv.weight.numel())
        macs = out.numel() * conv.kernel_size[0] * conv.kernel_size[1]
        layers.append(DepthwiseLayer(i, tuple(shape), conv.kernel_size[0], conv.stride[0],
                                     macs, nbytes))
        c = copy.deepcopy(conv)
        c.bias = nn.Parameter(torch.zeros(c.out_channels))
        xs = torch.randn(shape)
        ccl = copy.deepcopy(c).to(memory_format=torch.channels_last)
        xcl = xs.contiguous(memory_format=torch.channels_last)
        fns[f"nchw{i}"] = (lambda c=c, xs=xs: _no_grad_call(c, xs))
        fns[f"cl{i}"] = (lambda c=ccl, xs=xcl: _no_grad_call(c, xs))
    t = time_alternating(fns, repeats, min_time=0.02, warmup=1)
    nchw = sum(statistics.median(t[f"nchw{i}"]) for i in range(len(shapes)))
    cl = sum(statistics.median(t[f"cl{i}"]) for i in range(len(shapes)))
    return DepthwiseBound(model=name, batch=batch, resolution=res, bandwidth_gbs=bw,
                          nchw_s=nchw, channels_last_s=cl, per_layer=tuple(layers))


def machine_limits(name: str = "b0", threads: int | None = None,
                   inference_rows: Sequence[InferenceRow] | None = None) -> LimitsResult:
    """Matmul peak, copy bandwidth, the depthwise bound, and models' fractions of the peak."""
    with num_threads(threads):
        peak = matmul_peak()
        bw = copy_bandwidth()
        dw = depthwise_bound(name, bandwidth_gbs=bw)
    fractions = tuple(PeakFraction(r.impl, r.batch, r.gflops, r.gflops / peak)
                      for r in inference_rows or ())
    return LimitsResult(threads=threads or torch.get_num_threads(),
                        device=describe_device(torch.device("cpu")), matmul_gflops=peak,
                        copy_gbs=bw, depthwise=dw, fraction_of_peak=fractions)
