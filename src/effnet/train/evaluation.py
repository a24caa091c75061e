"""Evaluation during training: loss, top-1 and top-5 of a model on a dataset.

Datasets are sharded over torchrun processes and the sums all-reduced, so
every process gets the same figures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from . import distributed as D


def topk_correct(logits: torch.Tensor, y: torch.Tensor, k: int) -> int:
    """How many rows of `logits` have the label `y` among their `k` largest entries."""
    k = min(k, logits.shape[1])
    return int((logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum())


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset | DataLoader, *, batch_size: int = 256,
             device: str | torch.device | None = None, amp_dtype: torch.dtype | None = None,
             channels_last: bool = False, num_workers: int = 0,
             info: D.DistInfo | None = None) -> dict[str, float]:
    """Loss, top-1 and top-5 of `model` on `data` (sharded over torchrun processes, summed)."""
    info = info or D.DistInfo()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if isinstance(data, DataLoader):
        loader = data
    else:
        n = len(data)  # type: ignore[arg-type]
        shard = Subset(data, range(info.rank, n, info.world_size)) if info.enabled else data
        loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            pin_memory=device.type == "cuda")
    was = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss_sum, top1, top5, count
    try:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
            logits = logits.float()
            sums += torch.tensor([float(F.cross_entropy(logits, y, reduction="sum")),
                                  topk_correct(logits, y, 1), topk_correct(logits, y, 5),
                                  len(y)], dtype=torch.float64)
    finally:
        model.train(was)
    D.all_reduce_sum(sums, info)
    n = max(1.0, float(sums[3]))
    return {"loss": float(sums[0]) / n, "top1": float(sums[1]) / n, "top5": float(sums[2]) / n,
            "n": int(sums[3])}
