"""Optimizers: RMSprop with TensorFlow semantics (the paper's optimizer) and parameter groups."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class RMSpropTF(torch.optim.Optimizer):
    """RMSprop as TensorFlow 1 computes it (paper Section 5.2: decay 0.9, momentum 0.9).

    Per step, for each parameter with gradient ``g`` (``tf.compat.v1.train.RMSPropOptimizer``)::

        g   = g + weight_decay * p                  # L2 on the loss, as the TF code adds it
        ms  = decay * ms + (1 - decay) * g**2       # ms starts at 1, not 0
        mom = momentum * mom + lr * g / sqrt(ms + eps)
        p   = p - mom

    Two differences from ``torch.optim.RMSprop``: the mean square starts at 1
    (torch: 0, which makes the first steps huge), and ``eps`` sits inside the
    square root (torch: outside). The learning rate is applied inside the
    momentum buffer, so a changed lr does not rescale past momentum.
    """

    def __init__(self, params: Iterable, lr: float = 0.016, decay: float = 0.9,
                 momentum: float = 0.9, eps: float = 1e-3, weight_decay: float = 0.0) -> None:
        if lr < 0 or not 0.0 <= decay < 1.0 or momentum < 0 or eps <= 0 or weight_decay < 0:
            raise ValueError("RMSpropTF needs lr >= 0, 0 <= decay < 1, momentum >= 0, eps > 0, "
                             "weight_decay >= 0")
        super().__init__(params, {"lr": lr, "decay": decay, "momentum": momentum, "eps": eps,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, rho, mu = group["lr"], group["decay"], group["momentum"]
            eps, wd = group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("RMSpropTF does not support sparse gradients")
                # half-precision parameters keep float32 state; float32/64 their own
                dtype = torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype
                g = p.grad.to(dtype)
                if wd:
                    g = g.add(p.to(dtype), alpha=wd)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["square_avg"] = torch.ones_like(p, dtype=dtype)
                    if mu > 0:
                        state["momentum_buffer"] = torch.zeros_like(p, dtype=dtype)
                state["step"] += 1
                ms = state["square_avg"]
                ms.mul_(rho).addcmul_(g, g, value=1.0 - rho)
                update = g / ms.add(eps).sqrt_()
                if mu > 0:
                    buf = state["momentum_buffer"]
                    buf.mul_(mu).add_(update, alpha=lr)
                    p.sub_(buf.to(p.dtype))
                else:
                    p.sub_((update * lr).to(p.dtype))
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: BatchNorm/GroupNorm/LayerNorm parameters without weight decay, the rest with.

    The reference TF code applies L2 to every trainable variable whose name
    lacks 'batch_normalization' (conv and FC weights and biases alike).
    """
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    no_decay = {id(p) for m in model.modules() if isinstance(m, norm_types)
                for p in m.parameters(recurse=False)}
    decay, plain = [], []
    for p in model.parameters():
        if p.requires_grad:
            (plain if id(p) in no_decay else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0})
    return groups


OPTIMIZERS = ("rmsproptf", "adamw", "sgd")


def create_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float,
                     momentum: float = 0.9) -> torch.optim.Optimizer:
    """The optimizer `name` over `model`, norm layers excluded from weight decay."""
    groups = param_groups(model, weight_decay)
    if name == "rmsproptf":
        return RMSpropTF(groups, lr=lr, decay=0.9, momentum=momentum, eps=1e-3)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    raise ValueError(f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")
