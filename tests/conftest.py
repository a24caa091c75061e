"""Shared test helpers: reference data and state-dict transfer by tensor order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """One torch thread: on a shared 2-core machine, two threads make small ops 5-20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cat_dog(tmp_path) -> Path:
    """A save_pretrained folder: b0, classes ('cat', 'dog'), 32 px, whole-image eval."""
    import effnet

    torch.manual_seed(0)
    model = effnet.create_model("b0", num_classes=2)
    model.pretrained_cfg.update(input_size=(3, 32, 32), crop_pct=1.0, interpolation="bilinear",
                                label_names=["cat", "dog"])
    return model.save_pretrained(tmp_path / "catdog")


@pytest.fixture(scope="session")
def paper() -> dict:
    return json.loads((DATA / "paper_reference.json").read_text())


@pytest.fixture(scope="session")
def model_counts() -> dict[str, dict]:
    rows = json.loads((DATA / "model_counts.json").read_text())["rows"]
    return {r["model"]: r for r in rows}


def randomize_bn_stats(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial running stats and affine params, so eval outputs test them."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def transfer_by_order(src: dict[str, torch.Tensor], dst_model: torch.nn.Module) -> None:
    """Copy a reference state dict into `dst_model` tensor by tensor, checking every shape.

    timm, torchvision and effnet list the same tensors in the same order (their model
    definitions build the layers in the same order), so the i-th tensor of one is the
    i-th of the other.
    """
    dst = dst_model.state_dict()
    assert len(src) == len(dst), f"{len(src)} reference tensors vs {len(dst)} in effnet"
    mapped = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items(), strict=True):
        assert sv.shape == dv.shape, f"{sk} {tuple(sv.shape)} vs {dk} {tuple(dv.shape)}"
        mapped[dk] = sv.clone()
    dst_model.load_state_dict(mapped, strict=True)


def saved_storage_bytes(model: torch.nn.Module, x: torch.Tensor, loss_fn=None) -> int:
    """Bytes of the unique storages autograd keeps for backward in one training-mode forward
    (parameters excluded), counted with a pack hook, independently of effnet's own counters.
    `loss_fn(out)`, if given, runs inside the hook too."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
        if loss_fn is not None:
            out = loss_fn(out)
    del out
    return sum(seen.values())


def tiny_model(activation: str = "relu6", se_ratio: float = 0.0, padding: str = "symmetric",
               num_classes: int = 10, size: int = 32, seed: int = 0) -> torch.nn.Module:
    """A three-stage MBConv network (Lite-like with relu6 and no SE, B-like with silu and SE),
    random BN statistics, eval mode, pretrained_cfg at `size` px with whole-image eval."""
    import effnet
    from effnet.spec import NetworkSpec, StageSpec

    spec = NetworkSpec(
        name=f"tiny-{activation}",
        stages=(StageSpec("mbconv", 3, 1, 1, 16, 1, se_ratio),
                StageSpec("mbconv", 3, 2, 6, 24, 2, se_ratio),
                StageSpec("mbconv", 5, 2, 6, 40, 1, se_ratio)),
        stem_channels=16, head_channels=64, activation=activation)
    torch.manual_seed(seed)
    model = effnet.create_model(spec=spec, num_classes=num_classes, padding=padding)
    randomize_bn_stats(model, seed=seed + 1)
    model.pretrained_cfg.update(input_size=(3, size, size), crop_pct=1.0,
                                interpolation="bilinear")
    return model.eval()
