"""Evaluation preprocessing from a model's pretrained_cfg (torchvision transforms v2).

The channel and normalisation helpers are shared with the training transforms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from ..errors import EffnetError

_INTERP = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
           "nearest": InterpolationMode.NEAREST}


def interpolation(name: str) -> InterpolationMode:
    """torchvision interpolation mode for a pretrained_cfg name."""
    try:
        return _INTERP[name]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}: use {', '.join(_INTERP)}") from None


def channel_transform(in_chans: int) -> T.Transform:
    """Convert any image to `in_chans` channels: 3 -> RGB (greyscale repeated), 1 -> greyscale."""
    if in_chans == 3:
        return T.RGB()
    if in_chans == 1:
        return T.Grayscale(num_output_channels=1)
    raise ValueError(f"images can feed models with 1 or 3 input channels, not {in_chans}")


def normalize_stats(mean: Sequence[float], std: Sequence[float],
                    in_chans: int) -> tuple[list[float], list[float]]:
    """Per-channel mean/std for `in_chans` channels (1 channel: the average of the 3)."""
    mean, std = list(mean), list(std)
    if in_chans == 1 and len(mean) != 1:
        return [sum(mean) / len(mean)], [sum(std) / len(std)]
    return mean, std


def eval_transform(cfg: dict, image_size: int | None = None,
                   in_chans: int | None = None) -> T.Compose:
    """Resize the short side to size / crop_pct, center-crop `size`, normalize (timm-style eval).

    Takes PIL images or uint8 tensors of any channel count and converts them to
    `in_chans` (default: the cfg's input_size[0]); returns float tensors. With
    crop_pct 1.0 (what `build_data` stores for Fashion-MNIST and CIFAR) the whole
    small image is kept: a resize to `size`, no crop margin.
    """
    size = int(image_size or cfg["input_size"][-1])
    chans = int(in_chans or cfg.get("input_size", (3,))[0])
    crop_pct = float(cfg.get("crop_pct", 0.875))
    mean, std = normalize_stats(cfg["mean"], cfg["std"], chans)
    if not (size >= 1 and 0 < crop_pct <= 1 and all(math.isfinite(v) for v in mean)
            and all(math.isfinite(v) and v > 0 for v in std)):
        raise EffnetError(f"invalid preprocessing (input size {size}, crop_pct {crop_pct}, mean "
                          f"{list(mean)}, std {list(std)}): the model's pretrained_cfg needs "
                          "size >= 1, crop_pct in (0, 1], finite mean and std > 0; fix its "
                          "config.json")
    resize = int(math.floor(size / crop_pct))
    return T.Compose([
        T.ToImage(),
        channel_transform(chans),
        T.Resize(resize, interpolation=interpolation(cfg.get("interpolation", "bicubic")),
                 antialias=True),
        T.CenterCrop(size),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=mean, std=std),
    ])
