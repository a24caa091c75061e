"""Helpers for the training tests: a batch-statistics-free tiny net, synthetic data, a DDP script.

Run as a script (plain python or torchrun) it trains TinyNet on synthetic data with
`effnet.train.fit` and writes the per-step global losses and final weights to argv[1].
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2 as T


class TinyNet(nn.Module):
    """Conv + GroupNorm: no batch statistics, so its loss on a batch does not depend on how
    the batch is split across processes (unlike BatchNorm)."""

    def __init__(self, in_chans: int = 1, num_classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.SiLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.GroupNorm(4, 16), nn.SiLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.classifier = nn.Linear(16 * 16, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def synthetic(n: int, size: int = 16, num_classes: int = 4, seed: int = 0):
    """Class k: noise plus a bright horizontal band k of 4 (flip-invariant, quickly learnt)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = torch.randint(0, 100, (n, 1, size, size), generator=g, dtype=torch.uint8)
    h = size // num_classes
    for i in range(n):
        k = int(y[i])
        x[i, :, k * h:(k + 1) * h, :] += 120
    return x, y


def float_tf():
    return T.Compose([T.RandomHorizontalFlip(), T.ToDtype(torch.float32, scale=True)])


def make_image_folder(root, classes: int = 4, per_class: int = 20, size: int = 32) -> None:
    """PNG images, one folder per class, colour by class plus noise."""
    rng = np.random.default_rng(0)
    for k in range(classes):
        (root / f"class{k}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
            img[..., k % 3] += 150
            Image.fromarray(img).save(root / f"class{k}" / f"{i}.png")


def main(out_path: str) -> None:
    from effnet.data.datasets import TensorImageDataset, TransformedDataset
    from effnet.train import fit

    torch.set_num_threads(1)
    x, y = synthetic(64)
    train = TransformedDataset(TensorImageDataset(x, y), float_tf(), seed=0)
    torch.manual_seed(0)
    model = TinyNet()
    res = fit(model, train, None, epochs=2, batch_size=16, recipe="short", num_workers=0,
              progress=False, channels_last=False, seed=0, output=None, log=lambda s: None)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        weights = {k: v.tolist() for k, v in model.state_dict().items()}
        with open(out_path, "w") as f:
            json.dump({"losses": res.step_losses, "weights": weights}, f)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
