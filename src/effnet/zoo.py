"""The named EfficientNet models (paper Table 2 and the official coefficient table).

Width, depth, resolution and dropout are the official values of the
reference implementation (tensorflow/tpu `efficientnet_params`, and the Lite
builder). Note that they are not exactly alpha^phi, beta^phi, gamma^phi for
integer phi: the paper's B1..B7 were hand-rounded.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from .errors import EffnetError
from .scaling import CompoundScaling, scale
from .spec import BASELINES, EFFICIENTNET_B0, EFFICIENTNET_LITE, NetworkSpec, baseline_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Lite models take (x - 127) / 128 on 0..255 pixels, i.e. mean 127/255, std 128/255.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3


@dataclass(frozen=True)
class ModelEntry:
    """One named model: its baseline, multipliers and preprocessing.

    `paper_params_m` / `paper_macs_b` are the paper's Table 2 numbers (millions
    of parameters, billions of multiply-adds), or the Lite README's, where
    published.
    """

    name: str
    base: NetworkSpec
    width_mult: float
    depth_mult: float
    resolution: int
    dropout: float
    crop_pct: float
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    paper_params_m: float | None = None
    paper_macs_b: float | None = None

    @property
    def spec(self) -> NetworkSpec:
        """The scaled network spec."""
        return scale(self.base, self.width_mult, self.depth_mult).with_(name=self.name)

    def pretrained_cfg(self) -> dict:
        """Preprocessing in timm's pretrained_cfg shape."""
        return {
            "input_size": (3, self.resolution, self.resolution),
            "mean": self.mean,
            "std": self.std,
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
            "num_classes": 1000,
            "first_conv": "stem.conv",
            "classifier": "classifier",
        }


def _b(name, w, d, res, drop, crop, params=None, macs=None) -> ModelEntry:
    return ModelEntry(name, EFFICIENTNET_B0, w, d, res, drop, crop,
                      paper_params_m=params, paper_macs_b=macs)


def _lite(name, w, d, res, drop, crop, params, macs, interp="bicubic") -> ModelEntry:
    return ModelEntry(name, EFFICIENTNET_LITE, w, d, res, drop, crop, interpolation=interp,
                      mean=LITE_MEAN, std=LITE_STD, paper_params_m=params, paper_macs_b=macs)


# crop_pct: res / (res + 32), the reference eval crop (as listed by timm).
MODELS: dict[str, ModelEntry] = {m.name: m for m in (
    _b("b0", 1.0, 1.0, 224, 0.2, 0.875, 5.3, 0.39),
    _b("b1", 1.0, 1.1, 240, 0.2, 0.882, 7.8, 0.70),
    _b("b2", 1.1, 1.2, 260, 0.3, 0.890, 9.2, 1.0),
    _b("b3", 1.2, 1.4, 300, 0.3, 0.904, 12, 1.8),
    _b("b4", 1.4, 1.8, 380, 0.4, 0.922, 19, 4.2),
    _b("b5", 1.6, 2.2, 456, 0.4, 0.934, 30, 9.9),
    _b("b6", 1.8, 2.6, 528, 0.5, 0.942, 43, 19),
    _b("b7", 2.0, 3.1, 600, 0.5, 0.949, 66, 37),
    _b("b8", 2.2, 3.6, 672, 0.5, 0.954),
    _b("l2", 4.3, 5.3, 800, 0.5, 0.960),
    _lite("lite0", 1.0, 1.0, 224, 0.2, 0.875, 4.7, 0.407),
    _lite("lite1", 1.0, 1.1, 240, 0.2, 0.882, 5.4, 0.631),
    _lite("lite2", 1.1, 1.2, 260, 0.3, 0.890, 6.1, 0.899),
    _lite("lite3", 1.2, 1.4, 280, 0.3, 0.904, 8.2, 1.44, "bilinear"),
    _lite("lite4", 1.4, 1.8, 300, 0.3, 0.904, 13.0, 2.64, "bilinear"),
)}

# A spec.BASELINES name -> the named model that is that baseline unscaled ('lite' -> 'lite0').
_BASE_MODELS = {key: m.name for key, spec in BASELINES.items() for m in MODELS.values()
                if m.base is spec and m.width_mult == m.depth_mult == 1.0}


def canonical_name(name: str) -> str:
    """Map user spellings ('efficientnet_b0', 'efficientnet-b0', 'B0') and the baselines' names
    ('lite' for lite0, as in spec.BASELINES) to a zoo key."""
    key = str(name).strip().lower().replace("-", "_")
    for prefix in ("tf_efficientnet_", "efficientnet_"):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    key = _BASE_MODELS.get(baseline_name(key) or "", key)  # 'lite', a spec.BASELINES name
    if key not in MODELS:
        raise EffnetError(f"unknown model {name!r}: choose one of {', '.join(MODELS)} "
                         "(the prefix 'efficientnet_' is accepted too)")
    return key


def list_models(pattern: str = "*") -> list[str]:
    """Names of the named models (b0..b8, l2, lite0..lite4), filtered by a glob pattern."""
    return [n for n in MODELS if fnmatch.fnmatch(n, pattern)]


def compound_scaled(name: str, phi: float,
                    scaling: CompoundScaling | None = None) -> tuple[NetworkSpec, int]:
    """The baseline `name` (b0 or lite0) compound-scaled by `phi` (paper Eq. 3), and its
    input resolution; `scaling` defaults to the paper's alpha=1.2, beta=1.1, gamma=1.15."""
    entry = MODELS[canonical_name(name)]
    if entry.width_mult != 1.0 or entry.depth_mult != 1.0:
        raise EffnetError(f"phi scales a baseline: use name='b0' or 'lite0', not {name!r}")
    scaling = scaling or CompoundScaling()
    resolution = scaling.coefficients(phi, entry.resolution).resolution
    return scaling.scale(entry.base, phi, base_name=entry.name), resolution
