"""The closed-form cost of a spec (effnet.cost) equals torch's flop counter on the built model.

Every expected value is measured in the test: parameters counted on the module
and MACs by `torch.utils.flop_counter` (effnet.profiling), on the meta device.
"""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from effnet.cost import Cost, crop_window, model_cost, same_padding, spec_cost
from effnet.model_factory import create_model
from effnet.nas.proxy import Proxy
from effnet.nas.space import SearchSpace
from effnet.nn.depthwise import crop_window as nn_crop_window
from effnet.nn.layers import same_padding as nn_same_padding
from effnet.nn.model import EfficientNet
from effnet.profiling import count_macs, count_params
from effnet.proxy.candidates import Scaled
from effnet.scaling import CompoundScaling
from effnet.spec import BASELINES, EFFICIENTNET_LITE, MOBILENET_V2, NetworkSpec, StageSpec
from effnet.zoo import MODELS


def measured(model: torch.nn.Module, resolution: int) -> Cost:
    """What effnet measures on the built model: parameters and flop-counter MACs."""
    return Cost(count_params(model), count_macs(model, resolution))


def built(spec: NetworkSpec, **kwargs) -> EfficientNet:
    with torch.device("meta"):
        return EfficientNet(spec, **kwargs)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_named_model(name):
    entry = MODELS[name]
    with torch.device("meta"):
        model = create_model(name)
    assert model_cost(name) == measured(model, entry.resolution)


@pytest.mark.parametrize("name", ["b0", "b3", "lite0", "lite4"])
def test_named_models_with_tf_same_padding_and_other_heads(name):
    entry = MODELS[name]
    with torch.device("meta"):
        model = create_model(name, padding="same", in_chans=1, num_classes=10)
    cost = spec_cost(entry.spec, entry.resolution, 1, 10, padding="same")
    assert cost == measured(model, entry.resolution)


def test_agrees_with_the_reference_implementations(model_counts):
    """timm's counts (tests/data/model_counts.json): parameters of every model, B0's MACs."""
    for name, ref in model_counts.items():
        assert model_cost(name).params == ref["params"], name
    assert model_cost("b0").macs == model_counts["b0"]["macs_conv_and_linear"]  # paper: 0.39B


@pytest.mark.parametrize(("base", "padding"),
                         list(itertools.product(BASELINES, ("symmetric", "same"))))
@pytest.mark.parametrize("resolution", [224, 65])
def test_baselines(base, padding, resolution):
    spec = BASELINES[base]
    model = built(spec, padding=padding)
    assert spec_cost(spec, resolution, padding=padding) == measured(model, resolution)


@pytest.mark.parametrize(("base", "phi", "coefficients"), [
    ("b0", 0.5, (1.2, 1.1, 1.15)), ("b0", 2.5, (1.2, 1.1, 1.15)), ("b0", 1, (1.4, 1.2, 1.05)),
    ("lite0", 1, (1.2, 1.1, 1.15)), ("lite0", 3, (1.1, 1.3, 1.1))])
def test_compound_scaling(base, phi, coefficients):
    """Paper Eq. 3 at several phi, with the paper's and with other coefficients."""
    scaling = CompoundScaling(*coefficients)
    c = scaling.coefficients(phi, MODELS[base].resolution)
    with torch.device("meta"):
        model = create_model(base, phi=phi, scaling=scaling)
    spec = scaling.scale(MODELS[base].base, phi, base_name=base)
    assert spec_cost(spec, c.resolution) == measured(model, c.resolution)


# width, depth, resolution and stem stride, as the grid search and the study scale a base
MULTIPLIERS = [(0.25, 0.6, 14, 1), (0.275, 0.72, 16, 1), (0.5, 0.8, 23, 1), (0.4, 1.0, 32, 2),
               (1.3, 1.1, 97, 2), (2.0, 1.5, 64, 2)]


@pytest.mark.parametrize("base", list(BASELINES))
def test_width_depth_resolution_multipliers(base):
    for w, d, res, stem_stride in MULTIPLIERS:
        scaled = Scaled(base, w, d, res, stem_stride)
        with torch.device("meta"):
            model = scaled.build(num_classes=10, in_chans=1)
        assert spec_cost(scaled.spec(), res, 1, 10) == measured(model, res), (w, d, res)


@pytest.mark.parametrize("space", [SearchSpace(), SearchSpace(base=MOBILENET_V2),
                                   SearchSpace(base=EFFICIENTNET_LITE)], ids=["b0", "mbv2", "lite"])
def test_nas_sampled_specs(space):
    """Seeded samples of the baseline search: the proxy (stride-1 stem, 1 channel, 10 classes,
    14 px) and the full-size candidate (224 px and 32 px)."""
    rng, proxy = random.Random(23), Proxy()
    for i in range(5):
        spec = space.decode(space.sample(rng), name=f"nas-{i}")
        with torch.device("meta"):
            model = proxy.build(spec)
        small = proxy.spec(spec)
        assert spec_cost(small, proxy.resolution, 1, 10) == measured(model, proxy.resolution)
        if i < 2:
            model = built(spec)
            for res in (224, 32):
                assert spec_cost(spec, res) == measured(model, res), (spec.name, res)


def _stage(block: str, k: int, s: int, e: float, c: int, r: int, se: float = 0.0) -> StageSpec:
    return StageSpec(block, kernel=k, stride=s, expand_ratio=e, out_channels=c, repeats=r,
                     se_ratio=se)


ODD_SPECS = [
    # one-channel stem on one input channel: a depthwise conv, cropped like the others
    NetworkSpec("thin", (_stage("mbconv", 7, 2, 1, 1, 2, 0.25), _stage("mbconv", 1, 2, 3, 8, 2)),
                stem_channels=1, head_channels=0, stem_kernel=5),
    # bottlenecks one channel wide inside (groups 1 = in = out), SE on a tiny block
    NetworkSpec("narrow", (_stage("bottleneck", 3, 2, 0.25, 4, 2, 0.1),
                           _stage("bottleneck", 5, 1, 0.5, 6, 3, 0.5)),
                stem_channels=4, head_channels=16, stem_stride=1),
    NetworkSpec("wide-kernels", (_stage("mbconv", 7, 2, 4, 24, 3, 0.05),
                                 _stage("mbconv", 5, 2, 0.5, 40, 2, 1.0)),
                stem_kernel=7, head_channels=64),
]


@pytest.mark.parametrize("spec", ODD_SPECS, ids=[s.name for s in ODD_SPECS])
@pytest.mark.parametrize("padding", ["symmetric", "same"])
def test_odd_specs_at_every_small_size(spec, padding):
    """Maps smaller than kernels, odd and even sizes, no classifier: the cropping rules."""
    num_classes, in_chans = (0, 1) if padding == "same" else (7, 3)
    model = built(spec, num_classes=num_classes, in_chans=in_chans, padding=padding)
    for res in (1, 2, 3, 4, 5, 6, 7, 9, 10, 15, 16):
        expected = measured(model, res)
        assert spec_cost(spec, res, in_chans, num_classes, padding) == expected, res


def test_geometry_is_the_one_the_layers_use():
    for size, kernel, stride in itertools.product(range(1, 12), (1, 3, 5, 7), (1, 2)):
        assert same_padding(size, kernel, stride) == nn_same_padding(size, kernel, stride)
        for before, after in ((kernel // 2, kernel // 2), same_padding(size, kernel, stride)):
            assert (crop_window(size, kernel, stride, before, after)
                    == nn_crop_window(size, kernel, stride, before, after))


def test_cost_of_many_repeats_is_computed_per_stage():
    """10^7 repeats take no longer than 3: each repeat after a stage's first costs the same."""
    spec = MODELS["b0"].spec

    def with_repeats(r: int) -> Cost:
        stages = (*spec.stages[:-1], replace(spec.stages[-1], repeats=r))
        return spec_cost(spec.with_(stages=stages), 224)
    one, two = with_repeats(1), with_repeats(2)
    per_repeat = Cost(two.params - one.params, two.macs - one.macs)
    assert with_repeats(10**7) == one + per_repeat * (10**7 - 1)


def test_importing_cost_imports_no_torch():
    code = "import sys, effnet.cost, effnet.limits; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
