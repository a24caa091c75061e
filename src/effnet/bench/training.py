"""Training-step images/s, bytes kept for backward and peak memory, per implementation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import EffnetError
from ..model_factory import create_model
from .harness import (
    _autocast,
    _batch,
    _max_diff,
    _train_step,
    describe_device,
    num_threads,
    time_alternating,
)
from .impls import TRAINING_IMPLS
from .memory import _saved_at, peak_step_memory
from .records import TrainingRow
from .references import BASELINE, _sources_for, _training_model, reference_models
from .results import TrainingResult


def training(name: str = "b0", batch: int = 64, impls: Sequence[str] = TRAINING_IMPLS,
             resolution: int | None = None, repeats: int = 3, threads: int | None = None,
             device: str = "cpu", amp: bool = False, channels_last: bool = False,
             peak: bool = True, min_time: float = 0.0,
             progress: Callable[[str], None] | None = None) -> TrainingResult:
    """Training-step images/s (forward, loss, backward, SGD step), saved and peak memory.

    All implementations start from the same weights; their eval-mode outputs on
    two of the images are compared with the baseline's (`max_abs_diff`) before
    timing. SGD's learning rate is tiny so that rounds stay comparable.
    """
    dev = torch.device(device)
    unknown = set(impls) - set(TRAINING_IMPLS) - {"effnet-ckpt"}
    if unknown:
        raise EffnetError(f"unknown implementation(s) {sorted(unknown)}: choose from "
                          f"{', '.join(TRAINING_IMPLS)}, effnet-ckpt")
    res = resolution or create_model(name).pretrained_cfg["input_size"][-1]
    with num_threads(threads):
        sources = reference_models(name, _sources_for(impls))
        x, y = _batch(batch, res, dev, channels_last)
        models = {i: _training_model(i, name, dev, channels_last, sources) for i in impls}
        check = {}
        for i, m in models.items():
            m.eval()
            with torch.no_grad(), _autocast(dev, amp):
                check[i] = m(x[:2]).float()
            m.train()
        ref = check.get(BASELINE, next(iter(check.values())))
        # Bytes kept for backward are affine in the batch (activations grow, bf16 weight
        # copies do not): count them at batches 1 and 2 and extrapolate. Checkpointed
        # stages keep theirs inside the checkpoint: only peak memory shows them.
        saved = {i: None if "ckpt" in i else _saved_at(models[i], x, batch, amp) for i in impls}
        steps = {i: _train_step(models[i], x, y, dev, amp) for i in impls}
        times = time_alternating(steps, repeats, min_time=min_time, warmup=1, device=dev,
                                 progress=progress)
        peaks: dict[str, dict[str, Any]] = {}
        if peak:
            for i in impls:
                if progress:
                    progress(f"peak memory of {i}")
                peaks[i] = peak_step_memory(i, name, batch, res, channels_last, device, amp)
        rows = {i: TrainingRow(i, batch, tuple(times[i]), _max_diff(check[i], ref), saved[i],
                               peaks[i]["peak_bytes"] if i in peaks else None) for i in impls}
    return TrainingResult(model=name, resolution=res, device=describe_device(dev), amp=amp,
                          channels_last=channels_last,
                          threads=threads or torch.get_num_threads(), baseline=BASELINE,
                          optimizer="SGD(lr=1e-5, momentum=0.9)",
                          rows=tuple(r.against(rows.get(BASELINE)) for r in rows.values()))
