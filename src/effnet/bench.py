"""Benchmarks: effnet against timm and torchvision on the same weights, in one process.

Every comparison builds the implementations once, copies one set of weights
into all of them (their state dicts list the same tensors in the same order),
checks that they compute the same outputs, then times them alternately,
rotating the order each round, and reports medians over rounds. Ratios are
against timm's eager model, the library people use today.

* :func:`inference` - images/s at given batch sizes (paper Sec. 1: "smaller and faster").
* :func:`training` - training-step images/s, bytes kept for backward and peak memory.
* :func:`saved_tensors_by_op` - what a training step keeps for backward, op by op.
* :func:`table4` - paper Table 4: EfficientNet-B1 against ResNet-152, batch 1, one core.
* :func:`machine_limits` - the matmul peak (GFLOP/s), copy bandwidth and the bytes-moved
  bound of the depthwise convolutions.

Peak memory on CPU is measured honestly in a fresh child process per
implementation: glibc is told to serve every allocation of 64 KiB or more
with mmap (MALLOC_MMAP_THRESHOLD_), so freed tensors leave the resident set at
once, and the peak resident set (VmHWM, reset through /proc/self/clear_refs)
during one step minus the resident set before it is the step's peak. On CUDA
the allocator's own peak statistics are used.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import EffnetError
from .fast import optimize_for_inference
from .model_factory import create_model
from .profile import count_macs

# Paper Table 4 (arXiv:1905.11946v5): batch 1, one core of a Xeon E5-2690, seconds.
PAPER_TABLE4 = {"resnet152_s": 0.554, "b1_s": 0.098, "speedup": 5.7}
# timm `efficientnet_*` and torchvision b0..b4 were trained with BN eps 1e-5 (FACTS.md).
REFERENCE_BN_EPS = 1e-5
BASELINE = "timm"

INFERENCE_IMPLS = ("timm", "torchvision", "effnet", "effnet-fast", "effnet-ts", "onnxruntime")
OPTIONAL_INFERENCE_IMPLS = ("effnet-compile", "timm-cl")
TRAINING_IMPLS = ("timm", "torchvision", "effnet", "effnet-memeff", "effnet-memeff-ckpt")
IMPL_HELP = {
    "timm": "timm efficientnet_<name>, eager, as created",
    "timm-cl": "timm, eager, channels_last",
    "torchvision": "torchvision efficientnet_<name>, eager",
    "effnet": "effnet, eager, as created",
    "effnet-fast": "effnet.optimize_for_inference (BN folded, channels_last, in-place)",
    "effnet-ts": "optimize_for_inference(torchscript=True): frozen TorchScript trace",
    "effnet-compile": "optimize_for_inference(compile=True): torch.compile",
    "onnxruntime": "effnet exported to ONNX, run by onnxruntime (CPU)",
    "effnet-memeff": "effnet with set_memory_efficient(): recompute BN/act/SE in backward",
    "effnet-memeff-ckpt": "memory-efficient plus per-stage activation checkpointing",
}


# ----------------------------------------------------------------------------- models


def _set_bn_eps(model: nn.Module, eps: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = eps


def copy_weights_by_order(src: nn.Module, dst: nn.Module) -> None:
    """Copy `src`'s parameters and buffers into `dst`, tensor by tensor in state-dict order.

    timm, torchvision and effnet EfficientNets list the same tensors in the
    same order; every shape is checked before anything is copied.
    """
    s_items, d_items = list(src.state_dict().items()), list(dst.state_dict().items())
    if len(s_items) != len(d_items):
        raise EffnetError(f"cannot copy weights: {len(s_items)} tensors vs {len(d_items)}; "
                          "the two models are not the same architecture")
    for (sk, sv), (dk, dv) in zip(s_items, d_items, strict=True):
        if sv.shape != dv.shape:
            raise EffnetError(f"cannot copy weights: {sk} {tuple(sv.shape)} does not fit "
                              f"{dk} {tuple(dv.shape)}")
    dst.load_state_dict({dk: sv.detach().clone() for (_, sv), (dk, _) in
                         zip(s_items, d_items, strict=True)})


def randomize_bn(model: nn.Module, seed: int = 0) -> None:
    """Give every batch norm non-trivial statistics and affine parameters, so outputs test them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


def _timm_model(name: str, drop_path_rate: float) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise EffnetError("the timm comparison needs timm: pip install timm") from None
    return timm.create_model(f"efficientnet_{name}", pretrained=False,
                             drop_path_rate=drop_path_rate)


def _torchvision_model(name: str) -> nn.Module:
    import torchvision

    builder = getattr(torchvision.models, f"efficientnet_{name}", None)
    if builder is None:
        raise EffnetError(f"torchvision has no efficientnet_{name}: drop 'torchvision' from "
                          "the implementations")
    return builder(weights=None)


def reference_models(name: str = "b0", impls: Sequence[str] = ("effnet", "timm", "torchvision"),
                     drop_path_rate: float = 0.2, seed: int = 0) -> dict[str, nn.Module]:
    """The same EfficientNet from effnet, timm and torchvision, holding the same weights.

    The weights are effnet's initialisation with randomized BN statistics; all
    models use BN eps 1e-5 (timm's and torchvision's b0..b4 value).
    """
    torch.manual_seed(seed)
    src = create_model(name, bn_eps=REFERENCE_BN_EPS, drop_path_rate=drop_path_rate)
    randomize_bn(src, seed)
    out: dict[str, nn.Module] = {}
    for impl in impls:
        if impl == "effnet":
            m = copy.deepcopy(src)
        elif impl == "timm":
            m = _timm_model(name, drop_path_rate)
        elif impl == "torchvision":
            m = _torchvision_model(name)
        else:
            raise EffnetError(f"unknown source {impl!r}: use effnet, timm or torchvision")
        if impl != "effnet":
            copy_weights_by_order(src, m)
            _set_bn_eps(m, REFERENCE_BN_EPS)
        out[impl] = m
    return out


# ----------------------------------------------------------------------------- timing


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


# ----------------------------------------------------------------------------- inference


def _onnx_runner(model: nn.Module, resolution: int, threads: int | None
                 ) -> Callable[[torch.Tensor], Callable[[], Any]]:
    from .export import export_onnx, onnx_session

    path = Path(tempfile.mkdtemp(prefix="effnet-bench-")) / "model.onnx"
    export_onnx(model, path, image_size=resolution)
    session = onnx_session(path, threads=threads or torch.get_num_threads())
    name = session.get_inputs()[0].name

    def make(x: torch.Tensor) -> Callable[[], Any]:
        arr = x.cpu().numpy()
        return lambda: session.run(None, {name: arr})[0]

    return make


def inference(name: str = "b0", batches: Sequence[int] = (1, 32),
              impls: Sequence[str] = INFERENCE_IMPLS, resolution: int | None = None,
              repeats: int = 7, min_time: float = 0.5, threads: int | None = None,
              device: str = "cpu", amp: bool = False,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Images/s of each implementation at each batch size, same weights, same outputs.

    Outputs of every implementation are compared with timm's on the timed input
    (`max_abs_diff`). On CUDA every model runs channels_last, with bf16 autocast
    when `amp`.
    """
    dev = torch.device(device)
    unknown = set(impls) - set(INFERENCE_IMPLS) - set(OPTIONAL_INFERENCE_IMPLS)
    if unknown:
        raise EffnetError(f"unknown implementation(s) {sorted(unknown)}: choose from "
                          f"{', '.join(INFERENCE_IMPLS + OPTIONAL_INFERENCE_IMPLS)}")
    if "onnxruntime" in impls and dev.type != "cpu":
        impls = [i for i in impls if i != "onnxruntime"]
    sources = reference_models(name, _sources_for(impls))
    res = resolution or create_model(name).pretrained_cfg["input_size"][-1]
    macs = count_macs(sources["effnet"], res)
    results: dict[str, Any] = {"task": "inference", "model": name, "resolution": res,
                               "device": describe_device(dev), "amp": amp,
                               "threads": threads or torch.get_num_threads(),
                               "macs_per_image": macs, "baseline": BASELINE, "rows": []}
    with num_threads(threads):
        models: dict[str, Any] = {}
        cl = dev.type == "cuda"
        for impl in impls:
            if impl in ("timm", "torchvision", "effnet"):
                m = sources[impl].eval().to(dev)
                models[impl] = m.to(memory_format=torch.channels_last) if cl else m
            elif impl == "timm-cl":
                models[impl] = copy.deepcopy(sources["timm"]).eval().to(dev).to(
                    memory_format=torch.channels_last)
        for batch in batches:
            x = torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(batch))
            x = x.to(dev)
            fns: dict[str, Callable[[], Any]] = {}
            outputs: dict[str, Any] = {}
            for impl in impls:
                if impl == "onnxruntime":
                    if "onnx_make" not in models:
                        models["onnx_make"] = _onnx_runner(sources["effnet"].eval(), res, threads)
                    fns[impl] = models["onnx_make"](x)
                    continue
                if impl == "effnet-fast":
                    m = models.setdefault(impl, optimize_for_inference(sources["effnet"].to(dev)))
                elif impl == "effnet-ts":
                    m = optimize_for_inference(sources["effnet"].to(dev), example_input=x,
                                               torchscript=True)
                elif impl == "effnet-compile":
                    m = models.setdefault(impl, optimize_for_inference(sources["effnet"].to(dev),
                                                                       compile=True))
                else:
                    m = models[impl]
                fns[impl] = _inference_call(m, x, dev, amp)
            for impl, fn in fns.items():
                outputs[impl] = fn()
            ref = outputs.get(BASELINE, next(iter(outputs.values())))
            times = time_alternating(fns, repeats, min_time, device=dev, progress=progress)
            for impl in impls:
                row = Row(impl, batch, times[impl],
                          {"max_abs_diff": _max_diff(outputs[impl], ref)})
                row.extra["gflops"] = 2 * macs * row.images_per_s / 1e9
                results["rows"].append(row)
    _add_ratios(results)
    return results


def _sources_for(impls: Sequence[str]) -> list[str]:
    """Which libraries' models the implementations need (effnet always, as the weight source)."""
    need = {"effnet"} | {i.split("-")[0] for i in impls if i.startswith(("timm", "torchvision"))}
    return sorted(need)


def _inference_call(model: nn.Module, x: torch.Tensor, dev: torch.device,
                    amp: bool) -> Callable[[], Any]:
    def call() -> Any:
        with torch.inference_mode(), _autocast(dev, amp):
            return model(x)

    return call


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


# ----------------------------------------------------------------------------- training


def _training_model(impl: str, name: str, dev: torch.device, channels_last: bool,
                    sources: dict[str, nn.Module] | None = None) -> nn.Module:
    src = "effnet" if impl.startswith("effnet") else impl
    m = (copy.deepcopy(sources[src]) if sources is not None
         else reference_models(name, (src,))[src])
    if impl in ("effnet-memeff", "effnet-memeff-ckpt"):
        m.set_memory_efficient()
    if impl in ("effnet-ckpt", "effnet-memeff-ckpt"):
        m.set_grad_checkpointing()
    m = m.to(dev).train()
    return m.to(memory_format=torch.channels_last) if channels_last else m


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


def _batch(batch: int, resolution: int, dev: torch.device,
           channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 3, resolution, resolution, generator=g).to(dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), generator=g).to(dev)
    return x, y


def training(name: str = "b0", batch: int = 64, impls: Sequence[str] = TRAINING_IMPLS,
             resolution: int | None = None, repeats: int = 3, threads: int | None = None,
             device: str = "cpu", amp: bool = False, channels_last: bool = False,
             peak: bool = True, min_time: float = 0.0,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Training-step images/s (forward, loss, backward, SGD step), saved and peak memory.

    All implementations start from the same weights; their eval-mode outputs on
    two of the images are compared with the baseline's (`max_abs_diff`) before
    timing. SGD's learning rate is tiny so that rounds stay comparable.
    """
    dev = torch.device(device)
    unknown = set(impls) - set(TRAINING_IMPLS) - {"effnet-ckpt"}
    if unknown:
        raise EffnetError(f"unknown implementation(s) {sorted(unknown)}: choose from "
                          f"{', '.join(TRAINING_IMPLS)}, effnet-ckpt")
    res = resolution or create_model(name).pretrained_cfg["input_size"][-1]
    results: dict[str, Any] = {"task": "training", "model": name, "resolution": res,
                               "device": describe_device(dev), "amp": amp,
                               "channels_last": channels_last,
                               "threads": threads or torch.get_num_threads(),
                               "baseline": BASELINE, "optimizer": "SGD(lr=1e-5, momentum=0.9)",
                               "rows": []}
    with num_threads(threads):
        sources = reference_models(name, _sources_for(impls))
        x, y = _batch(batch, res, dev, channels_last)
        models = {i: _training_model(i, name, dev, channels_last, sources) for i in impls}
        check = {}
        for i, m in models.items():
            m.eval()
            with torch.no_grad(), _autocast(dev, amp):
                check[i] = m(x[:2]).float()
            m.train()
        ref = check.get(BASELINE, next(iter(check.values())))
        # Bytes kept for backward are affine in the batch (activations grow, bf16 weight
        # copies do not): count them at batches 1 and 2 and extrapolate. Checkpointed
        # stages keep theirs inside the checkpoint: only peak memory shows them.
        saved = {i: None if "ckpt" in i else _saved_at(models[i], x, batch, amp) for i in impls}
        steps = {i: _train_step(models[i], x, y, dev, amp) for i in impls}
        times = time_alternating(steps, repeats, min_time=min_time, warmup=1, device=dev,
                                 progress=progress)
        peaks = {}
        if peak:
            for i in impls:
                if progress:
                    progress(f"peak memory of {i}")
                peaks[i] = peak_step_memory(i, name, batch, res, channels_last, device, amp)
        for i in impls:
            extra: dict[str, Any] = {"saved_bytes": saved[i],
                                     "max_abs_diff": _max_diff(check[i], ref)}
            if i in peaks:
                extra["peak_bytes"] = peaks[i]["peak_bytes"]
            results["rows"].append(Row(i, batch, times[i], extra))
    _add_ratios(results)
    base = next((r for r in results["rows"] if r["impl"] == BASELINE), None)
    for r in results["rows"]:
        for key in ("saved_bytes", "peak_bytes"):
            if base and r.get(key) is not None and base.get(key):
                r[key.replace("_bytes", "_x_") + BASELINE] = r[key] / base[key]
    return results


# ----------------------------------------------------------------------------- machine limits


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
                    bandwidth_gbs: float | None = None, repeats: int = 5) -> dict[str, Any]:
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
    total = {"macs": 0, "bytes": 0}
    fns: dict[str, Callable[[], Any]] = {}
    layers = []
    for i, (conv, shape) in enumerate(shapes):
        with torch.no_grad():
            out = conv(torch.zeros(shape))
        nbytes = 4 * (math.prod(shape) + out.numel() + conv.weight.numel())
        macs = out.numel() * conv.kernel_size[0] * conv.kernel_size[1]
        total["macs"] += macs
        total["bytes"] += nbytes
        layers.append({"layer": i, "input": list(shape), "kernel": conv.kernel_size[0],
                       "stride": conv.stride[0], "macs": macs, "bytes": nbytes})
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
    bound = total["bytes"] / (bw * 1e9)
    return {"model": name, "batch": batch, "resolution": res, "layers": len(shapes),
            "macs": total["macs"], "bytes": total["bytes"],
            "flops_per_byte": 2 * total["macs"] / total["bytes"], "bandwidth_gbs": bw,
            "bound_s": bound, "nchw_s": nchw, "channels_last_s": cl,
            "nchw_x_bound": nchw / bound, "channels_last_x_bound": cl / bound,
            "per_layer": layers}


def _no_grad_call(m: nn.Module, x: torch.Tensor) -> Any:
    with torch.inference_mode():
        return m(x)


def machine_limits(name: str = "b0", threads: int | None = None,
                   inference_rows: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Matmul peak, copy bandwidth, the depthwise bound, and models' fractions of the peak."""
    with num_threads(threads):
        peak = matmul_peak()
        bw = copy_bandwidth()
        dw = depthwise_bound(name, bandwidth_gbs=bw)
    out = {"task": "limits", "threads": threads or torch.get_num_threads(),
           "device": describe_device(torch.device("cpu")),
           "matmul_gflops": peak, "copy_gbs": bw, "depthwise": dw}
    if inference_rows:
        out["fraction_of_peak"] = [
            {"impl": r["impl"], "batch": r["batch"], "gflops": r["gflops"],
             "fraction": r["gflops"] / peak} for r in inference_rows]
    return out


# ----------------------------------------------------------------------------- table 4


def table4(repeats: int = 7, threads: int = 1, min_time: float = 1.0,
           progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Paper Table 4 here: EfficientNet-B1 (240 px) against ResNet-152 (224 px), batch 1.

    Both eager as created, and both optimized (effnet's fast path; ResNet-152
    with its BN folded by a frozen TorchScript trace, channels_last): the
    ratio of ResNet-152's latency to B1's, against the paper's 5.7x.
    """
    import torchvision

    with num_threads(threads):
        b1 = create_model("b1", bn_eps=REFERENCE_BN_EPS).eval()
        randomize_bn(b1)
        rn = torchvision.models.resnet152(weights=None).eval()
        randomize_bn(rn)
        xb = torch.randn(1, 3, 240, 240)
        xr = torch.randn(1, 3, 224, 224)
        b1_fast = optimize_for_inference(b1)
        b1_ts = optimize_for_inference(b1, example_input=xb, torchscript=True)
        rn_cl = copy.deepcopy(rn).to(memory_format=torch.channels_last)
        with _quiet_jit(), torch.no_grad():
            rn_ts = torch.jit.freeze(torch.jit.trace(rn_cl, xr))
        fns = {"b1": lambda: _no_grad_call(b1, xb), "resnet152": lambda: _no_grad_call(rn, xr),
               "b1-fast": lambda: _no_grad_call(b1_fast, xb),
               "b1-ts": lambda: _no_grad_call(b1_ts, xb),
               "resnet152-ts": lambda: _no_grad_call(rn_ts, xr)}
        t = time_alternating(fns, repeats, min_time, progress=progress)
    lat = {k: statistics.median(v) for k, v in t.items()}
    return {"task": "table4", "threads": threads, "device": describe_device(torch.device("cpu")),
            "latency_s": lat, "seconds": t,
            "speedup_eager": lat["resnet152"] / lat["b1"],
            "speedup_optimized": lat["resnet152-ts"] / min(lat["b1-fast"], lat["b1-ts"]),
            "paper": PAPER_TABLE4,
            "macs": {"b1": count_macs(b1, 240), "resnet152": _resnet_macs(rn)}}


def _resnet_macs(model: nn.Module) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as c:
        model(torch.zeros(1, 3, 224, 224))
    return c.get_total_flops() // 2


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ----------------------------------------------------------------------------- reporting


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


def memory_report(name: str = "b0", batch: int = 8, resolution: int | None = None,
                  impls: Sequence[str] = ("timm", "effnet", "effnet-memeff")) -> dict[str, Any]:
    """Op-by-op and role-by-role bytes kept for backward, for each implementation."""
    res = resolution or create_model(name).pretrained_cfg["input_size"][-1]
    sources = reference_models(name, _sources_for(impls))
    x, _ = _batch(batch, res, torch.device("cpu"), False)
    out = {}
    for i in impls:
        m = _training_model(i, name, torch.device("cpu"), False, sources)
        out[i] = saved_tensors_by_op(m, x)
    return {"task": "memory", "model": name, "batch": batch, "resolution": res, "impls": out}


def write_json(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write results as JSON atomically (temporary name in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(results, f, indent=1, default=str)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


if __name__ == "__main__":  # child process of peak_step_memory
    if len(sys.argv) == 3 and sys.argv[1] == "peak-child":
        print(json.dumps(_peak_child(json.loads(sys.argv[2]))))
    else:
        sys.exit("usage: python -m effnet.bench peak-child JSON (internal)")
