"""The reference models: one EfficientNet from effnet, timm and torchvision, one set of weights."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import EffnetError
from ..model_factory import create_model

# Paper Table 4 (arXiv:1905.11946v5): batch 1, one core of a Xeon E5-2690, seconds.
PAPER_TABLE4 = {"resnet152_s": 0.554, "b1_s": 0.098, "speedup": 5.7}
# timm `efficientnet_*` and torchvision b0..b4 were trained with BN eps 1e-5 (their model
# definitions: timm's default BatchNorm2d, torchvision's `_efficientnet_conf`).
REFERENCE_BN_EPS = 1e-5
BASELINE = "timm"





def _set_bn_eps(model: nn.Module, eps: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = eps


def copy_weights_by_order(src: nn.Module, dst: nn.Module) -> None:
    """Copy `src`'s parameters and buffers into `dst`, tensor by tensor in state-dict order.

    timm, torchvision and effnet EfficientNets list the same tensors in the
    same order; every shape is checked before anything is copied.
    """
    s_items, d_items = list(src.state_dict().items()), list(dst.state_dict().items())
    if len(s_items) != len(d_items):
        raise EffnetError(f"cannot copy weights: {len(s_items)} tensors vs {len(d_items)}; "
                          "the two models are not the same architecture")
    for (sk, sv), (dk, dv) in zip(s_items, d_items, strict=True):
        if sv.shape != dv.shape:
            raise EffnetError(f"cannot copy weights: {sk} {tuple(sv.shape)} does not fit "
                              f"{dk} {tuple(dv.shape)}")
    dst.load_state_dict({dk: sv.detach().clone() for (_, sv), (dk, _) in
                         zip(s_items, d_items, strict=True)})


def randomize_bn(model: nn.Module, seed: int = 0) -> None:
    """Give every batch norm non-trivial statistics and affine parameters, so outputs test them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


def _timm_model(name: str, drop_path_rate: float) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise EffnetError("the timm comparison needs timm: pip install timm") from None
    return timm.create_model(f"efficientnet_{name}", pretrained=False,
                             drop_path_rate=drop_path_rate)


def _torchvision_model(name: str) -> nn.Module:
    import torchvision

    builder = getattr(torchvision.models, f"efficientnet_{name}", None)
    if builder is None:
        raise EffnetError(f"torchvision has no efficientnet_{name}: drop 'torchvision' from "
                          "the implementations")
    return builder(weights=None)


def reference_models(name: str = "b0", impls: Sequence[str] = ("effnet", "timm", "torchvision"),
                     drop_path_rate: float = 0.2, seed: int = 0) -> dict[str, nn.Module]:
    """The same EfficientNet from effnet, timm and torchvision, holding the same weights.

    The weights are effnet's initialisation with randomized BN statistics; all
    models use BN eps 1e-5 (timm's and torchvision's b0..b4 value).
    """
    torch.manual_seed(seed)
    src = create_model(name, bn_eps=REFERENCE_BN_EPS, drop_path_rate=drop_path_rate)
    randomize_bn(src, seed)
    out: dict[str, nn.Module] = {}
    for impl in impls:
        if impl == "effnet":
            m = copy.deepcopy(src)
        elif impl == "timm":
            m = _timm_model(name, drop_path_rate)
        elif impl == "torchvision":
            m = _torchvision_model(name)
        else:
            raise EffnetError(f"unknown source {impl!r}: use effnet, timm or torchvision")
        if impl != "effnet":
            copy_weights_by_order(src, m)
            _set_bn_eps(m, REFERENCE_BN_EPS)
        out[impl] = m
    return out


def _sources_for(impls: Sequence[str]) -> list[str]:
    """Which libraries' models the implementations need (effnet always, as the weight source)."""
    need = {"effnet"} | {i.split("-")[0] for i in impls if i.startswith(("timm", "torchvision"))}
    return sorted(need)


def _training_model(impl: str, name: str, dev: torch.device, channels_last: bool,
                    sources: dict[str, nn.Module] | None = None) -> nn.Module:
    src = "effnet" if impl.startswith("effnet") else impl
    m = (copy.deepcopy(sources[src]) if sources is not None
         else reference_models(name, (src,))[src])
    if impl in ("effnet-memeff", "effnet-memeff-ckpt"):
        m.set_memory_efficient()
    if impl in ("effnet-ckpt", "effnet-memeff-ckpt"):
        m.set_grad_checkpointing()
    m = m.to(dev).train()
    return m.to(memory_format=torch.channels_last) if channels_last else m


