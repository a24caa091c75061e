"""Evaluation preprocessing from a model's pretrained_cfg (torchvision transforms v2)."""

from __future__ import annotations

import math

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

_INTERP = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
           "nearest": InterpolationMode.NEAREST}


def interpolation(name: str) -> InterpolationMode:
    """torchvision interpolation mode for a pretrained_cfg name."""
    try:
        return _INTERP[name]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}: use {', '.join(_INTERP)}") from None


def eval_transform(cfg: dict, image_size: int | None = None) -> T.Compose:
    """Resize the short side to size / crop_pct, center-crop `size`, normalize (timm-style eval).

    Takes PIL images or uint8 tensors with 3 channels; returns float tensors.
    """
    size = int(image_size or cfg["input_size"][-1])
    resize = int(math.floor(size / cfg.get("crop_pct", 0.875)))
    return T.Compose([
        T.ToImage(),
        T.Resize(resize, interpolation=interpolation(cfg.get("interpolation", "bicubic")),
                 antialias=True),
        T.CenterCrop(size),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=list(cfg["mean"]), std=list(cfg["std"])),
    ])
