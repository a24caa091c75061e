"""Counting what a model costs: parameters, multiply-adds and activation memory."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import EffnetError


@dataclass(frozen=True)
class Profile:
    """Cost of one forward pass at batch 1.

    `macs` counts convolutions and linear layers (FLOPs / 2 as measured by
    `torch.utils.flop_counter`), the paper's "FLOPS" unit. `activation_bytes`
    is what a training-mode forward keeps for backward (unique tensors saved
    by autograd, parameters excluded).
    """

    params: int
    macs: int
    activation_bytes: int
    resolution: int

    def as_dict(self) -> dict:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not), buffers excluded."""
    return sum(p.numel() for p in model.parameters())


def _input(model: nn.Module, resolution: int, batch: int = 1) -> torch.Tensor:
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    p = next(model.parameters())
    return torch.zeros(batch, first.in_channels, resolution, resolution, dtype=p.dtype,
                       device=p.device)


@torch.no_grad()
def count_macs(model: nn.Module, resolution: int) -> int:
    """Multiply-adds of one forward pass at batch 1, measured on the real graph."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(_input(model, resolution))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def activation_bytes(model: nn.Module, resolution: int, batch: int = 1) -> int:
    """Bytes of the tensors autograd keeps for backward in one training-mode forward."""
    params = {p.data_ptr() for p in model.parameters()}
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if storage.data_ptr() not in params:
            seen[key] = storage.nbytes()
        return t

    was_training = model.training
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items() if "running" in k
             or "num_batches" in k}
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            x = _input(model, resolution, batch).requires_grad_(False)
            try:
                out = model(x)
            except ValueError:  # BN cannot train on a 1x1 map at batch 1 (e.g. B0 at 32 px):
                seen.clear()    # count in eval mode, BN on running stats (~0.2% less at 224)
                model.eval()
                out = model(x)
            del out
    finally:
        model.load_state_dict(state, strict=False)
        model.train(was_training)
    return sum(seen.values())


def profile(model: nn.Module, resolution: int | None = None) -> Profile:
    """Parameters, MACs and activation memory of `model` at `resolution` (paper Table 2).

    `resolution` defaults to the model's pretrained_cfg input size.
    """
    if resolution is None:
        resolution = int(getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224))[-1])
    if resolution < 1:
        raise EffnetError(f"resolution must be >= 1, got {resolution}")
    return Profile(params=count_params(model), macs=count_macs(model, resolution),
                   activation_bytes=activation_bytes(model, resolution), resolution=resolution)
