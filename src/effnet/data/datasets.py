"""Training data: Fashion-MNIST (offline), CIFAR-10/100, and image folders.

Every dataset returns ``(image_tensor, label)``. Augmentation randomness is
seeded per ``(seed, epoch, index)`` (:class:`TransformedDataset`), so a
resumed or a distributed run sees exactly the images an unbroken single
process would.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..errors import EffnetError, ParameterError
from .augment import train_transform
from .images import IMG_EXTENSIONS, load_image
from .registry import DATASETS
from .transforms import eval_transform, normalize_stats

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")


# ---------------------------------------------------------------- building blocks
class TensorImageDataset(Dataset):
    """Images held in memory as a uint8 tensor (N, C, H, W) with int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor,
                 transform: Callable | None = None) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError("images must be (N, C, H, W) with one label per image")
        self.images, self.labels, self.transform = images, labels.long(), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])


class TransformedDataset(Dataset):
    """`base[i]` passed through `transform`, with randomness seeded by (seed, epoch, i).

    The transform's draws from the global torch RNG are isolated: the caller's
    RNG state is restored afterwards, so dropout masks do not depend on how
    many images were loaded in the main process.
    """

    def __init__(self, base: Dataset, transform: Callable | None, seed: int = 0) -> None:
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.base[i]
        if self.transform is None:
            return x, y
        state = torch.get_rng_state()
        torch.manual_seed((self.seed * 1_000_003 + self.epoch * 10_007 + int(i)) % (2**63))
        try:
            x = self.transform(x)
        finally:
            torch.set_rng_state(state)
        return x, y


@dataclass
class DataBundle:
    """Train / validation / test datasets of one task."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None
    num_classes: int
    channels: int
    classes: Sequence[str] = field(default_factory=list)
    name: str = ""
    data_cfg: dict = field(default_factory=dict)
    """The eval preprocessing (input_size, mean, std, crop_pct, interpolation), timm-style:
    `effnet train` stores it in the model's pretrained_cfg, so predict and eval match it."""


def split_indices(n: int, val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Random (train, held-out) index split, fixed by `seed` (paper v5 holds out minival)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val fraction must be in [0, 1), got {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = int(round(n * val_fraction))
    return sorted(perm[n_val:]), sorted(perm[:n_val])


# ---------------------------------------------------------------- Fashion-MNIST
def read_idx_gz(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped or not): the MNIST / Fashion-MNIST container format."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise EffnetError(f"cannot read {path}: {err}; reinstall the dataset") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise EffnetError(f"{path} is not an unsigned-byte IDX file; reinstall the dataset")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise EffnetError(f"{path} is truncated ({body.size} of {int(np.prod(dims))} bytes); "
                          "reinstall the dataset")
    return body.reshape(dims)


def _find_fashion_mnist(root: str | Path | None) -> Path | None:
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
    roots = [Path(root)] if root else []
    roots += [Path(p) for p in FASHION_MNIST_DIRS]
    if root:
        roots.append(Path(root) / "FashionMNIST" / "raw")
    for r in roots:
        if all((r / (n + ".gz")).exists() or (r / n).exists() for n in names):
            return r
    return None


def load_fashion_mnist(root: str | Path | None = None, download: bool = True
                       ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Fashion-MNIST as uint8 tensors {'train': (60000,1,28,28), 'test': (10000,1,28,28)}.

    Looks in `root`, then in /usr/share/datasets/fashion-mnist (Debian package
    `dataset-fashion-mnist`); otherwise downloads with torchvision into `root`.
    """
    found = _find_fashion_mnist(root)
    if found is None:
        if not download:
            raise ParameterError("Fashion-MNIST not found: `apt-get install "
                                 "dataset-fashion-mnist` or pass root=DIR with the idx files",
                                 "root")
        from torchvision.datasets import FashionMNIST

        dl_root = Path(root or Path.home() / ".cache" / "effnet")
        try:
            FashionMNIST(str(dl_root), train=True, download=True)
            FashionMNIST(str(dl_root), train=False, download=True)
        except Exception as err:  # network errors come in many types
            raise ParameterError(f"Fashion-MNIST download failed ({err}); install the Debian "
                                 "package dataset-fashion-mnist or pass root=DIR",
                                 "root") from None
        found = dl_root / "FashionMNIST" / "raw"

    def pick(name: str) -> Path:
        gz = found / (name + ".gz")
        return gz if gz.exists() else found / name

    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx_gz(pick(f"{prefix}-images-idx3-ubyte"))
        y = read_idx_gz(pick(f"{prefix}-labels-idx1-ubyte"))
        if len(x) != len(y):
            raise EffnetError(f"Fashion-MNIST {split}: {len(x)} images but {len(y)} labels")
        out[split] = (torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64)))
    return out


# ---------------------------------------------------------------- image folders
def _check_class_dirs(root: Path) -> list[str]:
    if not root.is_dir():
        raise ParameterError(f"data folder {root} does not exist: pass root=DIR holding one "
                             "sub-folder of images per class (or train/ and val/ such folders)",
                             "root")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise EffnetError(f"no class folders in {root}: put each class's images in "
                          f"{root}/CLASS_NAME/")
    for c in classes:
        has_image = any(f.suffix.lower() in IMG_EXTENSIONS for f in (root / c).rglob("*")
                        if f.is_file())
        if not has_image:
            raise EffnetError(f"class folder {root / c} holds no images "
                              f"({', '.join(IMG_EXTENSIONS)}): add images or remove the folder")
    return classes


def load_train_image(path: str):
    """A training image: upright, 8-bit, greyscale kept as one channel (data.images.load_image)."""
    return load_image(path, keep_grey=True)


def image_folder(root: str | Path):
    """torchvision ImageFolder over `root` after checking its class folders."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    _check_class_dirs(root)
    return ImageFolder(str(root), loader=load_train_image)


# ---------------------------------------------------------------- the factory
def build_data(name: str, root: str | Path | None = None, *, image_size: int, in_chans: int = 3,
               augment: str = "light", val_fraction: float = 0.1, seed: int = 0,
               cfg: dict | None = None, download: bool = True) -> DataBundle:
    """Datasets for `name` (one of DATASETS), with train and eval transforms for the model.

    Validation is a held-out part of the training set (`val_fraction`, fixed by
    `seed`) unless the dataset has its own val split (imagefolder's val/); the
    test split, where there is one, is reported but never used for selection.
    """
    cfg = cfg or {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                  "crop_pct": 0.875, "interpolation": "bicubic"}
    if name not in DATASETS:
        raise EffnetError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    mean, std = normalize_stats(cfg["mean"], cfg["std"], in_chans)
    # the eval preprocessing; small whole-object images get no crop margin
    small = name != "imagefolder"
    data_cfg = {"input_size": (in_chans, image_size, image_size), "mean": tuple(mean),
                "std": tuple(std),
                "crop_pct": 1.0 if small else cfg.get("crop_pct", 0.875),
                "interpolation": "bilinear" if small else cfg.get("interpolation", "bicubic")}
    train_tf = train_transform(image_size, augment, interp=data_cfg["interpolation"],
                               in_chans=in_chans, mean=mean, std=std)
    eval_tf = eval_transform(data_cfg)
    if name == "imagefolder":
        if root is None:
            raise ParameterError("dataset='imagefolder' needs root=DIR", "dataset", "root")
        root = Path(root)
        if not root.is_dir():
            raise ParameterError(f"data folder {root} does not exist: pass root=DIR holding "
                                 "one sub-folder of images per class (or train/ and val/ such "
                                 "folders)", "root")
        if (root / "train").is_dir():
            train_base = image_folder(root / "train")
            val_dir = next((root / d for d in ("val", "validation") if (root / d).is_dir()), None)
            if val_dir is not None:
                val_base = image_folder(val_dir)
                if val_base.classes != train_base.classes:
                    raise EffnetError(f"{val_dir} has classes {val_base.classes[:5]}... but "
                                      f"train/ has {train_base.classes[:5]}...: make them match")
                train_ds = TransformedDataset(train_base, train_tf, seed)
                val_ds: Dataset | None = TransformedDataset(val_base, eval_tf, seed)
                return DataBundle(train_ds, val_ds, None, len(train_base.classes), in_chans,
                                  train_base.classes, name, data_cfg)
        else:
            train_base = image_folder(root)
        tr, va = split_indices(len(train_base), val_fraction, seed)
        return DataBundle(TransformedDataset(Subset(train_base, tr), train_tf, seed),
                          TransformedDataset(Subset(train_base, va), eval_tf, seed) if va else None,
                          None, len(train_base.classes), in_chans, train_base.classes, name,
                          data_cfg)

    if root is not None and not Path(root).is_dir():  # never fall back to another copy
        raise ParameterError(f"root {root} does not exist: give the folder holding the {name} "
                             "files, or drop root to use the installed or downloaded copy",
                             "root")
    if name == "fashion-mnist":
        splits = load_fashion_mnist(root, download=download)
        classes: Sequence[str] = FASHION_MNIST_CLASSES
    else:
        splits, classes = _load_cifar(name, root, download)
    x, y = splits["train"]
    tr, va = split_indices(len(y), val_fraction, seed)
    train_ds = TransformedDataset(TensorImageDataset(x[tr], y[tr]), train_tf, seed)
    val_ds = TransformedDataset(TensorImageDataset(x[va], y[va]), eval_tf, seed) if va else None
    test_ds = TransformedDataset(TensorImageDataset(*splits["test"]), eval_tf, seed)
    return DataBundle(train_ds, val_ds, test_ds, len(classes), in_chans, list(classes), name,
                      data_cfg)


def with_augment(data: DataBundle, augment: str) -> DataBundle:
    """`data` with its training images augmented by `augment` instead: same images, same split,
    nothing loaded again (the eval side is unchanged)."""
    from dataclasses import replace

    cfg, train = data.data_cfg, data.train
    channels, size = cfg["input_size"][0], cfg["input_size"][-1]
    tf = train_transform(size, augment, interp=cfg["interpolation"], in_chans=channels,
                         mean=cfg["mean"], std=cfg["std"])
    return replace(data, train=TransformedDataset(train.base, tf, train.seed))


def native_arrays(name: str, root: str | Path | None = None, download: bool = True,
                  split: str = "train") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """One split ("train" or "test") of an in-memory dataset at its native size: uint8
    (N, C, H, W), labels.

    For the proxy trainer, which resizes the images itself (Fashion-MNIST and
    CIFAR; an image folder has no single native size).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "fashion-mnist":
        x, y = load_fashion_mnist(root, download=download)[split]
        return x, y, list(FASHION_MNIST_CLASSES)
    if name in ("cifar10", "cifar100"):
        splits, classes = _load_cifar(name, root, download)
        return splits[split][0], splits[split][1], list(classes)
    raise EffnetError(f"dataset {name!r} cannot be held in memory at a native size: use "
                      "fashion-mnist, cifar10 or cifar100")


def _load_cifar(name: str, root: str | Path | None, download: bool):
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    root = Path(root or os.environ.get("EFFNET_DATA", Path.home() / ".cache" / "effnet"))
    out = {}
    try:
        for split in ("train", "test"):
            ds = cls(str(root), train=split == "train", download=download)
            x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
            out[split] = (x, torch.tensor(ds.targets, dtype=torch.int64))
    except RuntimeError as err:
        raise ParameterError(f"{name} not found in {root} ({err}); drop download=False or "
                             "pass root=DIR holding the torchvision copy", "download",
                             "root") from None
    except OSError as err:
        raise ParameterError(f"{name} download failed ({err}); pass root=DIR with the "
                             "torchvision copy", "root") from None
    return out, list(ds.classes)
