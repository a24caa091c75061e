"""The benchmark engine measures what it says (no timings asserted here)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from effnet import bench
from effnet.cli import main
from effnet.errors import EffnetError
from tests.conftest import saved_storage_bytes


def test_reference_models_hold_the_same_weights_and_compute_the_same_function():
    models = bench.reference_models("b0", ("effnet", "timm", "torchvision"))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        outs = {k: m.eval()(x) for k, m in models.items()}
    torch.testing.assert_close(outs["effnet"], outs["timm"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["effnet"], outs["torchvision"], atol=1e-5, rtol=1e-5)
    w = [m.state_dict() for m in models.values()]
    for a, b in zip(w[0].values(), w[1].values(), strict=True):
        assert torch.equal(a, b)


def test_copy_weights_refuses_another_architecture():
    with pytest.raises(EffnetError, match="not the same architecture"):
        bench.copy_weights_by_order(nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 3),
                                                                   nn.Linear(3, 3)))
    with pytest.raises(EffnetError, match="does not fit"):
        bench.copy_weights_by_order(nn.Linear(3, 3), nn.Linear(3, 4))


def test_time_alternating_rotates_order_and_counts_rounds():
    calls: list[str] = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    out = bench.time_alternating(fns, repeats=3, min_time=0.0, warmup=0)
    assert {k: len(v) for k, v in out.items()} == {"a": 1 * 3, "b": 3, "c": 3}
    rounds = calls[3:]  # after one calibration call each
    assert rounds == list("abc") + list("bca") + list("cab")


def test_saved_tensors_by_op_matches_an_independent_count():
    """The graph walk finds every storage the pack hook sees (parameters excluded)."""
    model = bench.reference_models("b0", ("effnet",))["effnet"]
    x = torch.randn(1, 3, 48, 48)
    report = bench.saved_tensors_by_op(model, x)
    counted = saved_storage_bytes(model, x, lambda out: out.logsumexp(1).mean())
    total = sum(r["bytes"] for r in report["by_op"])
    # The graph also holds a few scalars autograd saves without packing them (bytes).
    assert abs(total - counted) <= 1024
    assert total == sum(r["bytes"] for r in report["by_role"])
    ops = {r["op"] for r in report["by_op"]}
    assert {"ConvolutionBackward0", "NativeBatchNormBackward0", "SiluBackward0"} <= ops


def test_memory_report_shows_the_cut():
    res = bench.memory_report("b0", batch=1, resolution=48,
                              impls=("timm", "effnet", "effnet-memeff"))
    totals = {k: sum(r["bytes"] for r in v["by_op"]) for k, v in res["impls"].items()}
    # Same architecture, same tensors kept (up to per-sample stochastic-depth masks).
    assert abs(totals["timm"] - totals["effnet"]) <= 0.005 * totals["timm"]
    assert totals["effnet-memeff"] < 0.5 * totals["effnet"]
    silu = {k: sum(r["bytes"] for r in v["by_op"] if r["op"] == "SiluBackward0")
            for k, v in res["impls"].items()}
    assert silu["effnet-memeff"] < 0.02 * silu["effnet"]  # only the SE's tiny SiLU is left
    assert "total" in bench.format_table(res)


def test_inference_rows_and_output_check():
    res = bench.inference("b0", batches=(1,), impls=("timm", "effnet", "effnet-fast"),
                          resolution=32, repeats=1, min_time=0.0)
    rows = {r["impl"]: r for r in res["rows"]}
    assert rows["timm"]["x_timm"] == 1.0
    assert all(r["max_abs_diff"] < 1e-4 for r in rows.values())
    assert all(r["images_per_s"] > 0 for r in rows.values())
    assert "effnet-fast" in bench.format_table(res)


def test_cli_memory_writes_json(tmp_path, capsys):
    path = tmp_path / "m.json"
    assert main(["bench", "memory", "--batch", "1", "--resolution", "64",
                 "--impls", "effnet,effnet-memeff", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["task"] == "memory" and set(data["impls"]) == {"effnet", "effnet-memeff"}
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("argv,msg", [
    (["bench", "inference", "--batch", "0"], "batch sizes must be >= 1"),
    (["bench", "inference", "--batch", "a"], "bad batch list"),
    (["bench", "inference", "--impls", "nope", "--repeats", "1"], "unknown implementation"),
    (["bench", "training", "--device", "cuda:9"], None),
])
def test_cli_bad_input_one_line_error(argv, msg, capsys):
    if msg is None and torch.cuda.is_available():
        return
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("effnet: error:") and len(err.splitlines()) == 1
    if msg:
        assert msg in err


@pytest.mark.slow
def test_training_peak_memory_child_processes():
    """The memory-efficient model's measured peak is below the plain model's."""
    res = bench.training("b0", batch=4, impls=("effnet", "effnet-memeff"), resolution=64,
                         repeats=1)
    rows = {r["impl"]: r for r in res["rows"]}
    assert rows["effnet-memeff"]["peak_bytes"] < rows["effnet"]["peak_bytes"]
    assert rows["effnet-memeff"]["saved_bytes"] < 0.5 * rows["effnet"]["saved_bytes"]
    assert rows["effnet-memeff"]["max_abs_diff"] < 1e-5
