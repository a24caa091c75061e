"""Training-time augmentation with torchvision transforms v2.

Two families:

* ``"autoaugment"`` / ``"randaugment"`` / ``"crop"``: the paper's ImageNet
  pipeline (Section 5.2, the reference TF code's preprocessing): random resized
  crop (area 0.08-1, aspect 3/4-4/3, bicubic), horizontal flip, then AutoAugment
  (ImageNet policy), RandAugment, or nothing more.
* ``"light"``: for small, low-resolution data (Fashion-MNIST, CIFAR): resize to
  the model's resolution, random crop with 1/8 zero padding, horizontal flip.
  Heavy ImageNet policies hurt 28x28 greyscale images more than they help.

Greyscale images become 3-channel for 3-channel models (and colour images
become greyscale for 1-channel models), before any colour operation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2 as T

from .transforms import channel_transform, interpolation, normalize_stats

AUGMENTS = ("autoaugment", "randaugment", "crop", "light", "none")


def train_transform(image_size: int, augment: str = "autoaugment", *, in_chans: int = 3,
                    mean: Sequence[float] = (0.485, 0.456, 0.406),
                    std: Sequence[float] = (0.229, 0.224, 0.225),
                    interp: str = "bicubic", hflip: bool = True) -> T.Compose:
    """Training transform: PIL image or uint8 CHW tensor in, normalized float tensor out."""
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augment {augment!r}: use one of {', '.join(AUGMENTS)}")
    mode = interpolation(interp)
    mean, std = normalize_stats(mean, std, in_chans)
    ops: list[T.Transform] = [T.ToImage(), channel_transform(in_chans)]
    if augment == "light":
        ops += [T.Resize(image_size, interpolation=mode, antialias=True),
                T.CenterCrop(image_size),
                T.RandomCrop(image_size, padding=max(1, image_size // 8))]
    elif augment == "none":
        ops += [T.Resize(image_size, interpolation=mode, antialias=True),
                T.CenterCrop(image_size)]
    else:
        ops.append(T.RandomResizedCrop(image_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                                       interpolation=mode, antialias=True))
    if hflip and augment != "none":
        ops.append(T.RandomHorizontalFlip())
    # the policies' affine ops run on tensors, where torchvision has no bicubic; the reference
    # code fills uncovered pixels with 128 ("replace value")
    policy_mode = T.InterpolationMode.BILINEAR
    if augment == "autoaugment":
        ops.append(T.AutoAugment(T.AutoAugmentPolicy.IMAGENET, interpolation=policy_mode,
                                 fill=128))
    elif augment == "randaugment":
        ops.append(T.RandAugment(num_ops=2, magnitude=9, interpolation=policy_mode, fill=128))
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(mean=mean, std=std)]
    return T.Compose(ops)
