"""Paper Table 4: EfficientNet-B1 against ResNet-152, batch 1, one core."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ..inference.optimize import optimize_for_inference
from ..model_factory import create_model
from ..profiling import count_macs
from .harness import _no_grad_call, describe_device, num_threads, time_alternating
from .references import PAPER_TABLE4, REFERENCE_BN_EPS, randomize_bn
from .results import Table4Result


def table4(repeats: int = 7, threads: int = 1, min_time: float = 1.0,
           progress: Callable[[str], None] | None = None) -> Table4Result:
    """Paper Table 4 here: EfficientNet-B1 (240 px) against ResNet-152 (224 px), batch 1.

    Both eager as created, and both optimized (effnet's fast path; ResNet-152
    with its BN folded by a frozen TorchScript trace, channels_last): the
    ratio of ResNet-152's latency to B1's, against the paper's 5.7x.
    """
    import torchvision

    with num_threads(threads):
        b1 = create_model("b1", bn_eps=REFERENCE_BN_EPS).eval()
        randomize_bn(b1)
        rn = torchvision.models.resnet152(weights=None).eval()
        randomize_bn(rn)
        xb = torch.randn(1, 3, 240, 240)
        xr = torch.randn(1, 3, 224, 224)
        b1_fast = optimize_for_inference(b1)
        b1_ts = optimize_for_inference(b1, example_input=xb, torchscript=True)
        rn_cl = copy.deepcopy(rn).to(memory_format=torch.channels_last)
        with _quiet_jit(), torch.no_grad():
            rn_ts = torch.jit.freeze(torch.jit.trace(rn_cl, xr))
        fns = {"b1": lambda: _no_grad_call(b1, xb), "resnet152": lambda: _no_grad_call(rn, xr),
               "b1-fast": lambda: _no_grad_call(b1_fast, xb),
               "b1-ts": lambda: _no_grad_call(b1_ts, xb),
               "resnet152-ts": lambda: _no_grad_call(rn_ts, xr)}
        t = time_alternating(fns, repeats, min_time, progress=progress)
    return Table4Result(threads=threads, device=describe_device(torch.device("cpu")),
                        seconds={k: tuple(v) for k, v in t.items()},
                        b1_macs=count_macs(b1, 240), resnet152_macs=_resnet_macs(rn),
                        paper=PAPER_TABLE4)


def _resnet_macs(model: nn.Module) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as c:
        model(torch.zeros(1, 3, 224, 224))
    return c.get_total_flops() // 2


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
