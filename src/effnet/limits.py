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
* ``EFFNET_MAX_MACS`` (default 1e13 multiply-adds per image; B7 at 600 px has 3.7e10)

A kernel larger than the map it meets (more than ``2 * size - 1`` taps, and more than 7) is
refused too: only the central taps ever touch the map, and a kernel of 1001 costs minutes.
:func:`check_workers` bounds DataLoader worker processes by the CPUs this process may use.

No torch here: this runs on the spec (pure data).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .errors import EffnetError
from .spec import NetworkSpec

LIMITS = {"EFFNET_MAX_PARAMS": 2e9, "EFFNET_MAX_BLOCKS": 1e4, "EFFNET_MAX_ACTIVATION_GIB": 64.0,
          "EFFNET_MAX_MACS": 1e13}
SMALL_KERNEL = 7  # any map may meet a kernel up to this size (B0 at 32 px: 5x5 on 1x1 maps)


@dataclass(frozen=True)
class SizeEstimate:
    """Parameters, blocks, float32 activation bytes and multiply-adds (batch 1) of a spec at a
    resolution."""

    params: int
    blocks: int
    activation_bytes: float
    macs: int = 0


def _conv(cin: int, cout: int, k: int, groups: int = 1) -> int:
    return cin // groups * cout * k * k + 2 * cout  # conv weight + BN gamma, beta


def _macs(cin: int, cout: int, k: int, size: int, groups: int = 1) -> int:
    """Multiply-adds of a conv producing a size x size map."""
    return cin // groups * cout * k * k * size * size


def check_kernel(kernel: int, size: int, where: str) -> None:
    """Refuse a kernel larger than the map it meets (see the module docstring)."""
    if kernel > max(SMALL_KERNEL, 2 * size - 1):
        raise EffnetError(f"{where}: kernel {kernel} meets a {size}x{size} map, larger than the "
                          f"map (at most {max(SMALL_KERNEL, 2 * size - 1)} there): use a smaller "
                          "kernel or a larger resolution")


def _block(st, cin: int, size: int, stride: int) -> tuple[int, float, int, int]:
    """(parameters, activation elements, output size, MACs) of one block of stage `st`."""
    out_size = math.ceil(size / stride)
    params = macs = 0
    if st.block == "mbconv":
        mid = int(round(cin * st.expand_ratio))
        if st.expand_ratio != 1:
            params += _conv(cin, mid, 1)
            macs += _macs(cin, mid, 1, size)
        params += _conv(mid, mid, st.kernel, groups=mid)
        macs += _macs(mid, mid, st.kernel, out_size, groups=mid)
    else:  # bottleneck
        mid = max(1, int(round(st.out_channels * st.expand_ratio)))
        params += _conv(cin, mid, 1) + _conv(mid, mid, st.kernel)
        macs += _macs(cin, mid, 1, size) + _macs(mid, mid, st.kernel, out_size)
        if stride != 1 or cin != st.out_channels:
            params += _conv(cin, st.out_channels, 1)
            macs += _macs(cin, st.out_channels, 1, out_size)
    if st.se_ratio > 0:
        red = max(1, int(cin * st.se_ratio))
        params += 2 * mid * red + red + mid
        macs += 2 * mid * red
    params += _conv(mid, st.out_channels, 1)
    macs += _macs(mid, st.out_channels, 1, out_size)
    # kept per block: input, expanded maps before and after the kxk conv (conv, BN, activation
    # each), output
    act = (cin * size**2 + 3 * mid * (size**2 + out_size**2)
           + 2 * st.out_channels * out_size**2)
    return params, float(act), out_size, macs


def estimate_size(spec: NetworkSpec, resolution: int, in_chans: int = 3,
                  num_classes: int = 1000) -> SizeEstimate:
    """Estimate what building `spec` costs, without building it; EffnetError for a kernel
    larger than the map it meets."""
    check_kernel(spec.stem_kernel, resolution, f"{spec.name}'s stem")
    size = math.ceil(resolution / spec.stem_stride)
    params = _conv(in_chans, spec.stem_channels, spec.stem_kernel)
    macs = _macs(in_chans, spec.stem_channels, spec.stem_kernel, size)
    act = float(in_chans * resolution**2 + spec.stem_channels * size**2)
    cin = spec.stem_channels
    for i, st in enumerate(spec.stages):
        check_kernel(st.kernel, size, f"{spec.name}'s stage {i + 1}")
        # the first block of a stage changes channels and stride; the other repeats - 1 are alike
        p0, a0, size_out, m0 = _block(st, cin, size, st.stride)
        p1, a1, _, m1 = _block(st, st.out_channels, size_out, 1)
        params += p0 + (st.repeats - 1) * p1
        act += a0 + (st.repeats - 1) * a1
        macs += m0 + (st.repeats - 1) * m1
        cin, size = st.out_channels, size_out
    if spec.head_channels:
        params += _conv(cin, spec.head_channels, 1)
        macs += _macs(cin, spec.head_channels, 1, size)
        act += 3 * spec.head_channels * size**2
        cin = spec.head_channels
    params += cin * num_classes + num_classes
    macs += cin * num_classes
    return SizeEstimate(params=params, blocks=spec.num_blocks, activation_bytes=4.0 * act,
                        macs=macs)


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
        checks += [("EFFNET_MAX_ACTIVATION_GIB", est.activation_bytes / 2**30,
                    f"~{est.activation_bytes / 2**30:.3g} GiB of activations per image at "
                    f"{resolution} px"),
                   ("EFFNET_MAX_MACS", est.macs, f"{est.macs:.3g} MACs per image at "
                    f"{resolution} px")]
    for name, value, what in checks:
        limit = _limit(name)
        if value > limit:
            raise EffnetError(f"{spec.name} would have {what}, over the limit {limit:g}: "
                              f"choose a smaller model, or raise it with {name}=...")
    return est


def check_resolution(model, resolution: int) -> SizeEstimate:
    """check_model_size for a built effnet model run at another `resolution` (--image-size)."""
    return check_model_size(model.spec, resolution, model.stem.conv.in_channels,
                            max(1, getattr(model, "num_classes", 0)))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def check_workers(workers: int, flag: str = "--workers") -> None:
    """Refuse a number of worker processes below 0 or above the usable CPUs."""
    cpus = usable_cpus()
    if not 0 <= workers <= cpus:
        raise EffnetError(f"{flag} {workers} is out of range: use 0..{cpus} (worker processes, "
                          f"at most the {cpus} CPU(s) this process may use)")
