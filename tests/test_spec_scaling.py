"""Specs and scaling rules: pure functions, checked against the paper and first principles."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from effnet import BASELINES, CompoundScaling, round_filters, round_repeats, scale
from effnet.spec import EFFICIENTNET_B0, StageSpec
from effnet.zoo import MODELS, canonical_name


def test_spec_and_scaling_import_no_torch():
    # torch made unimportable: the pure modules (and the lazy package) must not need it.
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "import effnet.spec, effnet.scaling, effnet.zoo\n"
        "print(effnet.zoo.MODELS['b3'].spec.stages[0].out_channels)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "24"  # round_filters(16, 1.2) = 19.2 -> 24 (nearest 8, >= 90%)


def test_b0_spec_is_table1(paper):
    table = paper["table1_efficientnet_b0_baseline"]
    rows = [r for r in table if r["operator"].startswith("MBConv")]
    assert len(rows) == len(EFFICIENTNET_B0.stages) == 7
    for row, st in zip(rows, EFFICIENTNET_B0.stages, strict=True):
        assert st.block == "mbconv"
        assert st.kernel == row["kernel_size"]
        assert st.expand_ratio == row["expand_ratio"]
        assert st.out_channels == row["output_channels"]
        assert st.repeats == row["num_layers"]
        assert st.stride == row["first_block_stride"]
        assert st.se_ratio == 0.25
    assert EFFICIENTNET_B0.stem_channels == 32 and EFFICIENTNET_B0.head_channels == 1280


@pytest.mark.parametrize("channels", [16, 24, 32, 40, 80, 112, 192, 320, 1280])
@pytest.mark.parametrize("w", [0.5, 1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 4.3])
def test_round_filters_first_principles(channels, w):
    scaled = channels * w
    got = round_filters(channels, w)
    assert got % 8 == 0 and got >= 8
    assert got >= 0.9 * scaled
    # The smallest multiple of 8 at or above the nearest one that keeps >= 90%.
    nearest = max(8, 8 * math.floor(scaled / 8 + 0.5))
    expected = nearest if nearest >= 0.9 * scaled else nearest + 8
    assert got == expected


def test_round_filters_known_values():
    assert round_filters(32, 1.0) == 32
    assert round_filters(32, 1.1) == 32      # 35.2 -> 32 (>= 31.7)
    assert round_filters(1280, 1.1) == 1408  # 1408 exactly
    assert round_filters(16, 1.2) == 24      # 19.2 -> 16 is < 17.3, so 24
    assert round_filters(4, 1.0) == 8        # never below the divisor


def test_round_repeats_is_ceil():
    assert [round_repeats(r, 1.1) for r in (1, 2, 3, 4)] == [2, 3, 4, 5]
    assert [round_repeats(r, 1.0) for r in (1, 2, 3, 4)] == [1, 2, 3, 4]
    assert round_repeats(4, 3.1) == 13  # 12.4 -> 13


def test_scale_is_pure_and_identity_at_one():
    assert scale(EFFICIENTNET_B0, 1.0, 1.0).stages == EFFICIENTNET_B0.stages
    s = scale(EFFICIENTNET_B0, 2.0, 3.1)
    assert s.stem_channels == 64 and s.head_channels == 2560
    assert [st.repeats for st in s.stages] == [math.ceil(3.1 * r) for r in (1, 2, 2, 3, 3, 4, 1)]
    assert EFFICIENTNET_B0.stages[0].out_channels == 16  # input spec unchanged


def test_lite_keeps_stem_head_and_first_last_repeats():
    s = scale(BASELINES["lite"], 1.4, 1.8)
    assert s.stem_channels == 32 and s.head_channels == 1280
    assert s.stages[0].repeats == 1 and s.stages[-1].repeats == 1
    assert s.stages[1].repeats == math.ceil(2 * 1.8)
    assert all(st.se_ratio == 0 for st in s.stages) and s.activation == "relu6"


def test_zoo_matches_official_table(paper):
    for row in paper["official_params_table"] + paper["efficientnet_lite"]:
        name = row["model"].replace("efficientnet-", "")
        e = MODELS[name]
        assert (e.width_mult, e.depth_mult, e.resolution, e.dropout) == (
            row["width_coefficient"], row["depth_coefficient"], row["resolution_px"],
            row["dropout_rate"]), name
    assert len(MODELS) == 15


def test_compound_coefficients_phi_one(paper):
    ref = paper["compound_scaling"]
    c = CompoundScaling().coefficients(1)
    assert c.depth_mult == pytest.approx(ref["alpha_depth"])
    assert c.width_mult == pytest.approx(ref["beta_width"])
    assert c.resolution_mult == pytest.approx(ref["gamma_resolution"])
    assert c.resolution == round(224 * 1.15)
    assert CompoundScaling().flops_factor == pytest.approx(ref["alpha_beta2_gamma2"], abs=1e-5)


def test_compound_any_real_phi():
    c = CompoundScaling(1.2, 1.1, 1.15).coefficients(2.5)
    assert c.depth_mult == pytest.approx(1.2**2.5)
    assert c.width_mult == pytest.approx(1.1**2.5)
    assert c.resolution_mult == pytest.approx(1.15**2.5)
    z = CompoundScaling().coefficients(0)
    assert (z.depth_mult, z.width_mult, z.resolution) == (1.0, 1.0, 224)


@pytest.mark.parametrize("bad", [{"alpha": 0.9}, {"beta": -1}, {"gamma": float("nan")}])
def test_compound_rejects_coefficients_below_one(bad):
    with pytest.raises(ValueError, match=">= 1"):
        CompoundScaling(**bad)


@pytest.mark.parametrize("phi", [-1, float("inf")])
def test_compound_rejects_bad_phi(phi):
    with pytest.raises(ValueError, match="phi"):
        CompoundScaling().coefficients(phi)


def test_names_and_prefixes():
    assert canonical_name("efficientnet_b3") == "b3"
    assert canonical_name("EfficientNet-Lite2") == "lite2"
    with pytest.raises(ValueError, match="b0, b1"):
        canonical_name("b9")


def test_stage_spec_validates():
    with pytest.raises(ValueError, match="stride"):
        StageSpec("mbconv", 3, 3, 6, 24, 2)
    with pytest.raises(ValueError, match="block"):
        StageSpec("conv", 3, 1, 6, 24, 2)


def test_specs_have_no_mutable_field():
    """A frozen spec holds only immutable values: nothing can change a shared baseline."""
    import dataclasses

    def immutable(v):
        if isinstance(v, tuple):
            return all(immutable(x) for x in v)
        if dataclasses.is_dataclass(v):
            return all(immutable(getattr(v, f.name)) for f in dataclasses.fields(v))
        return v is None or isinstance(v, int | float | str | bool)

    for spec in BASELINES.values():
        assert immutable(spec), spec.name
    scaled = CompoundScaling().scale(BASELINES["b0"], 1.5, base_name="b0")
    assert immutable(scaled)
    assert (scaled.phi, scaled.base, scaled.coefficients) == (1.5, "b0", (1.2, 1.1, 1.15))
    assert BASELINES["b0"].phi is None and BASELINES["b0"].meta == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        BASELINES["b0"].phi = 1.0  # type: ignore[misc]


def test_phi_model_leaves_baselines_and_later_models_alone(tmp_path):
    """The issue's reproduction: a phi model must not change B0, and a plain B3 has no phi."""
    import json

    import effnet

    before = BASELINES["b0"]
    effnet.create_model("b0", phi=1.5)
    assert BASELINES["b0"] is before and BASELINES["b0"].meta == {} and before.phi is None
    effnet.create_model("b3").save_pretrained(tmp_path)
    assert "phi" not in json.loads((tmp_path / "config.json").read_text())


def test_scaling_rules_have_one_home():
    from effnet.scaling import flops_constraint, scaled_resolution

    assert scaled_resolution(224, 1.15) == 258  # round(257.6)
    assert scaled_resolution(224, 1.15**2) == round(224 * 1.3225)
    assert flops_constraint(1.2, 1.1, 1.15) == pytest.approx(1.2 * 1.21 * 1.3225)
    s = CompoundScaling(1.3, 1.05, 1.1)
    assert s.constraint == pytest.approx(1.3 * 1.05**2 * 1.1**2) == s.flops_factor
    assert s.coefficients(2, 100).resolution == scaled_resolution(100, 1.1**2) == 121
