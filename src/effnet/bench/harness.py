"""Timing and reporting: alternating medians, thread control, result tables and JSON."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..inference.fastest import alternate
from ..io_utils import atomic_write_text
from ..machine import cpu_model, onednn_isa
from .records import Record


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
    return alternate(fns, repeats, min_time, warmup, lambda: _sync(device), progress)


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


def describe_device(dev: torch.device) -> str:
    """The device in words: GPU name, or CPU model and thread count."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{cpu_model() or 'CPU'} ({os.cpu_count()} logical cores)"


def machine_info() -> dict[str, Any]:
    """What a timing was measured on: CPU model, the ISAs ATen and oneDNN use, threads, versions."""
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_isa": onednn_isa(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}


def format_table(result: Record) -> str:
    """A benchmark result as a plain-text table, ratios against the baseline: `result.format()`."""
    return result.format()


def _json_default(obj: Any) -> Any:
    return obj.as_dict() if isinstance(obj, Record) else str(obj)


def write_json(result: Record | Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a result (its `as_dict()`), or a dict that may hold results, as JSON atomically.

    A "machine" entry (:func:`machine_info`) is added where the data has none.
    """
    data = result.as_dict() if isinstance(result, Record) else dict(result)
    data.setdefault("machine", machine_info())
    atomic_write_text(path, json.dumps(data, indent=1, default=_json_default))
    return Path(path)


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


