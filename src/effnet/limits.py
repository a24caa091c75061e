"""Size of a network from its spec alone, checked before any module is built.

A spec can ask for more than a machine holds (``effnet scale --phi 100``, a
config.json with 10^7 repeats): building it would grow memory until the
process is killed. :func:`check_model_size` estimates the parameter count
(exact for the layers effnet builds: convs, BN, SE, head, classifier), the
number of blocks, and the activation memory of one image (roughly: what a
forward keeps per block) and refuses a model over the limits, which the user
can raise with environment variables:

* ``EFFNET_MAX_PARAMS`` (default 2e9: 8 GB of float32 weights; L2 has 480M)
* ``EFFNET_MAX_BLOCKS`` (default 10000; B7 has 55, L2 about 120)
* ``EFFNET_MAX_ACTIVATION_GIB`` (default 64 GiB per image at the model's resolution)

No torch here: this runs on the spec (pure data).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .errors import EffnetError
from .spec import NetworkSpec

LIMITS = {"EFFNET_MAX_PARAMS": 2e9, "EFFNET_MAX_BLOCKS": 1e4, "EFFNET_MAX_ACTIVATION_GIB": 64.0}


@dataclass(frozen=True)
class SizeEstimate:
    """Parameters, blocks and float32 activation bytes (batch 1) of a spec at a resolution."""

    params: int
    blocks: int
    activation_bytes: float


def _conv(cin: int, cout: int, k: int, groups: int = 1) -> int:
    return cin // groups * cout * k * k + 2 * cout  # conv weight + BN gamma, beta


def _block(st, cin: int, size: int, stride: int) -> tuple[int, float, int]:
    """(parameters, activation elements, output size) of one block of stage `st`."""
    out_size = math.ceil(size / stride)
    params = 0
    if st.block == "mbconv":
        mid = int(round(cin * st.expand_ratio))
        params += _conv(cin, mid, 1) if st.expand_ratio != 1 else 0
        params += _conv(mid, mid, st.kernel, groups=mid)
    else:  # bottleneck
        mid = max(1, int(round(st.out_channels * st.expand_ratio)))
        params += _conv(cin, mid, 1) + _conv(mid, mid, st.kernel)
        if stride != 1 or cin != st.out_channels:
            params += _conv(cin, st.out_channels, 1)
    if st.se_ratio > 0:
        red = max(1, int(cin * st.se_ratio))
        params += 2 * mid * red + red + mid
    params += _conv(mid, st.out_channels, 1)
    # kept per block: input, expanded maps before and after the kxk conv (conv, BN, activation
    # each), output
    act = (cin * size**2 + 3 * mid * (size**2 + out_size**2)
           + 2 * st.out_channels * out_size**2)
    return params, float(act), out_size


def estimate_size(spec: NetworkSpec, resolution: int, in_chans: int = 3,
                  num_classes: int = 1000) -> SizeEstimate:
    """Estimate what building `spec` costs, without building it."""
    size = math.ceil(resolution / spec.stem_stride)
    params = _conv(in_chans, spec.stem_channels, spec.stem_kernel)
    act = float(in_chans * resolution**2 + spec.stem_channels * size**2)
    cin = spec.stem_channels
    for st in spec.stages:
        # the first block of a stage changes channels and stride; the other repeats - 1 are alike
        p0, a0, size_out = _block(st, cin, size, st.stride)
        p1, a1, _ = _block(st, st.out_channels, size_out, 1)
        params += p0 + (st.repeats - 1) * p1
        act += a0 + (st.repeats - 1) * a1
        cin, size = st.out_channels, size_out
    if spec.head_channels:
        params += _conv(cin, spec.head_channels, 1)
        act += 3 * spec.head_channels * size**2
        cin = spec.head_channels
    params += cin * num_classes + num_classes
    return SizeEstimate(params=params, blocks=spec.num_blocks, activation_bytes=4.0 * act)


def _limit(name: str) -> float:
    text = os.environ.get(name)
    if not text:
        return LIMITS[name]
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise EffnetError(f"{name}={text!r} must be a positive number")
    return value


def check_model_size(spec: NetworkSpec, resolution: int, in_chans: int = 3,
                     num_classes: int = 1000, activations: bool = True) -> SizeEstimate:
    """Refuse a spec over the size limits (see the module docstring), before it is built."""
    est = estimate_size(spec, resolution, in_chans, num_classes)
    checks = [("EFFNET_MAX_PARAMS", est.params, f"{est.params:.3g} parameters"),
              ("EFFNET_MAX_BLOCKS", est.blocks, f"{est.blocks:,} blocks")]
    if activations:
        checks.append(("EFFNET_MAX_ACTIVATION_GIB", est.activation_bytes / 2**30,
                       f"~{est.activation_bytes / 2**30:.3g} GiB of activations per image at "
                       f"{resolution} px"))
    for name, value, what in checks:
        limit = _limit(name)
        if value > limit:
            raise EffnetError(f"{spec.name} would have {what}, over the limit {limit:g}: "
                              f"choose a smaller model, or raise it with {name}=...")
    return est
