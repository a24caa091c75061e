"""Initialisations for short from-scratch runs: a zero classifier and zero residual branches."""

from __future__ import annotations

from torch import nn


def zero_init_head(model: nn.Module) -> None:
    """Classifier weights and bias at zero: every class starts at probability 1/num_classes,
    the loss at log(num_classes) (the TF init starts 10 classes near a loss of 7.5)."""
    head = getattr(model, "classifier", None)
    if isinstance(head, nn.Linear):
        nn.init.zeros_(head.weight)
        if head.bias is not None:
            nn.init.zeros_(head.bias)


def zero_init_last(model: nn.Module) -> int:
    """Zero the gamma of the last BatchNorm of each residual branch (timm's `zero_init_last`).

    Each residual block then starts as the identity, so a deep network trains
    like a shallow one at first (Goyal et al. 2017). Blocks without a skip are
    left alone. Returns the number of blocks changed.
    """
    from ..nn.blocks import Bottleneck, MBConv

    changed = 0
    for m in model.modules():
        last = None
        if isinstance(m, MBConv) and m.has_skip:
            last = m.project
        elif isinstance(m, Bottleneck):
            last = m.expand
        bn = getattr(last, "bn", None)
        if isinstance(bn, nn.BatchNorm2d) and bn.weight is not None:
            nn.init.zeros_(bn.weight)
            changed += 1
    return changed
