"""The model contract over every named model and every baseline, modelled on timm's test_models.py.

Each model is built once with real weights (a module-scoped fixture) and run
at 32 px, where every stride-32 network still has a 1x1 final map: forward
and backward, features_only, forward_intermediates, TorchScript,
torch.export, save and reload, and a config round trip. API checks that need
only shapes run on the meta device, against timm's own EfficientNet built
there too: the reference for feature levels, intermediates, pruning and
parameter groups is timm, run in the same test.
"""

from __future__ import annotations

import copy
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models import group_parameters

import effnet
from effnet.errors import EffnetError
from effnet.model_factory import build_model
from effnet.nn.features import EfficientNetFeatures
from effnet.nn.model import EfficientNet
from effnet.spec import BASELINES
from effnet.weights.pretrained import model_config, spec_from_config
from tests.conftest import randomize_bn_stats

SIZE = 32
CLASSES = 7
NAMED = effnet.list_models()
BASES = [f"baseline-{k}" for k in BASELINES]
PHI = "b0-phi1.5"  # a compound-scaled model: its config must round-trip without touching B0
ALL = [*NAMED, *BASES, PHI]
# l2 (475 M parameters, 1.9 GB) is not written to disk: its config round trip runs on the meta
# device; every other check runs on it with real weights.
NO_WEIGHT_FILE = {"l2"}


def _build(name: str, **kw) -> torch.nn.Module:
    if name.startswith("baseline-"):
        base = name.removeprefix("baseline-")
        return build_model(BASELINES[base], model_name=base, **kw)
    if name == PHI:
        return effnet.create_model("b0", phi=1.5, **kw)
    return effnet.create_model(name, **kw)


def _meta(name: str, **kw) -> torch.nn.Module:
    with torch.device("meta"):
        return _build(name, **kw)


def _timm_meta(name: str, **kw) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(f"efficientnet_{name}", **kw)


def _x(batch: int = 2, device: str = "cpu") -> torch.Tensor:
    if device == "meta":
        return torch.empty(batch, 3, SIZE, SIZE, device="meta")
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))


@pytest.fixture(scope="module", params=ALL)
def built(request) -> tuple[str, EfficientNet]:
    torch.manual_seed(0)
    model = _build(request.param, num_classes=CLASSES)
    randomize_bn_stats(model, seed=1)  # eval outputs then depend on every BN's statistics
    yield request.param, model
    del model


def test_forward_backward(built):
    name, model = built
    model.train()
    out = model(_x())
    assert isinstance(out, torch.Tensor) and out.shape == (2, CLASSES)
    F.cross_entropy(out, torch.tensor([0, 1])).backward()
    params = dict(model.named_parameters())
    no_grad = [k for k, p in params.items() if p.grad is None]
    assert not no_grad, no_grad[:3]
    assert all(torch.isfinite(p.grad).all() for p in params.values())
    model.zero_grad(set_to_none=True)


def test_contract_attributes(built):
    name, model = built
    assert model.in_chans == 3 and model.num_classes == CLASSES
    assert isinstance(model.model_name, str) and model.model_name
    assert isinstance(model.drop_path_rate, float) and model.drop_path_rate == 0.2
    cfg = model.pretrained_cfg
    assert cfg is model.default_cfg
    if not name.startswith("baseline-"):
        assert {"input_size", "mean", "std", "crop_pct", "interpolation"} <= set(cfg)
        assert cfg["num_classes"] == CLASSES
    head = model.get_classifier()
    assert isinstance(head, torch.nn.Linear)
    assert (head.in_features, head.out_features) == (model.num_features, CLASSES)
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(_x(1))
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.num_features)
        torch.testing.assert_close(model.forward_head(feats), model(_x(1)), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMED)
def test_same_api_shapes_as_timm(name):
    """num_features, feature levels, intermediates and the grouped parameters equal timm's."""
    ours, ref = _meta(name), _timm_meta(name)
    x = _x(device="meta")
    assert ours.num_features == ref.num_features
    assert ours.feature_info.channels() == [f["num_chs"] for f in ref.feature_info]
    assert ours.feature_info.reduction() == [f["reduction"] for f in ref.feature_info]
    for kw in ({"indices": 2}, {"indices": [0, -2], "stop_early": True}):
        final, inter = ours.forward_intermediates(x, **kw)
        ref_final, ref_inter = ref.forward_intermediates(x, **kw)
        assert final.shape == ref_final.shape, kw
        assert [t.shape for t in inter] == [t.shape for t in ref_inter], kw
    for coarse in (False, True):
        groups = group_parameters(ours, ours.group_matcher(coarse))
        ref_groups = group_parameters(ref, ref.group_matcher(coarse))
        assert [len(g) for g in groups.values()] == [len(g) for g in ref_groups.values()]
    f, rf = _meta(name, features_only=True), _timm_meta(name, features_only=True)
    assert f.feature_info.channels() == rf.feature_info.channels()
    assert f.feature_info.reduction() == rf.feature_info.reduction()
    assert [t.shape for t in f(x)] == [t.shape for t in rf(x)]


@pytest.mark.parametrize("indices", [1, 2, [0, 1], [-3]])
@pytest.mark.parametrize("name", ["b0", "b3", "lite0", "lite4"])
def test_prune_intermediate_layers_as_timm(name, indices):
    ours, ref = _meta(name), _timm_meta(name)
    assert ours.prune_intermediate_layers(indices) == ref.prune_intermediate_layers(indices)
    assert len(ours.blocks) == len(ref.blocks)
    assert ours.num_features == ref.num_features
    x = _x(device="meta")
    assert ours(x).shape == ref(x).shape
    kept = ours.forward_intermediates(x, indices=indices, intermediates_only=True)
    assert [t.shape for t in kept] == [t.shape for t in ref.forward_intermediates(
        x, indices=indices, intermediates_only=True)]


@pytest.mark.parametrize("name", BASES)
def test_baseline_levels_from_first_principles(name):
    """Each level is the last stage at a stride; strides double from the stem's 2 up to 32."""
    model = _meta(name)
    spec = model.spec
    strides, stride = [], spec.stem_stride
    for st in spec.stages:
        stride *= st.stride
        strides.append(stride)
    levels = sorted(set(strides))
    assert model.feature_info.reduction() == levels and levels[-1] == 32
    last_at = {s: i for i, s in enumerate(strides)}
    assert model.feature_info.channels() == [spec.stages[last_at[s]].out_channels for s in levels]
    parts = group_parameters(model, model.group_matcher())
    assert sum(len(g) for g in parts.values()) == len(list(model.parameters()))
    # timm's group_parameters: the stem, one group per block (the head conv, matched as
    # "previous group", joins the last block's), and a last group for what the matcher leaves
    # out: the classifier
    assert len(parts) == 1 + spec.num_blocks + 1


def test_features_only_is_a_separate_class(built):
    """Same tensors under the same names; forward returns exactly the classifier's intermediates."""
    name, model = built
    features = _meta(name, features_only=True)
    assert isinstance(features, EfficientNetFeatures) and not isinstance(features, EfficientNet)
    assert not hasattr(features, "classifier")
    full = model.state_dict()
    features.load_state_dict({k: full[k] for k in features.state_dict()}, strict=True,
                             assign=True)
    model.eval()
    features.eval()
    with torch.no_grad():
        maps = features(_x())
        inter = model.forward_intermediates(_x(), intermediates_only=True)
    assert isinstance(maps, list) and len(maps) == len(features.feature_info)
    for t, ref, c, r in zip(maps, inter, features.feature_info.channels(),
                            features.feature_info.reduction(), strict=True):
        assert t.shape == (2, c, math.ceil(SIZE / r), math.ceil(SIZE / r))
        torch.testing.assert_close(t, ref, rtol=0, atol=0)


def test_forward_intermediates(built):
    name, model = built
    model.eval()
    x = _x()
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        torch.testing.assert_close(model.forward_head(final), model(x), rtol=0, atol=0)
        assert len(inter) == len(model.feature_info)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        picked = model.forward_intermediates(x, indices=[0, -1], stop_early=True,
                                             intermediates_only=True)
    for a, b in zip(last_two, inter[-2:], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(picked, [inter[0], inter[-1]], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(EffnetError, match="out of range"):
        model.forward_intermediates(x, indices=[len(inter)])


def test_torchscript(built):
    name, model = built
    model.eval()
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(_x()), model(_x()))
    if name in ("b0", "lite0", "baseline-resnet50"):  # the feature class: one of each block kind
        eager = _meta(name, features_only=True).eval()
        maps = torch.jit.script(eager)(_x(device="meta"))
        assert [t.shape for t in maps] == [t.shape for t in eager(_x(device="meta"))]


def test_torch_export(built):
    name, model = built
    model.eval()
    program = torch.export.export(model, (_x(),))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(_x()), model(_x()))
    del program


def test_save_reload_and_config_round_trip(built, tmp_path):
    """Weights and config round-trip; the global baselines stay exactly as they were."""
    name, model = built
    before = {k: (v, copy.deepcopy(v)) for k, v in BASELINES.items()}
    config = model_config(model)
    assert spec_from_config(config) == model.spec
    assert ("phi" in config) == (name == PHI)
    if name in NO_WEIGHT_FILE:
        with torch.device("meta"):
            rebuilt = build_model(spec_from_config(config), num_classes=CLASSES)
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
            {k: v.shape for k, v in model.state_dict().items()}
    else:
        model.eval().save_pretrained(tmp_path)
        restored = effnet.create_model(pretrained=tmp_path).eval()
        assert type(restored) is type(model) and restored.spec == model.spec
        assert restored.model_name == model.model_name
        with torch.no_grad():
            torch.testing.assert_close(restored(_x()), model(_x()), rtol=0, atol=0)
    for k, (obj, snapshot) in before.items():
        assert BASELINES[k] is obj and obj == snapshot and obj.phi is None


@pytest.mark.parametrize("name", ["b0", "lite0", PHI, *BASES])
def test_grad_checkpointing_same_outputs_and_grads(name):
    torch.manual_seed(0)
    model = _build(name, num_classes=CLASSES).train()
    results = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        assert model.grad_checkpointing is enable
        state = {k: v.clone() for k, v in model.state_dict().items()}
        torch.manual_seed(3)  # the same stochastic-depth masks in both runs
        out = model(_x())
        out.square().mean().backward()
        results.append((out.detach(), model.stem.conv.weight.grad.clone()))
        model.zero_grad(set_to_none=True)
        model.load_state_dict(state)  # undo this step's BN statistics updates
    torch.testing.assert_close(results[1][0], results[0][0])
    torch.testing.assert_close(results[1][1], results[0][1])


def test_reset_classifier_and_pooling():
    model = effnet.create_model("b0", num_classes=CLASSES).eval()
    x = _x()
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.get_classifier().out_features == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    model.reset_classifier(0, "")
    assert model(x).shape == (2, model.num_features, 1, 1)
    with pytest.raises(EffnetError, match="global_pool"):
        model.reset_classifier(5, "max")
