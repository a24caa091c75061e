"""Network specifications as plain data (paper Table 1).

A baseline is a list of stages. Nothing here imports torch: specs can be
printed, compared and scaled without building a model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import EffnetError, check_int, check_number


@dataclass(frozen=True)
class StageSpec:
    """One row of paper Table 1: `repeats` identical blocks, the first with `stride`.

    `block` names the operator: ``"mbconv"`` (mobile inverted bottleneck,
    Sandler et al. 2018, with optional squeeze-and-excitation) or
    ``"bottleneck"`` (ResNet bottleneck, used by the ResNet-style baseline).
    """

    block: str
    kernel: int
    stride: int
    expand_ratio: float
    out_channels: int
    repeats: int
    se_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.block not in ("mbconv", "bottleneck"):
            raise EffnetError(f"unknown block type {self.block!r}: use 'mbconv' or 'bottleneck'")
        _odd(self.kernel, "kernel")
        if check_int(self.stride, "stride", 1) not in (1, 2):
            raise EffnetError(f"stride must be 1 or 2, got {self.stride}")
        check_number(self.expand_ratio, "expand_ratio", 0, low_open=True)
        check_int(self.out_channels, "out_channels", 1)
        check_int(self.repeats, "repeats", 1)
        check_number(self.se_ratio, "se_ratio", 0, 1)


def _odd(value: object, name: str) -> None:
    if check_int(value, name, 1) % 2 == 0:
        raise EffnetError(f"{name} must be a positive odd number, got {value}")


def _check_network(spec: NetworkSpec) -> None:
    """Type and range of every field of a NetworkSpec (a spec.json is data from anywhere)."""
    if not isinstance(spec.name, str) or not spec.name:
        raise EffnetError(f"name must be a non-empty string, got {spec.name!r}")
    if not all(isinstance(s, StageSpec) for s in spec.stages):
        raise EffnetError("stages must be StageSpec objects (in JSON: objects with block, "
                          "kernel, stride, expand_ratio, out_channels, repeats, se_ratio)")
    check_int(spec.stem_channels, "stem_channels", 1)
    check_int(spec.head_channels, "head_channels", 0)
    check_int(spec.stem_stride, "stem_stride", 1)
    _odd(spec.stem_kernel, "stem_kernel")
    if not isinstance(spec.activation, str):
        raise EffnetError(f"activation must be a name such as 'silu', got {spec.activation!r}")
    for flag in ("scale_stem_head", "fix_first_last_repeats"):
        if not isinstance(getattr(spec, flag), bool):
            raise EffnetError(f"{flag} must be true or false, got {getattr(spec, flag)!r}")
    check_number(spec.width_mult, "width_mult", 0, low_open=True)
    check_number(spec.depth_mult, "depth_mult", 0, low_open=True)
    if spec.phi is not None:
        check_number(spec.phi, "phi", -float("inf"))
    if spec.base is not None and not isinstance(spec.base, str):
        raise EffnetError(f"base must be a model name, got {spec.base!r}")


@dataclass(frozen=True)
class NetworkSpec:
    """A whole network: stem conv, stages, 1x1 head conv, pooling and classifier.

    `scale_stem_head` is True for the B-series (stem 32 and head 1280 grow with
    width) and False for Lite. `fix_first_last_repeats` keeps the first and
    last stage's repeat counts unscaled (Lite).

    A compound-scaled spec (paper Eq. 3) records where it came from: `phi`,
    the `base` model name and the `coefficients` (alpha, beta, gamma). These
    are set by building a new spec (`with_`), never changed in place: every
    field is immutable, so shared baselines cannot change under you.
    """

    name: str
    stages: tuple[StageSpec, ...]
    stem_channels: int = 32
    head_channels: int = 1280
    activation: str = "silu"
    scale_stem_head: bool = True
    fix_first_last_repeats: bool = False
    stem_stride: int = 2
    stem_kernel: int = 3
    width_mult: float = 1.0
    depth_mult: float = 1.0
    phi: float | None = None
    base: str | None = None
    coefficients: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        # Lists would make a frozen spec mutable after all: store tuples.
        object.__setattr__(self, "stages", tuple(self.stages))
        _check_network(self)
        if self.coefficients is not None:
            coefficients = tuple(self.coefficients)
            if len(coefficients) != 3:
                raise EffnetError("coefficients must be (alpha, beta, gamma)")
            object.__setattr__(self, "coefficients", tuple(
                check_number(c, n, 0, low_open=True) for c, n in
                zip(coefficients, ("alpha", "beta", "gamma"), strict=True)))

    @property
    def meta(self) -> dict[str, float | str]:
        """A fresh dict of phi and base (empty for a baseline), for older code; not stored."""
        fields = {"phi": self.phi, "base": self.base}
        return {k: v for k, v in fields.items() if v is not None}

    @property
    def num_blocks(self) -> int:
        """Total number of blocks over all stages."""
        return sum(s.repeats for s in self.stages)

    def with_(self, **changes) -> NetworkSpec:
        """A copy with some fields changed."""
        return replace(self, **changes)


def _mb(k: int, s: int, e: float, c: int, r: int, se: float = 0.25) -> StageSpec:
    return StageSpec("mbconv", kernel=k, stride=s, expand_ratio=e, out_channels=c, repeats=r,
                     se_ratio=se)


# Paper Table 1: EfficientNet-B0, found by the FLOPs-aware MnasNet search.
EFFICIENTNET_B0 = NetworkSpec(
    name="efficientnet-b0",
    stages=(
        _mb(3, 1, 1, 16, 1),
        _mb(3, 2, 6, 24, 2),
        _mb(5, 2, 6, 40, 2),
        _mb(3, 2, 6, 80, 3),
        _mb(5, 1, 6, 112, 3),
        _mb(5, 2, 6, 192, 4),
        _mb(3, 1, 6, 320, 1),
    ),
)

# EfficientNet-Lite: B0 without SE, ReLU6, stem and head fixed, first and last
# stage repeats fixed (tensorflow/tpu lite builder).
EFFICIENTNET_LITE = NetworkSpec(
    name="efficientnet-lite",
    stages=tuple(replace(s, se_ratio=0.0) for s in EFFICIENTNET_B0.stages),
    activation="relu6",
    scale_stem_head=False,
    fix_first_last_repeats=True,
)

# MobileNetV2 (Sandler et al. 2018, Table 2), the paper's Table 3 baseline:
# MBConv without SE, ReLU6, all 3x3 kernels.
MOBILENET_V2 = NetworkSpec(
    name="mobilenetv2",
    stages=(
        _mb(3, 1, 1, 16, 1, 0.0),
        _mb(3, 2, 6, 24, 2, 0.0),
        _mb(3, 2, 6, 32, 3, 0.0),
        _mb(3, 2, 6, 64, 4, 0.0),
        _mb(3, 1, 6, 96, 3, 0.0),
        _mb(3, 2, 6, 160, 3, 0.0),
        _mb(3, 1, 6, 320, 1, 0.0),
    ),
    activation="relu6",
)

# ResNet-50 (He et al. 2016) as a spec, the paper's Table 3 baseline. The
# bottleneck's `expand_ratio` is its channel reduction (out / 4 inside). The
# 7x7 stem and max-pool of the original are folded into a stride-4 stem here
# (stride 2 conv followed by the first stage's stride 2).
RESNET_50 = NetworkSpec(
    name="resnet50",
    stages=(
        StageSpec("bottleneck", 3, 2, 0.25, 256, 3),
        StageSpec("bottleneck", 3, 2, 0.25, 512, 4),
        StageSpec("bottleneck", 3, 2, 0.25, 1024, 6),
        StageSpec("bottleneck", 3, 2, 0.25, 2048, 3),
    ),
    stem_channels=64,
    head_channels=0,
    activation="relu",
    stem_kernel=7,
)

BASELINES: dict[str, NetworkSpec] = {
    "b0": EFFICIENTNET_B0,
    "lite": EFFICIENTNET_LITE,
    "mobilenetv2": MOBILENET_V2,
    "resnet50": RESNET_50,
}
# The same baselines as the model zoo spells them (its lite0 is the Lite baseline).
_BASELINE_ALIASES = {"lite0": "lite", "mobilenet_v2": "mobilenetv2", "resnet_50": "resnet50"}


def baseline_name(text: str) -> str | None:
    """The :data:`BASELINES` key `text` names, or None: case, '-' for '_', an 'efficientnet_'
    prefix and the zoo's names of the baselines (lite0 for lite) are accepted."""
    key = str(text).strip().lower().replace("-", "_")
    for prefix in ("tf_efficientnet_", "efficientnet_"):
        key = key.removeprefix(prefix)
    key = _BASELINE_ALIASES.get(key, key)
    return key if key in BASELINES else None


# ---------------------------------------------------------------- specs as JSON files
SPEC_FORMAT = "effnet-spec"


def spec_to_dict(spec: NetworkSpec) -> dict:
    """`spec` as plain JSON-able data (the inverse of :func:`spec_from_dict`)."""
    from dataclasses import asdict

    d = asdict(spec)
    d["stages"] = [dict(s) for s in d["stages"]]
    if d.get("coefficients") is not None:
        d["coefficients"] = list(d["coefficients"])
    return d


def spec_from_fields(data: dict) -> NetworkSpec:
    """The :class:`NetworkSpec` of :func:`spec_to_dict`'s data; a malformed field raises the
    KeyError, TypeError or ValueError it causes (callers say what to do about it)."""
    fields = dict(data)
    fields["stages"] = tuple(StageSpec(**dict(s)) for s in fields["stages"])
    if fields.get("coefficients") is not None:
        fields["coefficients"] = tuple(fields["coefficients"])
    fields.pop("meta", None)
    return NetworkSpec(**fields)


def spec_from_dict(data: dict) -> NetworkSpec:
    """A validated :class:`NetworkSpec` from :func:`spec_to_dict`'s data (or a spec.json's)."""
    if not isinstance(data, dict):
        raise EffnetError(f"a network spec must be a JSON object, got {type(data).__name__}")
    if data.get("format") == SPEC_FORMAT:
        data = data.get("spec")
        if not isinstance(data, dict):
            raise EffnetError("the spec file has no \"spec\" object: write it with "
                              "effnet.spec.save_spec")
    try:
        spec = spec_from_fields(data)
    except (KeyError, TypeError, ValueError) as err:
        raise EffnetError(f"not a valid network spec ({str(err).splitlines()[0][:160]}): give "
                          "a spec.json written by `effnet nas` or effnet.spec.save_spec") from None
    if not spec.stages:
        raise EffnetError("a network spec needs at least one stage")
    return spec


def save_spec(spec: NetworkSpec, path, **extra) -> None:
    """Write `spec` to a JSON file atomically (``{"format": "effnet-spec", "spec": ...}``).

    `extra` adds JSON-able fields beside the spec (e.g. the search that found it).
    """
    from .io_utils import atomic_write_json

    atomic_write_json(path, {"format": SPEC_FORMAT, **extra, "spec": spec_to_dict(spec)})


def is_spec_path(text) -> bool:
    """Whether `text` names a spec file (ends in .json or is an existing file), not a model name."""
    import os

    return isinstance(text, str | os.PathLike) and (str(text).endswith(".json")
                                                   or os.path.isfile(text))


def load_spec(path) -> NetworkSpec:
    """The :class:`NetworkSpec` in a spec.json file (written by :func:`save_spec`, `effnet nas`)."""
    import json
    from pathlib import Path

    from .io_utils import first_line

    p = Path(path)
    if not p.is_file():
        raise EffnetError(f"no spec file at {p}: give the spec.json that `effnet nas` wrote")
    try:
        data = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise EffnetError(f"{p} is not JSON that effnet reads ({first_line(err, 120)}): give "
                          "a spec.json written by `effnet nas`") from None
    return spec_from_dict(data)
