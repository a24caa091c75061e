"""Size of a network from its spec alone, checked before any module is built.

A spec can ask for more than a machine holds (``effnet scale --phi 100``, a
config.json with 10^7 repeats): building it would grow memory until the
process is killed. :func:`check_model_size` takes the exact parameter and
multiply-add counts (:mod:`effnet.cost`) and the number of blocks, estimates the
activation memory of one image (roughly: what a forward keeps per block) and
refuses a model over the limits, which the user can raise with environment
variables:

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

from .cost import spec_cost
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


def check_kernel(kernel: int, size: int, where: str) -> None:
    """Refuse a kernel larger than the map it meets (see the module docstring)."""
    if kernel > max(SMALL_KERNEL, 2 * size - 1):
        raise EffnetError(f"{where}: kernel {kernel} meets a {size}x{size} map, larger than the "
                          f"map (at most {max(SMALL_KERNEL, 2 * size - 1)} there): use a smaller "
                          "kernel or a larger resolution")


def _block_activations(st, cin: int, size: int, stride: int) -> tuple[float, int]:
    """(activation elements, output size) of one block of stage `st`.

    Kept per block: input, expanded maps before and after the kxk conv (conv, BN,
    activation each), output.
    """
    out_size = math.ceil(size / stride)
    mid = (int(round(cin * st.expand_ratio)) if st.block == "mbconv"
           else max(1, int(round(st.out_channels * st.expand_ratio))))
    act = (cin * size**2 + 3 * mid * (size**2 + out_size**2)
           + 2 * st.out_channels * out_size**2)
    return float(act), out_size


def estimate_size(spec: NetworkSpec, resolution: int, in_chans: int = 3,
                  num_classes: int = 1000) -> SizeEstimate:
    """Estimate what building `spec` costs, without building it; EffnetError for a kernel
    larger than the map it meets. Parameters and MACs are exact (:func:`effnet.cost.spec_cost`)."""
    check_kernel(spec.stem_kernel, resolution, f"{spec.name}'s stem")
    size = math.ceil(resolution / spec.stem_stride)
    act = float(in_chans * resolution**2 + spec.stem_channels * size**2)
    cin = spec.stem_channels
    for i, st in enumerate(spec.stages):
        check_kernel(st.kernel, size, f"{spec.name}'s stage {i + 1}")
        # the first block of a stage changes channels and stride; the other repeats - 1 are alike
        a0, size_out = _block_activations(st, cin, size, st.stride)
        a1, _ = _block_activations(st, st.out_channels, size_out, 1)
        act += a0 + (st.repeats - 1) * a1
        cin, size = st.out_channels, size_out
    if spec.head_channels:
        act += 3 * spec.head_channels * size**2
    # below 1 px the caller refuses the size in its own words: count as at 1 px until then
    cost = spec_cost(spec, max(1, resolution), in_chans, num_classes)
    return SizeEstimate(params=cost.params, blocks=spec.num_blocks, activation_bytes=4.0 * act,
                        macs=cost.macs)


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


def check_workers(workers: int, name: str = "num_workers") -> None:
    """Refuse a number of worker processes below 0 or above the usable CPUs (a ParameterError
    naming parameter `name`)."""
    from .errors import ParameterError

    cpus = usable_cpus()
    if not 0 <= workers <= cpus:
        raise ParameterError(f"{name} {workers} is out of range: use 0..{cpus} (worker "
                             f"processes, at most the {cpus} CPU(s) this process may use)", name)
