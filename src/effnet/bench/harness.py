"""Timing and reporting: alternating medians, thread control, result tables and JSON."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..io_utils import atomic_write_text


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_alternating(fns: dict[str, Callable[[], Any]], repeats: int = 7, min_time: float = 0.3,
                     warmup: int = 2, device: torch.device | str = "cpu",
                     progress: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each function, `repeats` rounds, alternating, order rotated each round.

    Each measurement repeats a call enough times to last `min_time` seconds.
    """
    device = torch.device(device)
    calls: dict[str, int] = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        calls[name] = max(1, math.ceil(min_time / max(time.perf_counter() - t0, 1e-6)))
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            fn, n = fns[name], calls[name]
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            _sync(device)
            out[name].append((time.perf_counter() - t0) / n)
        if progress:
            progress(f"round {r + 1}/{repeats}")
    return out


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run with `n` intra-op threads (None: leave as is)."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _autocast(device: torch.device, amp: bool):
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _max_diff(a: Any, b: Any) -> float:
    if isinstance(a, (list, tuple)):
        return max(_max_diff(x, y) for x, y in zip(a, b, strict=True))
    a = torch.as_tensor(a).float().cpu()
    b = torch.as_tensor(b).float().cpu()
    return float((a - b).abs().max())


@dataclass
class Row:
    """One measured implementation in one setting."""

    impl: str
    batch: int
    seconds: list[float]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.batch / statistics.median(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        return {"impl": self.impl, "batch": self.batch, "images_per_s": self.images_per_s,
                "median_s": statistics.median(self.seconds), "seconds": self.seconds,
                **self.extra}




def describe_device(dev: torch.device) -> str:
    """The device in words: GPU name, or CPU model and thread count."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    name = ""
    with contextlib.suppress(OSError):
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        name = m.group(1).strip() if m else ""
    return f"{name or 'CPU'} ({os.cpu_count()} logical cores)"


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v / 2**20:,.0f}"


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of a benchmark's results, ratios against the baseline."""
    task = results["task"]
    lines = []
    if task == "inference":
        b = results["baseline"]
        lines.append(f"{results['model']} inference @{results['resolution']}px on "
                     f"{results['device']}, {results['threads']} threads"
                     f"{', bf16 autocast' if results['amp'] else ''}; medians")
        lines.append(f"{'impl':<16}{'batch':>6}{'img/s':>10}{'x ' + b:>9}{'GFLOP/s':>9}"
                     f"{'max|diff|':>11}")
        for r in results["rows"]:
            lines.append(f"{r['impl']:<16}{r['batch']:>6}{r['images_per_s']:>10.1f}"
                         f"{r.get('x_' + b, float('nan')):>9.2f}{r['gflops']:>9.1f}"
                         f"{r['max_abs_diff']:>11.1e}")
    elif task == "training":
        b = results["baseline"]
        lines.append(f"{results['model']} training step @{results['resolution']}px, batch "
                     f"{results['rows'][0]['batch']}, on {results['device']}, "
                     f"{results['threads']} threads"
                     f"{', bf16 autocast' if results['amp'] else ''}"
                     f"{', channels_last' if results['channels_last'] else ''}; medians")
        lines.append(f"{'impl':<20}{'img/s':>8}{'x ' + b:>9}{'saved MiB':>11}{'x ' + b:>9}"
                     f"{'peak MiB':>10}{'x ' + b:>9}")
        for r in results["rows"]:
            lines.append(f"{r['impl']:<20}{r['images_per_s']:>8.2f}"
                         f"{r.get('x_' + b, float('nan')):>9.2f}{_mib(r['saved_bytes']):>11}"
                         f"{r.get('saved_x_' + b, float('nan')):>9.2f}"
                         f"{_mib(r.get('peak_bytes')):>10}"
                         f"{r.get('peak_x_' + b, float('nan')):>9.2f}")
    elif task == "table4":
        lat, p = results["latency_s"], results["paper"]
        lines.append(f"Paper Table 4 on {results['device']}, batch 1, {results['threads']} "
                     "thread(s); median latency")
        for k, v in lat.items():
            lines.append(f"  {k:<14}{v * 1e3:>9.1f} ms")
        lines.append(f"  ResNet-152 / B1, both eager:     {results['speedup_eager']:.2f}x")
        lines.append(f"  ResNet-152 / B1, both optimized: {results['speedup_optimized']:.2f}x")
        macs = results["macs"]
        lines.append(f"  paper: {p['resnet152_s']} s / {p['b1_s']} s = {p['speedup']}x "
                     f"(MACs ratio {macs['resnet152'] / macs['b1']:.1f}x)")
    elif task == "limits":
        dw = results["depthwise"]
        lines.append(f"Machine limits on {results['device']}, {results['threads']} threads")
        lines.append(f"  matmul peak (2048^3 fp32):  {results['matmul_gflops']:.1f} GFLOP/s")
        lines.append(f"  copy bandwidth:             {results['copy_gbs']:.1f} GB/s")
        lines.append(f"  {dw['model']} depthwise convs at batch {dw['batch']}: {dw['layers']} "
                     f"layers, {dw['macs'] / 1e6:.1f} M MACs, {dw['bytes'] / 2**20:.1f} MiB "
                     f"moved at least ({dw['flops_per_byte']:.2f} FLOP/byte)")
        lines.append(f"    bytes-moved bound {dw['bound_s'] * 1e3:.2f} ms; measured NCHW "
                     f"{dw['nchw_s'] * 1e3:.2f} ms ({dw['nchw_x_bound']:.1f}x the bound), "
                     f"channels_last {dw['channels_last_s'] * 1e3:.2f} ms "
                     f"({dw['channels_last_x_bound']:.1f}x)")
        for r in results.get("fraction_of_peak", []):
            lines.append(f"  {r['impl']:<16} batch {r['batch']:>3}: {r['gflops']:6.1f} GFLOP/s"
                         f" = {100 * r['fraction']:.1f}% of the matmul peak")
    elif task == "memory":
        lines.append(f"Kept for backward by one training forward of {results['model']} "
                     f"@{results['resolution']}px, batch {results['batch']} (MiB)")
        impls = list(results["impls"])
        for key, label in (("by_op", "op"), ("by_role", "role")):
            table: dict[str, dict[str, int]] = {}
            for impl in impls:
                for r in results["impls"][impl][key]:
                    table.setdefault(r[label], {})[impl] = r["bytes"]
            lines.append(f"{label:<34}" + "".join(f"{i:>16}" for i in impls))
            for k in sorted(table, key=lambda k: -max(table[k].values())):
                lines.append(f"{k[:33]:<34}" + "".join(f"{_mib(table[k].get(i)):>16}"
                                                       for i in impls))
            lines.append(f"{'total':<34}" + "".join(
                f"{_mib(sum(r['bytes'] for r in results['impls'][i][key])):>16}"
                for i in impls))
            lines.append("")
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write results as JSON atomically (see `effnet.io_utils.atomic_write`)."""
    atomic_write_text(path, json.dumps(results, indent=1, default=str))
    return Path(path)


def _add_ratios(results: dict[str, Any], key: str = "images_per_s") -> None:
    rows: list[Row] = results["rows"]
    base = {r.batch: r.images_per_s for r in rows if r.impl == results["baseline"]}
    out = []
    for r in rows:
        d = r.as_dict()
        if r.batch in base:
            d["x_" + results["baseline"]] = r.images_per_s / base[r.batch]
        out.append(d)
    results["rows"] = out


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dev: torch.device,
                amp: bool) -> Callable[[], float]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9)

    def step() -> float:
        with _autocast(dev, amp):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def _batch(batch: int, resolution: int, dev: torch.device,
           channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 3, resolution, resolution, generator=g).to(dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), generator=g).to(dev)
    return x, y


def _no_grad_call(m: nn.Module, x: torch.Tensor) -> Any:
    with torch.inference_mode():
        return m(x)


