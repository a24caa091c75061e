"""`effnet.train.plan_run`: the defaults of `effnet train`, decided in the library, so Python
callers of `fit` get what the command line gets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from effnet.cli import main
from effnet.data.datasets import build_data, with_augment
from effnet.errors import ParameterError
from effnet.train import plan_run

sys.path.insert(0, str(Path(__file__).parent / "data"))
from train_tiny import make_image_folder  # noqa: E402

QUIET = dict(num_workers=0, progress=False)


def test_plan_run_has_the_command_line_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / "d", classes=3, per_class=4, size=24)
    plan = plan_run("imagefolder", "b0", root=tmp_path / "d", epochs=1, batch_size=4, **QUIET)
    assert plan.image_size == 224  # B0's resolution (paper Table 2), an image folder's default
    assert plan.in_chans == 3 and plan.recipe.name == "short"  # 2 steps: far below the paper's
    assert plan.augment == plan.recipe.augment and plan.why
    assert plan.inits == ("zero classifier", "zero residual branches")
    assert plan.config.output == str(Path("runs") / "b0-imagefolder")
    assert plan.config.model_name == "b0" and plan.config.image_size == 224
    cfg = plan.model.pretrained_cfg
    assert cfg["label_names"] == ["class0", "class1", "class2"] and cfg["num_classes"] == 3
    assert cfg["input_size"] == (3, 224, 224)


def test_plan_fit_trains_what_effnet_train_trains(tmp_path):
    """The same run from Python and from the command line: the same weights, bit for bit."""
    torch.set_num_threads(1)
    make_image_folder(tmp_path / "d", classes=3, per_class=4, size=24)
    common = dict(image_size=32, epochs=1, batch_size=4, max_steps=2, seed=3)
    plan = plan_run("imagefolder", "b0", root=tmp_path / "d", output=tmp_path / "py",
                    **common, **QUIET)
    plan.fit()
    assert main(["train", "--dataset", "imagefolder", "--data", str(tmp_path / "d"),
                 "--image-size", "32", "--epochs", "1", "--batch-size", "4", "--max-steps", "2",
                 "--seed", "3", "--workers", "0", "--threads", "1", "--no-progress",
                 "--output", str(tmp_path / "cli")]) == 0
    import effnet

    py = effnet.create_model(pretrained=tmp_path / "py").state_dict()
    cli = effnet.create_model(pretrained=tmp_path / "cli").state_dict()
    assert py.keys() == cli.keys() and all(torch.equal(py[k], cli[k]) for k in py)


def test_plan_run_errors_name_parameters(tmp_path):
    make_image_folder(tmp_path / "d", classes=2, per_class=2, size=24)
    with pytest.raises(ParameterError, match=r"^eval_every 0 is out of range") as caught:
        plan_run("imagefolder", root=tmp_path / "d", eval_every=0)
    assert caught.value.params == ("eval_every",)
    with pytest.raises(ParameterError, match=r"dataset='imagefolder' needs root=DIR"):
        plan_run("imagefolder")


def test_a_new_augmentation_reuses_the_loaded_images(tmp_path):
    """The auto recipe's augmentation swapped in: the same images as a fresh build_data."""
    make_image_folder(tmp_path / "d", classes=2, per_class=4, size=24)
    light = build_data("imagefolder", tmp_path / "d", image_size=32, augment="light", seed=1)
    swapped = with_augment(light, "autoaugment")
    fresh = build_data("imagefolder", tmp_path / "d", image_size=32, augment="autoaugment",
                       seed=1)
    assert len(swapped.train) == len(fresh.train) and swapped.val is light.val
    for i in range(len(fresh.train)):
        (a, ya), (b, yb) = swapped.train[i], fresh.train[i]
        assert ya == yb and torch.equal(a, b)


def test_initialisation_is_the_librarys():
    """The recipe's initialisation of a model from scratch (RECIPE_HELP: short zero-inits the
    classifier and residual branches; the paper's recipe neither), none for fine-tuning."""
    from effnet import create_model
    from effnet.train.plan import initialise
    from effnet.train.recipes import get_recipe

    model = create_model("b0", num_classes=3)
    assert initialise(model, get_recipe("short"), pretrained=True) == []
    assert initialise(model, get_recipe("paper"), zero_init_head=True) == ["zero classifier"]
    assert not model.classifier.weight.any()
