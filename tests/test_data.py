"""Datasets and training transforms: IDX parsing, greyscale handling, seeded augmentation."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from effnet.data.augment import train_transform
from effnet.data.datasets import (
    TensorImageDataset,
    TransformedDataset,
    build_data,
    image_folder,
    load_fashion_mnist,
    read_idx_gz,
    split_indices,
)
from effnet.errors import EffnetError


def _write_idx(path, array: np.ndarray) -> None:
    """IDX format (LeCun's MNIST page): 0x00 0x00, type 0x08 (ubyte), ndim, big-endian dims."""
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + array.astype(np.uint8).tobytes())


def _fake_fashion_mnist(root, n_train=40, n_test=20):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    _write_idx(tmp_path / "x.gz", arr)
    np.testing.assert_array_equal(read_idx_gz(tmp_path / "x.gz"), arr)


def test_read_idx_truncated_is_a_clear_error(tmp_path):
    _write_idx(tmp_path / "x.gz", np.zeros((4, 5, 5)))
    with gzip.open(tmp_path / "x.gz") as f:
        data = f.read()
    with gzip.open(tmp_path / "cut.gz", "wb") as f:
        f.write(data[:-7])
    with pytest.raises(EffnetError, match="truncated"):
        read_idx_gz(tmp_path / "cut.gz")


def test_fashion_mnist_from_folder_with_heldout_val(tmp_path):
    _fake_fashion_mnist(tmp_path)
    splits = load_fashion_mnist(tmp_path, download=False)
    assert splits["train"][0].shape == (40, 1, 28, 28)
    assert splits["test"][0].shape == (20, 1, 28, 28)
    b = build_data("fashion-mnist", tmp_path, image_size=32, in_chans=1, val_fraction=0.25,
                   download=False)
    assert (len(b.train), len(b.val), len(b.test), b.num_classes) == (30, 10, 20, 10)
    x, y = b.train[0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10


def test_split_indices_is_a_partition():
    tr, va = split_indices(100, 0.2, seed=3)
    assert len(va) == 20 and sorted(tr + va) == list(range(100))
    assert split_indices(100, 0.2, seed=3) == (tr, va)


def test_greyscale_feeds_three_channel_models():
    grey = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    tf = train_transform(32, "light", in_chans=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    out = tf(grey)
    assert out.shape == (3, 32, 32)
    torch.testing.assert_close(out[0], out[1])  # the grey plane repeated
    torch.testing.assert_close(out[0], out[2])
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    out1 = train_transform(24, "autoaugment", in_chans=1)(rgb)
    assert out1.shape == (1, 24, 24)


@pytest.mark.parametrize("augment", ["autoaugment", "randaugment", "crop", "light", "none"])
def test_every_augment_gives_model_sized_tensors(augment):
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 48, 3), dtype=np.uint8))
    assert train_transform(40, augment)(img).shape == (3, 40, 40)


def test_augmentation_seeded_per_epoch_and_index_and_isolated():
    base = TensorImageDataset(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8),
                              torch.arange(4))
    ds = TransformedDataset(base, train_transform(32, "light", in_chans=1), seed=7)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = ds[2][0]
    assert torch.equal(torch.get_rng_state(), before)  # caller's RNG untouched
    assert torch.equal(ds[2][0], a)                       # same (seed, epoch, index)
    outs = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        outs.append(ds[2][0])
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # crops differ across epochs


def test_image_folder_errors(tmp_path):
    with pytest.raises(EffnetError, match="does not exist"):
        image_folder(tmp_path / "nope")
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cat" / "a.png")
    with pytest.raises(EffnetError, match="dog holds no images"):
        image_folder(tmp_path)
    (tmp_path / "dog" / "b.png").write_bytes(b"this is not a png")
    ds = image_folder(tmp_path)
    assert ds[0][0].size == (8, 8)
    with pytest.raises(EffnetError, match=r"cannot decode image .*b\.png"):
        ds[1]


def test_imagefolder_with_train_and_val_folders(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "data"))
    from train_tiny import make_image_folder

    make_image_folder(tmp_path / "train", classes=3, per_class=5, size=20)
    make_image_folder(tmp_path / "val", classes=3, per_class=2, size=20)
    b = build_data("imagefolder", tmp_path, image_size=16, in_chans=3, augment="autoaugment")
    assert (len(b.train), len(b.val), b.test, b.num_classes) == (15, 6, None, 3)
    assert b.train[0][0].shape == (3, 16, 16) and b.val[0][0].shape == (3, 16, 16)
    make_image_folder(tmp_path / "other" / "train", classes=3, per_class=2, size=20)
    make_image_folder(tmp_path / "other" / "val", classes=2, per_class=2, size=20)
    with pytest.raises(EffnetError, match="make them match"):
        build_data("imagefolder", tmp_path / "other", image_size=16)


def test_cifar_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(EffnetError, match="cifar10 not found"):
        build_data("cifar10", tmp_path, image_size=32, download=False)


def test_small_datasets_are_evaluated_whole_and_predict_rebuilds_it_from_data_cfg():
    """Fashion-MNIST eval: the whole 28x28 image resized (bilinear, antialiased) to the model's
    size, scaled to [0, 1], normalised by the average of the ImageNet means and stds (one
    channel). `effnet train` stores DataBundle.data_cfg as the weights' pretrained_cfg and
    predict/eval rebuild their transform from it: from a decoded RGB file that must agree within
    one grey level (PIL rounds its greyscale conversion to uint8)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    from effnet.data.transforms import eval_transform

    b = build_data("fashion-mnist", image_size=48, in_chans=1, download=False)
    mean, std = sum((0.485, 0.456, 0.406)) / 3, sum((0.229, 0.224, 0.225)) / 3
    tf = eval_transform(b.data_cfg, 48)
    for i in range(0, 10000, 500):
        x, _ = b.test[i]
        raw, _ = b.test.base[i]
        resized = F.resize(raw, [48, 48], interpolation=InterpolationMode.BILINEAR,
                           antialias=True)
        expected = (resized.float() / 255 - mean) / std
        assert torch.allclose(x, expected, atol=1e-6)
        rgb = Image.fromarray(raw[0].numpy()).convert("RGB")
        assert (tf(rgb) - x).abs().max() <= 1.001 / 255 / std
