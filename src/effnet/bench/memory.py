"""What a training step keeps for backward (op by op), and its peak memory in a fresh process.

Peak memory on CPU is measured honestly in a fresh child process per
implementation (`python -m effnet.bench peak-child`): glibc is told to serve
every allocation of 64 KiB or more with mmap (MALLOC_MMAP_THRESHOLD_), so
freed tensors leave the resident set at once, and the peak resident set
(VmHWM, reset through /proc/self/clear_refs) during one step minus the
resident set before it is the step's peak. On CUDA the allocator's own peak
statistics are used.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import EffnetError
from ..model_factory import create_model
from .harness import _autocast, _batch, _train_step
from .references import _sources_for, _training_model, reference_models
from .results import MemoryResult


def saved_bytes(model: nn.Module, x: torch.Tensor, amp: bool = False) -> int:
    """Bytes of the tensors one training forward keeps for backward (parameters excluded).

    CPU: the storages autograd's graph holds. CUDA: what the allocator holds
    after the forward beyond what it held before, less the output.
    """
    if x.device.type == "cuda":
        state = {k: v.clone() for k, v in model.state_dict().items()}
        model.train()
        torch.cuda.synchronize(x.device)
        before = torch.cuda.memory_allocated(x.device)
        with _autocast(x.device, amp):
            out = model(x)
        torch.cuda.synchronize(x.device)
        held = torch.cuda.memory_allocated(x.device) - before - out.untyped_storage().nbytes()
        del out
        model.load_state_dict(state)
        return held
    return sum(r["bytes"] for r in saved_tensors_by_op(model, x, amp=amp)["by_op"])


def _saved_at(model: nn.Module, x: torch.Tensor, batch: int, amp: bool) -> int:
    one = saved_bytes(model, x[:1].clone(), amp)
    if x.shape[0] < 2:
        return one * batch
    two = saved_bytes(model, x[:2].clone(), amp)
    return one + (two - one) * (batch - 1)


def saved_tensors_by_op(model: nn.Module, x: torch.Tensor, amp: bool = False) -> dict[str, Any]:
    """What a training forward keeps for backward, by autograd op and by module role.

    Walks the autograd graph of the loss and reads each node's saved tensors;
    a storage shared by several nodes counts once. Module roles (stem,
    expand, dw, se, project, head, ...) come from the module running when
    autograd packed the tensor.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    names = {id(m): n for n, m in model.named_modules()}
    stack: list[str] = []
    where: dict[int, str] = {}

    def pre(mod: nn.Module, _args: Any) -> None:
        stack.append(names.get(id(mod), ""))

    def post(mod: nn.Module, _args: Any, _out: Any) -> None:
        if stack:
            stack.pop()

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage().data_ptr()
        where.setdefault(key, stack[-1] if stack else "")
        return t

    state = {k: v.clone() for k, v in model.state_dict().items()}
    handles = [nn.modules.module.register_module_forward_pre_hook(pre),
               nn.modules.module.register_module_forward_hook(post)]
    was_training = model.training
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with _autocast(x.device, amp):
                out = model(x)
            loss = out.float().logsumexp(1).mean() if out.ndim == 2 else out.float().mean()
        by_op, by_role = _walk_saved(loss.grad_fn, params, where)
    finally:
        for h in handles:
            h.remove()
        model.load_state_dict(state)
        model.train(was_training)
    del loss, out
    return {"by_op": by_op, "by_role": by_role}


def _role(module_name: str) -> str:
    """'blocks.3.1.dw.bn' -> 'dw.bn'; 'stem.bn' -> 'stem.bn'; 'blocks.3.1' -> 'block'."""
    parts = [p for p in module_name.split(".") if p and not p.isdigit()]
    if parts and parts[0] in ("blocks", "features", "layers", "_blocks"):
        parts = parts[1:]
    return ".".join(parts[-2:]) or ("block" if module_name else "model")


def _walk_saved(root: Any, params: set[int], where: dict[int, str]
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    seen_nodes: set[int] = set()
    seen_storage: set[int] = set()
    by_op: dict[str, list[int]] = {}
    by_role: dict[str, list[int]] = {}
    todo = [root]
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        todo.extend(fn for fn, _ in getattr(node, "next_functions", ()))
        tensors: list[torch.Tensor] = []
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            with contextlib.suppress(RuntimeError):
                tensors.extend(t for t in node.saved_tensors if isinstance(t, torch.Tensor))
        for attr in dir(node):
            if attr.startswith("_saved_"):
                with contextlib.suppress(RuntimeError):
                    v = getattr(node, attr)
                    vals = v if isinstance(v, (list, tuple)) else [v]
                    tensors.extend(t for t in vals if isinstance(t, torch.Tensor))
        for t in tensors:
            st = t.untyped_storage()
            key = st.data_ptr()
            if key in params or key in seen_storage or st.nbytes() == 0:
                continue
            seen_storage.add(key)
            op = node.name()
            by_op.setdefault(op, [0, 0])
            by_op[op][0] += st.nbytes()
            by_op[op][1] += 1
            role = _role(where.get(key, ""))
            by_role.setdefault(role, [0, 0])
            by_role[role][0] += st.nbytes()
            by_role[role][1] += 1

    def rows(d: dict[str, list[int]], key: str) -> list[dict[str, Any]]:
        return sorted(({key: k, "bytes": v[0], "tensors": v[1]} for k, v in d.items()),
                      key=lambda r: -r["bytes"])

    return rows(by_op, "op"), rows(by_role, "role")


def _rss_kib(field_name: str) -> int:
    text = Path("/proc/self/status").read_text()
    m = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def peak_step_memory(impl: str, name: str, batch: int, resolution: int,
                     channels_last: bool = False, device: str = "cpu", amp: bool = False,
                     timeout: float = 1800) -> dict[str, Any]:
    """Peak memory of one training step above the memory held before it.

    CPU: in a fresh child process (see the module docstring), so implementations
    cannot disturb each other's heap. CUDA: the allocator's peak, in process.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        return _peak_step_in_process(impl, name, batch, resolution, channels_last, dev, amp)
    args = {"impl": impl, "name": name, "batch": batch, "resolution": resolution,
            "channels_last": channels_last, "amp": amp, "threads": torch.get_num_threads()}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    proc = subprocess.run([sys.executable, "-m", "effnet.bench", "peak-child", json.dumps(args)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EffnetError(f"peak-memory child for {impl} failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _peak_child(args: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(int(args.get("threads") or 1))
    dev = torch.device("cpu")
    m = _training_model(args["impl"], args["name"], dev, args["channels_last"])
    x, y = _batch(args["batch"], args["resolution"], dev, args["channels_last"])
    step = _train_step(m, x, y, dev, args["amp"])
    step()  # creates gradients and optimizer state once, as in a real run
    gc.collect()
    hwm_reset = True
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        hwm_reset = False
    before = _rss_kib("VmRSS")
    step()
    peak = _rss_kib("VmHWM")
    return {"impl": args["impl"], "peak_bytes": (peak - before) * 1024,
            "rss_before_bytes": before * 1024, "hwm_reset": hwm_reset}


def _peak_step_in_process(impl: str, name: str, batch: int, resolution: int, channels_last: bool,
                          dev: torch.device, amp: bool) -> dict[str, Any]:
    m = _training_model(impl, name, dev, channels_last)
    x, y = _batch(batch, resolution, dev, channels_last)
    step = _train_step(m, x, y, dev, amp)
    step()
    torch.cuda.synchronize(dev)
    before = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    step()
    torch.cuda.synchronize(dev)
    peak = torch.cuda.max_memory_allocated(dev)
    del m, step
    torch.cuda.empty_cache()
    return {"impl": impl, "peak_bytes": peak - before, "rss_before_bytes": before,
            "hwm_reset": True}


def memory_report(name: str = "b0", batch: int = 8, resolution: int | None = None,
                  impls: Sequence[str] = ("timm", "effnet", "effnet-memeff")) -> MemoryResult:
    """Op-by-op and role-by-role bytes kept for backward, for each implementation."""
    res = resolution or create_model(name).pretrained_cfg["input_size"][-1]
    sources = reference_models(name, _sources_for(impls))
    x, _ = _batch(batch, res, torch.device("cpu"), False)
    out: dict[str, dict[str, Any]] = {}
    for i in impls:
        m = _training_model(i, name, torch.device("cpu"), False, sources)
        out[i] = saved_tensors_by_op(m, x)
    return MemoryResult(model=name, batch=batch, resolution=res, impls=out)
