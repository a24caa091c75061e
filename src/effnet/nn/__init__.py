"""PyTorch modules built from specs."""

from .blocks import Bottleneck, MBConv
from .layers import Conv2dSame, ConvBNAct, DropPath, SqueezeExcite
from .model import EfficientNet, FeatureInfo

__all__ = ["Bottleneck", "Conv2dSame", "ConvBNAct", "DropPath", "EfficientNet", "FeatureInfo",
           "MBConv", "SqueezeExcite"]
