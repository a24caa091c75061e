"""Depthwise convs in training: effnet against nn.Conv2d, layer by layer and step by step.

Three parts, in one process, all channels_last:

1. every distinct depthwise layer of B0 at 224 px (batch 32), of B0 at 32 px (`effnet train`'s
   default size, batch 128) and of the quick study's proxy (B0 base at 14 px, batch 256):
   forward and backward (input and weight gradient) of effnet's `DepthwiseConv2d` against a
   plain `nn.Conv2d` holding the same weight;
2. whole training steps (forward, loss, backward, SGD) of B0 at 32 px / batch 128 and at 224 px /
   batch 32: timm's efficientnet_b0, effnet, and effnet with plain nn.Conv2d depthwise convs
   (effnet before this path), on the same weights;
3. the quick proxy's bare training step (forward, loss, backward, AdamW), effnet against the
   same model with plain nn.Conv2d depthwise convs.

Run it twice to see both oneDNN dispatches: natively and with `ONEDNN_MAX_CPU_ISA=AVX2`
(add `ATEN_CPU_CAPABILITY=avx2` to give ATen's own kernels the AVX2 code too, as on an AVX2-only
CPU). The JSON records the CPU model and the ISAs ATen and oneDNN use.

Usage: python benchmarks/bench_depthwise.py [--threads 1] [--repeats 5] [--parts 1,2,3]
       [--json PATH]   (default benchmarks/results/depthwise_<cpu>_<onednn isa>.json)
"""

from __future__ import annotations

import argparse
import copy
import re
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from effnet.bench.harness import machine_info, time_alternating, write_json
from effnet.bench.references import reference_models
from effnet.nn.layers import Conv2dSame, DepthwiseConv2d, DepthwiseConv2dSame
from effnet.study.plan import scaled_by
from effnet.study.presets import PRESETS

# effnet's depthwise classes and the plain classes they specialise (effnet before them).
PLAIN = {DepthwiseConv2d: nn.Conv2d, DepthwiseConv2dSame: Conv2dSame}
DW = tuple(PLAIN)


def plain_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` whose depthwise convs are plain nn.Conv2d (effnet before this path)."""
    m = copy.deepcopy(model)
    for mod in m.modules():
        mod.__class__ = PLAIN.get(type(mod), type(mod))
    return m


def proxy_model() -> tuple[nn.Module, int, int]:
    """The quick study's B0 base (1 channel, 10 classes), its resolution and batch size."""
    preset = PRESETS["quick"]
    scaled = scaled_by(preset.bases[0], preset.image_size, "baseline", 1.0, preset.coefficients)
    model = scaled.build(num_classes=10, in_chans=1)
    return model, scaled.resolution, preset.budgets[0].recipe.batch_size


def depthwise_inputs(model: nn.Module, x: torch.Tensor) -> list[tuple[nn.Conv2d, tuple]]:
    """Each distinct depthwise layer of `model` (by kernel, stride and input shape) on input x."""
    seen: dict[tuple, nn.Conv2d] = {}

    def hook(mod: nn.Module, args: tuple) -> None:
        key = (tuple(args[0].shape), mod.kernel_size, mod.stride)
        seen.setdefault(key, mod)

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, DW)]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return [(mod, key[0]) for key, mod in seen.items()]


def time_layer(conv: nn.Conv2d, shape: tuple, repeats: int) -> dict:
    """Forward and backward ms of `conv` and of a plain nn.Conv2d copy, on one random batch."""
    plain = plain_copy(conv)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = None
    fns, outs = {}, {}
    for name, m in (("effnet", conv), ("nn.Conv2d", plain)):
        # A first step makes effnet's per-shape choice (measured in its first backward), so the
        # timed graph is the one every later step runs.
        torch.autograd.grad(m(x).sum(), (x, m.weight))
        y = m(x)
        g = torch.randn_like(y) if g is None else g  # one output gradient for both
        outs[name] = torch.autograd.grad(y, (x, m.weight), g, retain_graph=True)
        fns[f"{name} fwd"] = (lambda m=m: m(x))
        fns[f"{name} bwd"] = (lambda y=y, m=m, g=g:
                              torch.autograd.grad(y, (x, m.weight), g, retain_graph=True))
    diff = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
               for a, b in zip(outs["effnet"], outs["nn.Conv2d"], strict=True))
    times = {k: 1e3 * statistics.median(v)
             for k, v in time_alternating(fns, repeats, min_time=0.05, warmup=1).items()}
    k, s = conv.kernel_size[0], conv.stride[0]
    row = {"input": list(shape), "kernel": k, "stride": s, "max_rel_grad_diff": diff, **times}
    row["effnet bwd/fwd"] = times["effnet bwd"] / times["effnet fwd"]
    row["nn.Conv2d bwd/fwd"] = times["nn.Conv2d bwd"] / times["nn.Conv2d fwd"]
    row["bwd speed-up"] = times["nn.Conv2d bwd"] / times["effnet bwd"]
    print(f"  {str(list(shape)):<22} k{k} s{s}  fwd {times['effnet fwd']:7.2f} / "
          f"{times['nn.Conv2d fwd']:7.2f} ms   bwd {times['effnet bwd']:7.2f} / "
          f"{times['nn.Conv2d bwd']:7.2f} ms   effnet bwd/fwd {row['effnet bwd/fwd']:5.1f}  "
          f"(nn.Conv2d {row['nn.Conv2d bwd/fwd']:5.1f})  bwd x{row['bwd speed-up']:.1f}",
          flush=True)
    return row


def layers_part(repeats: int) -> dict:
    """Part 1: every distinct depthwise layer of B0 @224, B0 @32 and the quick proxy."""
    b0 = reference_models("b0", ("effnet",))["effnet"].to(memory_format=torch.channels_last)
    proxy, res, batch = proxy_model()
    out = {}
    for label, model, shape in (("b0_224px_batch32", b0, (32, 3, 224, 224)),
                                ("b0_32px_batch128", b0, (128, 3, 32, 32)),
                                ("quick_proxy", proxy, (batch, 1, res, res))):
        print(f"{label}: depthwise layers, effnet / nn.Conv2d", flush=True)
        x = torch.randn(shape[0] if shape[-1] < 100 else 1, *shape[1:])
        layers = depthwise_inputs(model, x)
        out[label] = [time_layer(conv, (shape[0],) + s[1:], repeats) for conv, s in layers]
    return out


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, adamw: bool = False):
    """One training step: forward, cross-entropy, backward, SGD (or AdamW) update."""
    opt = (torch.optim.AdamW(model.parameters(), lr=1e-3) if adamw
           else torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def steps_part(repeats: int) -> dict:
    """Part 2: B0 training steps, timm / effnet / effnet with plain depthwise convs."""
    out = {}
    for res, batch in ((32, 128), (224, 32)):
        refs = reference_models("b0", ("effnet", "timm"))
        models = {"timm": refs["timm"], "effnet": refs["effnet"],
                  "effnet-plain-dw": plain_copy(refs["effnet"])}
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 3, res, res, generator=g).contiguous(
            memory_format=torch.channels_last)
        y = torch.randint(0, 1000, (batch,), generator=g)
        steps = {k: train_step(m.to(memory_format=torch.channels_last).train(), x, y)
                 for k, m in models.items()}
        t = {k: statistics.median(v) for k, v in
             time_alternating(steps, repeats, min_time=0.0, warmup=1).items()}
        row = {k: {"img_s": batch / v, "x_timm": t["timm"] / v} for k, v in t.items()}
        print(f"B0 training step @{res}px, batch {batch}: " + ", ".join(
            f"{k} {r['img_s']:.0f} img/s ({r['x_timm']:.2f}x timm)" for k, r in row.items()),
            flush=True)
        out[f"b0_{res}px_batch{batch}"] = row
    return out


def proxy_part(repeats: int) -> dict:
    """Part 3: the quick proxy's bare training step (AdamW), effnet vs plain depthwise convs."""
    model, res, batch = proxy_model()
    torch.manual_seed(0)
    models = {"effnet": model, "effnet-plain-dw": plain_copy(model)}
    x = torch.randn(batch, 1, res, res).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    steps = {k: train_step(m.to(memory_format=torch.channels_last).train(), x, y, adamw=True)
             for k, m in models.items()}
    t = {k: statistics.median(v) for k, v in
         time_alternating(steps, repeats, min_time=0.3, warmup=2).items()}
    row = {k: {"img_s": batch / v} for k, v in t.items()}
    row["speed-up"] = t["effnet-plain-dw"] / t["effnet"]
    print(f"quick proxy bare step ({res} px, batch {batch}): effnet {row['effnet']['img_s']:.0f} "
          f"img/s, plain depthwise {row['effnet-plain-dw']['img_s']:.0f} img/s: "
          f"{row['speed-up']:.2f}x", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--parts", default="1,2,3")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_info()
    print(f"{machine['cpu']}, ATen {machine['aten_cpu_capability']}, oneDNN "
          f"{machine['onednn_isa']}, {args.threads} thread(s)", flush=True)
    parts = {int(p) for p in args.parts.split(",")}
    result: dict = {"machine": machine, "command": "python benchmarks/bench_depthwise.py "
                    f"--threads {args.threads} --repeats {args.repeats} --parts {args.parts}"}
    if 1 in parts:
        result["layers"] = layers_part(args.repeats)
    if 2 in parts:
        result["steps"] = steps_part(args.repeats)
    if 3 in parts:
        result["proxy_step"] = proxy_part(args.repeats)
    cpu = "-".join(re.sub(r"\(.*?\)", "", machine["cpu"]).lower().split()[:2]) or "cpu"
    path = args.json or (Path(__file__).parent / "results" /
                         f"depthwise_{cpu}_{machine['onednn_isa']}.json")
    print(f"wrote {write_json(result, path)}")


if __name__ == "__main__":
    main()
