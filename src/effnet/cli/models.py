"""`effnet models`, `effnet profile` and `effnet scale`: the paper's models, their cost, Eq. 3."""

from __future__ import annotations

import argparse

from ..cost import spec_cost
from ..errors import EffnetError
from ..limits import check_model_size
from ..scaling import CompoundScaling
from ..spec import is_spec_path, load_spec
from ..zoo import MODELS, canonical_name, compound_scaled, list_models
from .options import MIN_RESOLUTION, parse_phis


def _fmt_m(v: float | None, div: float, digits: int = 2) -> str:
    return "-" if v is None else f"{v / div:.{digits}f}"


def cmd_models(args: argparse.Namespace) -> int:
    """Every named model beside the paper's Table 2 numbers."""
    names = list_models(args.filter)
    if not names:
        raise EffnetError(f"no model matches {args.filter!r}: models are {', '.join(MODELS)}")
    head = (f"{'model':<7}{'width':>6}{'depth':>6}{'res':>5}{'drop':>6}{'params(M)':>11}"
            f"{'paper':>7}{'MACs(B)':>9}{'paper':>7}")
    print(head)
    print("-" * len(head))
    for name in names:
        e = MODELS[name]
        cost = spec_cost(e.spec, e.resolution)  # closed form, exact (no model built)
        params, macs = cost.params, cost.macs
        print(f"{name:<7}{e.width_mult:>6.1f}{e.depth_mult:>6.1f}{e.resolution:>5}"
              f"{e.dropout:>6.1f}{params / 1e6:>11.2f}{_fmt_m(e.paper_params_m, 1, 1):>7}"
              f"{macs / 1e9:>9.3f}{_fmt_m(e.paper_macs_b, 1, 2):>7}")
    print("paper: Table 2 of Tan & Le (2019) for b0..b7, the Lite README for lite0..4; "
          "MACs = multiply-adds of convs and linear layers.")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    """Parameters, MACs and activation memory of one model."""
    from ..model_factory import create_model
    from ..profiling import profile

    if args.num_classes < 1:
        raise EffnetError(f"--num-classes {args.num_classes} must be >= 1")
    if args.resolution is not None and args.resolution < MIN_RESOLUTION:
        raise EffnetError(f"--resolution {args.resolution} is too small: use at least "
                          f"{MIN_RESOLUTION} px (the network downsamples 32x)")
    if is_spec_path(args.name):  # a baseline as data, e.g. the spec.json `effnet nas` wrote
        model = create_model(spec=args.name, num_classes=args.num_classes)
    else:
        model = create_model(args.name, num_classes=args.num_classes)
    res = args.resolution or model.pretrained_cfg["input_size"][-1]
    p = profile(model, res)
    print(f"model        {model.model_name}")
    print(f"resolution   {p.resolution}")
    print(f"params       {p.params:,} ({p.params / 1e6:.2f} M)")
    print(f"MACs         {p.macs:,} ({p.macs / 1e9:.3f} B)")
    print(f"activations  {p.activation_bytes / 2**20:.1f} MiB kept for backward (batch 1, fp32)")
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    """Compound-scaling coefficients for phi and the scaled model's params and MACs."""
    spec_file = args.base if is_spec_path(args.base) else None
    base = "b0" if spec_file else canonical_name(args.base)
    base_spec = load_spec(spec_file) if spec_file else MODELS[base].spec
    if spec_file:
        print(f"base: {base_spec.name} from {spec_file} (B0's 224 px)")
    scaling = CompoundScaling(args.alpha, args.beta, args.gamma)
    if args.from_search:  # step 2 of the paper: the grid search's best (alpha, beta, gamma)
        from ..search.results import best_coefficients

        scaling, best = best_coefficients(args.from_search)
        print(f"from search {best['study']!r} in {args.from_search}: best candidate "
              f"(val top-1 {100 * best['val_top1']:.2f}%)")
    print(f"alpha={scaling.alpha:g} beta={scaling.beta:g} gamma={scaling.gamma:g} "
          f"alpha*beta^2*gamma^2={scaling.flops_factor:.4f} (paper Eq. 3: ~2)")
    print(f"{'phi':>6}{'depth':>8}{'width':>8}{'res':>6}{'params(M)':>11}{'MACs(B)':>9}"
          f"{'x base':>8}")
    base_macs = spec_cost(base_spec, MODELS[base].resolution).macs
    for phi in parse_phis(args.phi):
        c = scaling.coefficients(phi, MODELS[base].resolution)
        spec = (scaling.scale(base_spec, phi) if spec_file
                else compound_scaled(base, phi, scaling)[0])
        cost = check_model_size(spec, c.resolution, activations=False)  # exact params and MACs
        print(f"{phi:>6g}{c.depth_mult:>8.3f}{c.width_mult:>8.3f}{c.resolution:>6}"
              f"{cost.params / 1e6:>11.2f}{cost.macs / 1e9:>9.3f}{cost.macs / base_macs:>8.2f}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the `effnet` parser."""
    p = sub.add_parser("models", help="list the named models beside paper Table 2")
    p.add_argument("--filter", default="*", help="glob on model names, e.g. 'lite*'")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("profile", help="params, MACs and activation memory of a model")
    p.add_argument("name", help=f"one of {', '.join(MODELS)}, or a spec.json (`effnet nas`)")
    p.add_argument("--resolution", type=int, default=None,
                   help=f"input size in px (default: the model's own; at least {MIN_RESOLUTION})")
    p.add_argument("--num-classes", type=int, default=1000,
                   help="classifier outputs (default 1000, ImageNet)")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("scale", help="compound scaling: coefficients and cost for phi")
    p.add_argument("--phi", required=True, help="2.5, a list 0,1,2 or a range 1..7")
    p.add_argument("--alpha", type=float, default=1.2, help="depth base (default 1.2)")
    p.add_argument("--beta", type=float, default=1.1, help="width base (default 1.1)")
    p.add_argument("--gamma", type=float, default=1.15, help="resolution base (default 1.15)")
    p.add_argument("--base", default="b0",
                   help="baseline to scale: b0, lite (or lite0), or a spec.json from "
                   "`effnet nas`")
    p.add_argument("--from-search", default=None, metavar="STORAGE",
                   help="take alpha, beta, gamma from `effnet search` (search.db, a URL, "
                   "or STORAGE#STUDY)")
    p.set_defaults(func=cmd_scale)
