"""Exponential moving average of weights (the reference code's decay 0.9999) via swa_utils."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def tf_ema_multi_avg_fn(decay: float):
    """EMA update for AveragedModel: decay_t = min(decay, (1 + t) / (10 + t)).

    tf.train.ExponentialMovingAverage with num_updates (as the reference code
    uses it): the early average follows the model closely instead of staying
    near the random init for ~1/(1-decay) steps. Integer buffers are copied.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}")

    @torch.no_grad()
    def update(ema: list[torch.Tensor], cur: list[torch.Tensor], n_averaged) -> None:
        t = float(n_averaged)
        d = min(decay, (1.0 + t) / (10.0 + t))
        if torch.is_floating_point(ema[0]):
            torch._foreach_lerp_(ema, cur, 1.0 - d)
        else:
            for e, c in zip(ema, cur, strict=True):
                e.copy_(c)

    return update


def create_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An AveragedModel holding the EMA of `model`'s parameters and buffers (BN stats)."""
    return AveragedModel(model, multi_avg_fn=tf_ema_multi_avg_fn(decay), use_buffers=True)
