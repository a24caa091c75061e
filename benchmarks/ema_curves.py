"""Why the proxy trainer evaluates a weight average: last-quarter gains with and without it.

Trains one study model twice with the same seed and recipe, once evaluating the raw weights
(`ema_fraction=None`) and once the moving average (the default), and prints both validation
curves and their gain over the last quarter of the run (the study's "still learning" rule:
more than 0.5 point). The training trajectory is the same in both runs; only what is
evaluated differs.

Usage: python benchmarks/ema_curves.py [--width 0.25] [--depth 0.6] [--resolution 14]
       [--epochs 3] [--threads 1]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from effnet.proxy.candidates import Scaled
from effnet.proxy.trainer import ProxyData, ProxyRecipe, train_proxy
from effnet.study.stats import last_quarter_gain


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--depth", type=float, default=0.6)
    ap.add_argument("--resolution", type=int, default=14)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = ProxyRecipe(epochs=args.epochs, evals=8)
    data = ProxyData("fashion-mnist", recipe=recipe, cache=1)
    print(f"b0 at width {args.width}, depth {args.depth}, {args.resolution} px, "
          f"{args.epochs} epoch(s), seed 0")
    for label, rec in (("raw weights", replace(recipe, ema_fraction=None)),
                       (f"average ({recipe.ema_fraction:g} of the run)", recipe)):
        torch.manual_seed(0)
        model = Scaled("b0", args.width, args.depth, args.resolution, 1).build()
        out = train_proxy(model, args.resolution, data, rec, seed=0)
        curve = " ".join(f"{100 * v:.2f}" for v in out["curve"])
        print(f"  {label:<24} curve {curve}; last quarter "
              f"{100 * last_quarter_gain(out['curve']):+.2f} points; "
              f"{out['seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
