"""PyTorch modules built from specs."""

from .blocks import Bottleneck, MBConv
from .features import EfficientNetFeatures
from .layers import Conv2dSame, ConvBNAct, DropPath, SqueezeExcite
from .model import EfficientNet, FeatureInfo

__all__ = ["Bottleneck", "Conv2dSame", "ConvBNAct", "DropPath", "EfficientNet",
           "EfficientNetFeatures", "FeatureInfo",
           "MBConv", "SqueezeExcite"]
