"""Top-1 / top-5 accuracy of a prepared model on an ImageFolder tree (e.g. ImageNet val).

Each class folder must map to the model's class index. Folders named by
ImageNet synset (n01440764) map to the ImageNet index; folders named by the
model's class names (pretrained_cfg label_names, which `effnet train` stores;
case and punctuation aside) map to those; folders named 0, 1, ... map to that
index; otherwise, when there is one folder per class, sorted
folder names give the index (torchvision's ImageFolder order), and eval says
so. When the model has class names and the folders match none of them, eval
refuses unless ``class_order="sorted"`` (``--class-order sorted``). Images
that cannot be decoded are skipped, counted and reported, not scored.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..data.images import IMG_EXTENSIONS, load_image
from ..errors import EffnetError, ParameterError
from .predict import PreparedModel, imagenet_synsets


def _name_key(name: object) -> str:
    """A class name as a folder can spell it: 'T-shirt/top' ~ 't-shirt_top' ~ 'tshirt top'."""
    return "".join(c for c in str(name).lower() if c.isalnum())


CLASS_ORDERS = ("names", "sorted")


def class_indices(folders: Sequence[str], num_classes: int,
                  label_names: Sequence[str] | None = None,
                  class_order: str = "names") -> dict[str, int]:
    """The model's class index for each class folder name (see the module docstring)."""
    return class_mapping(folders, num_classes, label_names, class_order)[0]


def class_mapping(folders: Sequence[str], num_classes: int,
                  label_names: Sequence[str] | None = None,
                  class_order: str = "names") -> tuple[dict[str, int], bool]:
    """(class index of each folder, whether the mapping is by sorted folder order)."""
    if class_order not in CLASS_ORDERS:
        raise EffnetError(f"unknown class order {class_order!r}: use one of "
                          f"{', '.join(CLASS_ORDERS)}")
    folders = sorted(folders)
    by_order = {f: i for i, f in enumerate(folders)}
    if class_order == "sorted":
        if len(folders) != num_classes:
            raise ParameterError(f"class_order sorted needs one folder per class: {len(folders)} "
                                 f"folders for {num_classes} classes", "class_order")
        return by_order, True
    if num_classes == 1000:
        synsets = {s: i for i, s in enumerate(imagenet_synsets())}
        if all(f in synsets for f in folders):
            return {f: synsets[f] for f in folders}, False
    if label_names and len(label_names) == num_classes:
        by_name = {_name_key(n): i for i, n in enumerate(label_names)}
        known = [f for f in folders if _name_key(f) in by_name]
        if len(known) == len(folders):
            return {f: by_name[_name_key(f)] for f in folders}, False
        if known:  # some folders are class names: folder order would mislabel the others
            missing = [f for f in folders if f not in known]
            raise EffnetError(f"class folders {', '.join(missing[:3])} match none of the "
                              f"model's class names ({', '.join(map(str, label_names[:4]))}, "
                              "...): rename them to class names or to class indices")
        if not all(f.isdigit() and int(f) < num_classes for f in folders):
            raise ParameterError(
                f"class folders ({', '.join(folders[:3])}, ...) match none of the model's class "
                f"names ({', '.join(map(str, label_names[:4]))}, ...): rename them, or pass "
                f"class_order='sorted' to take sorted folders as classes 0..{num_classes - 1}",
                "class_order")
    if all(f.isdigit() and int(f) < num_classes for f in folders):
        return {f: int(f) for f in folders}, False
    if len(folders) == num_classes:
        return by_order, True
    raise EffnetError(
        f"{len(folders)} class folders but the model has {num_classes} classes, so folder order "
        "cannot give class indices: name the folders by ImageNet synset (n01440764), by class "
        f"index (0..{num_classes - 1}), or have one folder per class")


class EvalFolder(Dataset):
    """(image tensor, target, '' or the path of an undecodable image) from a class-folder tree."""

    def __init__(self, root: str | os.PathLike, prepared: PreparedModel,
                 class_order: str = "names") -> None:
        from torchvision.datasets.folder import make_dataset

        root = Path(root)
        if not root.is_dir():
            raise EffnetError(f"data folder {root} not found: give an ImageFolder tree "
                              "(one sub-folder of images per class)")
        folders = sorted(d.name for d in root.iterdir() if d.is_dir())
        if not folders:
            raise EffnetError(f"{root} has no class folders: eval needs one sub-folder of "
                              "images per class (e.g. ImageNet val sorted into synset folders)")
        self.class_to_idx, self.by_order = class_mapping(
            folders, prepared.num_classes, prepared.pretrained_cfg.get("label_names"),
            class_order)
        self.samples = make_dataset(str(root), self.class_to_idx, extensions=IMG_EXTENSIONS,
                                    allow_empty=True)
        if not self.samples:
            raise EffnetError(f"no image files under {root} ({', '.join(IMG_EXTENSIONS)})")
        self.transform = prepared.transform
        self.shape = (prepared.pretrained_cfg.get("input_size", (3,))[0], prepared.image_size,
                      prepared.image_size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        path, target = self.samples[index]
        try:
            return self.transform(load_image(path)), target, ""
        except EffnetError:
            return torch.zeros(self.shape), target, str(path)


@dataclass
class EvalResult:
    """Accuracy over the images that decoded; `failed` lists those that did not."""

    top1: float
    top5: float
    images: int
    seconds: float
    failed: list[str] = field(default_factory=list)
    topk: int = 5
    note: str = ""

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = f"{self.note}\n" if self.note else ""
        text += (f"top-1 {self.top1:.2f}%  top-{self.topk} {self.top5:.2f}%  on {self.images} "
                f"images, {self.images_per_s:.1f} img/s")
        if self.failed:
            shown = ", ".join(self.failed[:3]) + (", ..." if len(self.failed) > 3 else "")
            text += (f"\n{len(self.failed)} image(s) could not be decoded and were skipped: "
                     f"{shown}")
        return text


def evaluate(prepared: PreparedModel, data_dir: str | os.PathLike, batch_size: int = 32,
             workers: int = 0, limit: int | None = None, progress: bool = True,
             class_order: str = "names") -> EvalResult:
    """Top-1 and top-5 accuracy (percent) of `prepared` on the class folders under `data_dir`."""
    if limit is not None and limit < 1:
        raise ParameterError(f"limit {limit} must be >= 1 (the number of images to evaluate)",
                             "limit")
    if batch_size < 1:
        raise ParameterError(f"batch_size {batch_size} must be >= 1", "batch_size")
    folder = EvalFolder(data_dir, prepared, class_order)
    dataset: Dataset = folder
    note = ""
    if folder.by_order:
        pairs = ", ".join(f"{f}={i}" for f, i in list(folder.class_to_idx.items())[:4])
        note = (f"note: class folders mapped to class indices by sorted folder order ({pairs}"
                f"{', ...' if len(folder.class_to_idx) > 4 else ''}), not by class name")
    if limit:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    k = min(5, prepared.num_classes)
    correct1 = correct5 = seen = 0
    failed: list[str] = []
    start = time.perf_counter()
    bar = tqdm(total=len(dataset), unit="img", desc="eval",  # no bar redraws into log files
               disable=not progress or not sys.stderr.isatty())
    for images, targets, bad in loader:
        ok = torch.tensor([not b for b in bad])
        failed += [b for b in bad if b]
        if ok.any():
            logits = prepared(images[ok])
            top = logits.topk(k, dim=-1).indices
            hits = top == targets[ok].unsqueeze(1)
            correct1 += int(hits[:, 0].sum())
            correct5 += int(hits.any(dim=1).sum())
            seen += int(ok.sum())
        bar.update(len(bad))
        elapsed = time.perf_counter() - start
        bar.set_postfix(top1=f"{100 * correct1 / max(seen, 1):.2f}",
                        img_s=f"{(seen + len(failed)) / max(elapsed, 1e-9):.1f}")
    bar.close()
    seconds = time.perf_counter() - start
    if not seen:
        raise EffnetError(f"none of the {len(failed)} images under {data_dir} could be decoded "
                          f"(first: {failed[0] if failed else '-'})")
    return EvalResult(100.0 * correct1 / seen, 100.0 * correct5 / seen, seen, seconds, failed, k,
                      note)
