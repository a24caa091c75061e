"""Parameters and multiply-adds of a spec in closed form (paper Table 2's #Params and #FLOPS).

What a spec costs follows from its stages alone: channels, kernels, strides,
expansion, SE, head, classifier and the input resolution. :func:`spec_cost`
returns exactly what effnet measures on the built model with
`torch.utils.flop_counter` (:func:`effnet.profiling.count_macs`, the oracle of
the tests), without building anything:

* parameters: conv weights, BN's gamma and beta, SE's biases, the classifier;
* MACs: convolutions and the classifier only (BN, activations, pooling and
  SE's gating count 0), the paper's FLOPS unit (B0 at 224 px: 0.39B);
* a depthwise conv on a map smaller than its kernel runs only the taps that
  meet data (:func:`crop_window`), and where one tap is left it is a
  per-channel scale, not a conv, so it counts 0 (B0 at 32 px, the proxies);
* TensorFlow SAME padding (``padding="same"``) pads strided convs
  asymmetrically, which moves that window.

O(stages), not O(blocks): the repeats of a stage after its first block are
alike. No torch here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .errors import EffnetError
from .spec import NetworkSpec, StageSpec
from .zoo import MODELS, canonical_name

Pads = tuple[int, int]  # (before, after) along one spatial dimension


@dataclass(frozen=True)
class Cost:
    """Parameters and multiply-adds of one forward pass at batch 1."""

    params: int
    macs: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.macs + other.macs)

    def __mul__(self, times: int) -> Cost:
        return Cost(self.params * times, self.macs * times)

    def as_dict(self) -> dict:
        return asdict(self)


NOTHING = Cost(0, 0)


def same_padding(size: int, kernel: int, stride: int) -> Pads:
    """TensorFlow 'SAME' padding (before, after) of one dimension: the odd pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def crop_window(size: int, kernel: int, stride: int, before: int,
                after: int) -> tuple[int, int, int, int]:
    """The taps of a 1-D conv that meet data, and the padding that keeps the output.

    For an input of `size` padded by `before` / `after`, returns `(lo, hi,
    new_before, new_after)`: only taps lo..hi ever read real input, and a conv
    with just those taps, padded so, gives the same output (the rule
    effnet's depthwise convs run by).
    """
    out = (size + before + after - kernel) // stride + 1
    lo = max(0, before - (out - 1) * stride)
    hi = min(kernel - 1, size - 1 + before)
    if lo == 0 and hi == kernel - 1:
        return 0, kernel - 1, before, after
    new_before = before - lo
    new_after = (out - 1) * stride + (hi - lo + 1) - size - new_before
    if new_after < new_before <= new_after + stride - 1:
        new_after = new_before  # any pad in that range gives `out`: keep it symmetric
    return lo, hi, new_before, new_after


def _pads(size: int, kernel: int, stride: int, padding: str) -> Pads:
    if padding == "same" and stride > 1:
        return same_padding(size, kernel, stride)
    return (kernel - 1) // 2, (kernel - 1) // 2


def conv_cost(cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1,
              padding: str = "symmetric", bn: bool = True, bias: bool = False
              ) -> tuple[Cost, int]:
    """Cost of a k x k conv on a `size` x `size` map (with BN's gamma and beta, or a bias),
    and the output size.

    A depthwise conv (groups = in = out channels, k > 1) counts only the taps
    that meet data (:func:`crop_window`), and nothing where one unpadded tap is
    left (a per-channel scale).
    """
    before, after = _pads(size, kernel, stride, padding)
    out = (size + before + after - kernel) // stride + 1
    params = cin // groups * cout * kernel * kernel + 2 * cout * bn + cout * bias
    taps = kernel
    if groups == cin == cout and kernel > 1:
        lo, hi, new_before, new_after = crop_window(size, kernel, stride, before, after)
        taps = hi - lo + 1
        if taps == 1 and new_before == new_after == 0:
            return Cost(params, 0), out
    return Cost(params, cin // groups * cout * taps * taps * out * out), out


def _mbconv(st: StageSpec, cin: int, stride: int, size: int, padding: str) -> tuple[Cost, int]:
    """One MBConv block (paper Table 1): 1x1 expand, k x k depthwise, SE, 1x1 project."""
    mid = int(round(cin * st.expand_ratio))
    cost = NOTHING
    if st.expand_ratio != 1:
        cost += conv_cost(cin, mid, 1, 1, size, padding=padding)[0]
    dw, out = conv_cost(mid, mid, st.kernel, stride, size, groups=mid, padding=padding)
    cost += dw + _se(cin, mid, st.se_ratio)
    return cost + conv_cost(mid, st.out_channels, 1, 1, out, padding=padding)[0], out


def _bottleneck(st: StageSpec, cin: int, stride: int, size: int,
                padding: str) -> tuple[Cost, int]:
    """One ResNet bottleneck: 1x1 reduce, k x k (strided), SE, 1x1 expand, projection shortcut."""
    mid = max(1, int(round(st.out_channels * st.expand_ratio)))
    cost = conv_cost(cin, mid, 1, 1, size, padding=padding)[0]
    conv, out = conv_cost(mid, mid, st.kernel, stride, size, padding=padding)
    cost += conv + _se(cin, mid, st.se_ratio)
    cost += conv_cost(mid, st.out_channels, 1, 1, out, padding=padding)[0]
    if stride != 1 or cin != st.out_channels:
        cost += conv_cost(cin, st.out_channels, 1, stride, size, padding=padding)[0]
    return cost, out


def _se(cin: int, mid: int, se_ratio: float) -> Cost:
    """Squeeze-and-excitation on the pooled 1x1 map, reduced from the block's input channels."""
    if se_ratio <= 0:
        return NOTHING
    reduced = max(1, int(cin * se_ratio))
    return (conv_cost(mid, reduced, 1, 1, 1, bn=False, bias=True)[0]
            + conv_cost(reduced, mid, 1, 1, 1, bn=False, bias=True)[0])


BLOCK_COSTS = {"mbconv": _mbconv, "bottleneck": _bottleneck}


def spec_cost(spec: NetworkSpec, resolution: int, in_chans: int = 3, num_classes: int = 1000,
              padding: str = "symmetric") -> Cost:
    """Parameters and MACs of `spec` at `resolution` x `resolution` (paper Table 2's columns).

    Exactly what :func:`effnet.profiling.profile` counts on the built
    classifier (stem, stages, head conv, linear classifier; `num_classes` 0
    for none); see the module docstring for what counts.
    """
    if not (isinstance(resolution, int) and resolution >= 1):
        raise EffnetError(f"resolution must be a whole number >= 1, got {resolution!r}")
    if padding not in ("symmetric", "same"):
        raise EffnetError(f"unknown padding {padding!r}: use 'symmetric' or 'same'")
    cost, size = conv_cost(in_chans, spec.stem_channels, spec.stem_kernel, spec.stem_stride,
                           resolution, padding=padding)
    cin = spec.stem_channels
    for st in spec.stages:
        block = BLOCK_COSTS[st.block]
        first, size = block(st, cin, st.stride, size, padding)
        cost += first
        cin = st.out_channels
        if st.repeats > 1:  # the other repeats: stride 1, cin = out, the same map
            cost += block(st, cin, 1, size, padding)[0] * (st.repeats - 1)
    if spec.head_channels:
        cost += conv_cost(cin, spec.head_channels, 1, 1, size, padding=padding)[0]
        cin = spec.head_channels
    if num_classes:
        cost += Cost(cin * num_classes + num_classes, cin * num_classes)
    return cost


def model_cost(name: str, in_chans: int = 3, num_classes: int = 1000,
               padding: str = "symmetric") -> Cost:
    """Parameters and MACs of a named model (paper Table 2) at its own resolution."""
    entry = MODELS[canonical_name(name)]
    return spec_cost(entry.spec, entry.resolution, in_chans, num_classes, padding)
