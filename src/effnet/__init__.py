"""effnet: EfficientNet (Tan & Le, ICML 2019) on PyTorch, with compound scaling as an API.

The names below load their module on first use (PEP 562), so `import
effnet.spec` or `effnet.scaling` stays free of torch.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from ._lazy import lazy_exports

__version__ = "0.1.0"

# Public name -> the module (relative to this package) that defines it.
_EXPORTS: dict[str, str] = {
    "BASELINES": "spec",
    "NetworkSpec": "spec",
    "StageSpec": "spec",
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
    "optimize_for_inference": "fast",
    "Profile": "profile",
    "profile": "profile",
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
    "load_weights",
    "optimize_for_inference",
    "profile",
    "round_filters",
    "round_repeats",
    "save_pretrained",
    "scale",
]

if TYPE_CHECKING:
    from .fast import optimize_for_inference
    from .model_factory import create_model, list_models
    from .nn.features import EfficientNetFeatures
    from .nn.model import EfficientNet
    from .profile import Profile, profile
    from .scaling import CompoundScaling, round_filters, round_repeats, scale
    from .spec import BASELINES, NetworkSpec, StageSpec
    from .weights import load_weights, save_pretrained


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


class _Package(types.ModuleType):
    """Keeps `effnet.profile` the function when the submodule `effnet.profile` is imported.

    Importing a submodule binds its name on the package; for a name that is
    also an export (only `profile`), the export wins, as with eager imports.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _EXPORTS:
            self.__dict__.pop(name, None)  # resolved again, to the export, on next access
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
