"""RMSpropTF against the TF update rule, the paper's LR schedule, EMA and recipes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from effnet.train import RECIPES, LRMultiplier, RMSpropTF, create_ema, param_groups


def tf_rmsprop_reference(params, grads_fn, lrs, decay=0.9, momentum=0.9, eps=1e-3, wd=0.0):
    """The update of tf.compat.v1.train.RMSPropOptimizer, written from its documentation:

        mean_square = decay * mean_square + (1 - decay) * gradient ** 2
        mom = momentum * mom + learning_rate * gradient / sqrt(mean_square + epsilon)
        variable -= mom
    with the mean_square slot initialised to ones and the momentum slot to zeros; the
    reference EfficientNet code adds weight decay as wd * sum(v**2)/2 to the loss, i.e.
    gradient += wd * variable. float64 numpy throughout.
    """
    p = [np.array(v, dtype=np.float64) for v in params]
    ms = [np.ones_like(v) for v in p]
    mom = [np.zeros_like(v) for v in p]
    out = []
    for t, lr in enumerate(lrs):
        g = grads_fn(p, t)
        for i in range(len(p)):
            gi = g[i] + wd * p[i]
            ms[i] = decay * ms[i] + (1 - decay) * gi * gi
            mom[i] = momentum * mom[i] + lr * gi / np.sqrt(ms[i] + eps)
            p[i] = p[i] - mom[i]
        out.append([v.copy() for v in p])
    return out


def _quadratic_problem():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 3))
    b = rng.normal(size=(5,))
    w0 = rng.normal(size=(3,))
    c0 = rng.normal(size=(2, 2))

    def grads(p, t):  # loss = |a w - b|^2 / 2 + sum(sin(c))
        w, c = p
        return [a.T @ (a @ w - b), np.cos(c)]

    return a, b, w0, c0, grads


@pytest.mark.parametrize("wd", [0.0, 1e-5, 0.1])
def test_rmsprop_tf_matches_reference_step_by_step(wd):
    a, b, w0, c0, grads = _quadratic_problem()
    lrs = [0.016, 0.016, 0.01, 0.05, 0.0, 0.02, 0.02, 0.003] * 3  # lr changes mid-way
    ref = tf_rmsprop_reference([w0, c0], grads, lrs, wd=wd)
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(c0, dtype=torch.float64, requires_grad=True)
    opt = RMSpropTF([w, c], lr=lrs[0], weight_decay=wd)
    at, bt = torch.tensor(a), torch.tensor(b)
    for t, lr in enumerate(lrs):
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        loss = 0.5 * ((at @ w - bt) ** 2).sum() + torch.sin(c).sum()
        loss.backward()
        opt.step()
        np.testing.assert_allclose(w.detach().numpy(), ref[t][0], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(c.detach().numpy(), ref[t][1], rtol=1e-6, atol=1e-9)


def test_rmsprop_tf_differs_from_torch_rmsprop():
    # ms starting at 1 and eps inside the sqrt: the first step is lr*g/sqrt(0.9+0.1g^2+eps),
    # not torch's lr*g/(sqrt(0.1g^2)+eps).
    p = torch.tensor([1.0], requires_grad=True)
    opt = RMSpropTF([p], lr=0.1, momentum=0.0)
    p.grad = torch.tensor([2.0])
    opt.step()
    assert p.item() == pytest.approx(1.0 - 0.1 * 2.0 / math.sqrt(0.9 + 0.1 * 4 + 1e-3))
    q = torch.tensor([1.0], requires_grad=True)
    torch_opt = torch.optim.RMSprop([q], lr=0.1, alpha=0.9, eps=1e-3)
    q.grad = torch.tensor([2.0])
    torch_opt.step()
    assert abs(q.item() - p.item()) > 0.05


def test_weight_decay_skips_batchnorm():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    decay, plain = param_groups(m, 1e-5)
    assert decay["weight_decay"] == 1e-5 and plain["weight_decay"] == 0.0
    assert {id(p) for p in plain["params"]} == {id(m[1].weight), id(m[1].bias)}
    assert len(decay["params"]) == 4  # conv and linear weights and biases (TF L2 includes biases)


def test_paper_schedule_warmup_then_097_every_2_4_epochs():
    spe = 100  # steps per epoch
    mult = LRMultiplier("step", total_steps=350 * spe, steps_per_epoch=spe, warmup_steps=5 * spe)
    assert mult(0) == 0.0
    assert mult(250) == pytest.approx(0.5)          # linear warm-up over 5 epochs
    # after warm-up: staircase 0.97 ** floor(epoch / 2.4), counted from step 0 (TF global_step)
    for epoch in (5.0, 7.2, 7.3, 10.0, 100.0, 349.0):
        step = int(epoch * spe)
        assert mult(step) == pytest.approx(0.97 ** math.floor(step / 240))


def test_cosine_schedule_ends_at_zero():
    mult = LRMultiplier("cosine", total_steps=1000, steps_per_epoch=100, warmup_steps=100)
    assert mult(100) == pytest.approx(1.0)
    assert mult(550) == pytest.approx(0.5)
    assert mult(1000) == pytest.approx(0.0, abs=1e-12)


def test_paper_recipe_numbers():
    # Section 5.2 and the reference code (paper.json training_recipe)
    r = RECIPES["paper"]
    assert (r.optimizer, r.momentum, r.weight_decay) == ("rmsproptf", 0.9, 1e-5)
    assert r.lr(256) == pytest.approx(0.016) and r.lr(4096) == pytest.approx(0.256)
    assert (r.decay_rate, r.decay_epochs, r.warmup_epochs) == (0.97, 2.4, 5)
    assert (r.label_smoothing, r.ema_decay, r.augment) == (0.1, 0.9999, "autoaugment")
    opt = RMSpropTF([torch.zeros(1, requires_grad=True)])
    assert (opt.defaults["decay"], opt.defaults["momentum"], opt.defaults["eps"]) == (0.9, 0.9,
                                                                                     1e-3)


def test_ema_follows_tf_moving_average():
    """tf.train.ExponentialMovingAverage(decay, num_updates): d = min(decay, (1+n)/(10+n))."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = create_ema(m, 0.99)
    ref = {k: v.clone().double() for k, v in m.state_dict().items()}
    for n in range(30):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p))
        m.train()(torch.randn(8, 3))  # moves BN running stats
        ema.update_parameters(m)
        for k, v in m.state_dict().items():
            if n == 0 or not v.is_floating_point():
                ref[k] = v.clone().double()   # first update copies; integer buffers copy
            else:
                d = min(0.99, (1 + n) / (10 + n))
                ref[k] = d * ref[k] + (1 - d) * v.double()
    got = ema.module.state_dict()
    for k, v in ref.items():
        torch.testing.assert_close(got[k].double(), v, rtol=1e-5, atol=1e-6)
