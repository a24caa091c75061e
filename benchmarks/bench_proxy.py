"""The study's proxy trainer against a bare training step, for the quick preset's B0 base.

The bare step is the least any trainer can do per image: forward, loss, backward and an
AdamW step on one fixed, already-normalised batch in channels_last. The proxy trainer
(`effnet.proxy.trainer.train_proxy`) runs a whole training run on real Fashion-MNIST
images: shuffling, batched flips, the one-cycle schedule and every validation pass
included. The ratio of the two rates says how much the trainer adds to the model's own cost
(target: >= 0.8x).

Usage: python benchmarks/bench_proxy.py [--threads 1] [--repeats 3] [--train-size N]
Prints a table and writes JSON to benchmarks/results/proxy.json (or --json PATH).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from effnet.bench.harness import machine_info
from effnet.proxy.trainer import ProxyData, ProxyRecipe, train_proxy
from effnet.study.plan import scaled_by
from effnet.study.presets import PRESETS


def bare_step_rate(build, resolution: int, batch: int, steps: int) -> float:
    """Images/s of forward + loss + backward + AdamW on one fixed batch (after a warm-up)."""
    torch.manual_seed(0)
    model = build().to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, resolution, resolution).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-size", type=int, default=None,
                    help="training images per run (default: the quick preset's, all of them)")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "proxy.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    preset = PRESETS["quick"]
    base = preset.bases[0]
    recipe = ProxyRecipe(**{**preset.budgets[0].recipe.as_dict(), "train_size": args.train_size})
    scaled = scaled_by(base, preset.image_size, "baseline", 1.0, preset.coefficients)
    data = ProxyData(preset.dataset, recipe=recipe)
    data.splits(scaled.resolution)  # decode and resize once, outside the timings

    def build():
        return scaled.build(num_classes=data.num_classes, in_chans=data.in_chans)

    steps = max(1, len(data.splits(scaled.resolution)[1]) // recipe.batch_size)
    bare, proxy = [], []
    for _ in range(args.repeats):  # alternate, so both see the same machine load
        bare.append(bare_step_rate(build, scaled.resolution, recipe.batch_size, steps))
        torch.manual_seed(0)
        out = train_proxy(build(), scaled.resolution, data, recipe, seed=0)
        proxy.append(steps * recipe.batch_size / out["seconds"])
    b, p = statistics.median(bare), statistics.median(proxy)
    print(f"quick B0 base ({scaled.width_mult:g} width, {scaled.depth_mult:g} depth, "
          f"{scaled.resolution} px), batch {recipe.batch_size}, {args.threads} thread(s), "
          f"median of {args.repeats}:")
    print(f"  bare training step       {b:8.0f} img/s   1.00x")
    print(f"  proxy trainer, whole run {p:8.0f} img/s   {p / b:.2f}x  "
          f"({recipe.evals} validation passes over {len(data.splits(14)[3])} images included)")
    result = {"bare_img_s": bare, "proxy_img_s": proxy, "ratio": p / b,
              "batch": recipe.batch_size, "resolution": scaled.resolution,
              "train_images": steps * recipe.batch_size, "threads": args.threads,
              "machine": machine_info()}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
