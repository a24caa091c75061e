"""The one table of dataset facts: classes, channels and native image size (no torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetFacts:
    """What a dataset is: `num_classes`, input channels and the native square image size."""

    num_classes: int
    in_chans: int
    image_size: int


DATASET_FACTS: dict[str, DatasetFacts] = {
    # Xiao et al. 2017: 28x28 greyscale, 10 classes.
    "fashion-mnist": DatasetFacts(num_classes=10, in_chans=1, image_size=28),
    # Krizhevsky 2009: 32x32 colour, 10 and 100 classes.
    "cifar10": DatasetFacts(num_classes=10, in_chans=3, image_size=32),
    "cifar100": DatasetFacts(num_classes=100, in_chans=3, image_size=32),
}
# Every dataset `effnet train` reads: the table's, and folders of class folders.
DATASETS = (*DATASET_FACTS, "imagefolder")
