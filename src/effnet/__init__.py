"""effnet: EfficientNet (Tan & Le, ICML 2019) on PyTorch, with compound scaling as an API."""

from .fast import optimize_for_inference
from .model_factory import create_model, list_models
from .nn.model import EfficientNet
from .profile import Profile, profile
from .scaling import CompoundScaling, round_filters, round_repeats, scale
from .spec import BASELINES, NetworkSpec, StageSpec
from .weights import load_weights, save_pretrained

__version__ = "0.1.0"

__all__ = [
    "BASELINES",
    "CompoundScaling",
    "EfficientNet",
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
