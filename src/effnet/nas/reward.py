"""The search objective: accuracy traded against cost (Tan & Le 2019, Sec. 4; MnasNet Eq. 2).

EfficientNet-B0 was found by maximising ``ACC(m) x [FLOPS(m) / T]^w`` with
``w = -0.07`` and ``T`` the target FLOPs. Here FLOPs are multiply-adds
measured on the built model (:func:`effnet.profiling.count_macs`); the ratio
is the same whichever unit is used for both. With ``w = 0`` the reward is the
accuracy alone; a more negative ``w`` favours smaller models: at w = -0.07 a
model with twice the target's MACs needs about 5% (relative) more accuracy
to tie the target-sized one (2^0.07 = 1.0497).
"""

from __future__ import annotations

import math

from ..errors import EffnetError

DEFAULT_W = -0.07


def reward(accuracy: float, macs: float, target_macs: float, w: float = DEFAULT_W) -> float:
    """ACC x (MACs / T)^w, the paper's Sec. 4 objective (MnasNet's soft constraint).

    `accuracy` is a fraction in [0, 1]; `macs` and `target_macs` are > 0.
    """
    for name, value in (("accuracy", accuracy), ("macs", macs), ("target_macs", target_macs),
                        ("w", w)):
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise EffnetError(f"{name} must be a finite number, got {value!r}")
    if not 0.0 <= accuracy <= 1.0:
        raise EffnetError(f"accuracy must be a fraction in [0, 1], got {accuracy!r}")
    if macs <= 0 or target_macs <= 0:
        raise EffnetError(f"MACs and the target MACs must be > 0, got {macs!r} and "
                          f"{target_macs!r}: give target_macs a positive number")
    return float(accuracy) * (float(macs) / float(target_macs)) ** float(w)
