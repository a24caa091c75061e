"""effnet: EfficientNet (Tan & Le, ICML 2019) on PyTorch, with compound scaling as an API.

The names below load their module on first use (PEP 562), so `import
effnet.spec` or `effnet.scaling` stays free of torch.
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

# Public name -> the module (relative to this package) that defines it.
_EXPORTS: dict[str, str] = {
    "BASELINES": "spec",
    "NetworkSpec": "spec",
    "StageSpec": "spec",
    "load_spec": "spec",
    "save_spec": "spec",
    "CompoundScaling": "scaling",
    "round_filters": "scaling",
    "round_repeats": "scaling",
    "scale": "scaling",
    "EfficientNet": "nn.model",
    "EfficientNetFeatures": "nn.features",
    "create_model": "model_factory",
    "list_models": "model_factory",
    "load_weights": "weights",
    "save_pretrained": "weights",
    "optimize_for_inference": "inference.optimize",
    "Profile": "profiling",
    "profile": "profiling",
}

__all__ = [
    "BASELINES",
    "CompoundScaling",
    "EfficientNet",
    "EfficientNetFeatures",
    "NetworkSpec",
    "Profile",
    "StageSpec",
    "create_model",
    "list_models",
    "load_spec",
    "load_weights",
    "optimize_for_inference",
    "profile",
    "round_filters",
    "round_repeats",
    "save_pretrained",
    "save_spec",
    "scale",
]

if TYPE_CHECKING:
    from .inference.optimize import optimize_for_inference
    from .model_factory import create_model, list_models
    from .nn.features import EfficientNetFeatures
    from .nn.model import EfficientNet
    from .profiling import Profile, profile
    from .scaling import CompoundScaling, round_filters, round_repeats, scale
    from .spec import BASELINES, NetworkSpec, StageSpec, load_spec, save_spec
    from .weights import load_weights, save_pretrained

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
del TYPE_CHECKING, lazy_exports  # dir(effnet) lists the package's own names only
