"""Scaled candidates: a baseline spec scaled in width, depth and resolution, with measured cost.

Every proxy model of the grid search, the study and the baseline search is
built here (:meth:`Scaled.build`, the proxy network's settings in one place),
from a baseline scaled by :func:`effnet.scaling.scale`,
and its parameters and multiply-adds are *measured* on the built module
(:func:`effnet.profiling.count_macs`), never computed from the
alpha * beta^2 * gamma^2 formula: channel rounding to multiples of 8,
repeat rounding by ceil and the discrete feature-map sizes at small
resolutions all move the real cost away from the formula.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from ..nn.model import EfficientNet
from ..profiling import count_macs, count_params
from ..scaling import scale, scaled_resolution  # noqa: F401 (re-exported)
from ..spec import BASELINES, NetworkSpec, baseline_name, is_spec_path, load_spec

# The proxy network's regularisation and BN momentum (see Scaled.build).
DROP_RATE = 0.1
DROP_PATH_RATE = 0.05
BN_MOMENTUM = 0.1


def baseline(base: str | NetworkSpec) -> NetworkSpec:
    """``BASELINES[base]``, the spec in the spec.json file `base` names (e.g. `effnet nas`'s),
    or `base` itself when it is a spec."""
    if isinstance(base, NetworkSpec):
        return base
    if base in BASELINES:
        return BASELINES[base]
    if is_spec_path(base):
        return load_spec(base)
    if (key := baseline_name(base)) is not None:
        return BASELINES[key]
    raise ValueError(f"unknown baseline {base!r}: use one of {', '.join(BASELINES)} (lite0 for "
                     "lite is accepted), or the path of a spec.json (from `effnet nas`)")


@dataclass(frozen=True)
class Scaled:
    """One scaled network: multipliers relative to the baseline and the input resolution.

    `base` is a name in :data:`effnet.spec.BASELINES`, a spec.json path or a spec.
    `width_mult` and `depth_mult` are relative to the baseline of the paper
    (B0, MobileNetV2, ResNet-50), so a proxy base of width 0.25 scaled by
    beta = 1.1 has width_mult 0.275.
    """

    base: str | NetworkSpec
    width_mult: float
    depth_mult: float
    resolution: int
    stem_stride: int | None = None
    strides: tuple[int, ...] | None = None
    divisor: int | None = None

    def __post_init__(self) -> None:
        if self.strides is not None:  # a JSON list back as a tuple (the dataclass is frozen)
            object.__setattr__(self, "strides", tuple(self.strides))

    def spec(self) -> NetworkSpec:
        """The concrete spec (channel and repeat counts rounded, paper Eq. 3).

        `stem_stride` replaces the baseline's (2) for small inputs: stride 1
        keeps a 16-px image at 16 px after the stem, as CIFAR variants of
        ImageNet networks do. `strides` replaces every stage's stride (so a
        small input keeps a map of several pixels in the last stages) and
        `divisor` the channel rounding (:func:`effnet.scaling.scale`).
        """
        spec = scale(baseline(self.base), self.width_mult, self.depth_mult,
                     divisor=self.divisor or 8)
        if self.stem_stride is not None:
            spec = spec.with_(stem_stride=self.stem_stride)
        if self.strides is not None:
            if len(self.strides) != len(spec.stages):
                raise ValueError(f"strides has {len(self.strides)} entries, the baseline "
                                 f"{spec.name} {len(spec.stages)} stages: give one per stage")
            spec = spec.with_(stages=tuple(replace(st, stride=s) for st, s
                                           in zip(spec.stages, self.strides, strict=True)))
        return spec

    def build(self, num_classes: int = 10, in_chans: int = 1, drop_rate: float = DROP_RATE,
              drop_path_rate: float = DROP_PATH_RATE,
              bn_momentum: float = BN_MOMENTUM) -> EfficientNet:
        """The module, freshly initialised (seed the torch RNG before calling).

        Proxy runs are short, so BN uses PyTorch's running-average momentum 0.1
        rather than TF's 0.01: after ~100 steps at 0.01 the running statistics
        are still far from the data's, and eval accuracy stays at chance
        (measured here: 10% in eval mode against 55% with batch statistics).
        """
        return EfficientNet(self.spec(), num_classes=num_classes, in_chans=in_chans,
                            drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                            bn_momentum=bn_momentum)


@dataclass(frozen=True)
class Cost:
    """Measured parameters and multiply-adds of one forward pass at batch 1."""

    params: int
    macs: int

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, model: nn.Module, resolution: int) -> Cost:
        """The parameters of `model` and its MACs on one `resolution`-px image."""
        return cls(params=count_params(model), macs=count_macs(model, resolution))


def measure(scaled: Scaled, num_classes: int = 10, in_chans: int = 1,
            device: str = "meta") -> Cost:
    """Parameters and MACs of `scaled`, counted on the module built on `device`.

    The meta device needs no memory; for models of a few MACs a real forward
    pass on the CPU is about 3x faster than its shape propagation.
    """
    if scaled.resolution < 8:
        raise ValueError(f"resolution {scaled.resolution} is too small: use >= 8 pixels")
    with torch.device(device):
        return Cost.of(scaled.build(num_classes=num_classes, in_chans=in_chans),
                       scaled.resolution)
