"""The benchmark engine measures what it says (no timings asserted here)."""

from __future__ import annotations

import dataclasses
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
    totals = {k: sum(r["bytes"] for r in v["by_op"]) for k, v in res.impls.items()}
    assert totals == {k: res.total(k) for k in res.impls} == {k: res.total(k, "by_role")
                                                              for k in res.impls}
    # Same architecture, same tensors kept (up to per-sample stochastic-depth masks).
    assert abs(totals["timm"] - totals["effnet"]) <= 0.005 * totals["timm"]
    assert totals["effnet-memeff"] < 0.5 * totals["effnet"]
    silu = {k: sum(r["bytes"] for r in v["by_op"] if r["op"] == "SiluBackward0")
            for k, v in res.impls.items()}
    assert silu["effnet-memeff"] < 0.02 * silu["effnet"]  # only the SE's tiny SiLU is left
    assert "total" in bench.format_table(res)


def test_inference_rows_and_output_check():
    res = bench.inference("b0", batches=(1,), impls=("timm", "effnet", "effnet-fast"),
                          resolution=32, repeats=1, min_time=0.0)
    assert isinstance(res, bench.InferenceResult)
    rows = {r.impl: r for r in res.rows}
    assert rows["timm"].x_baseline == 1.0
    assert all(r.max_abs_diff < 1e-4 for r in rows.values())
    assert all(r.images_per_s > 0 for r in rows.values())
    assert all(r.x_baseline == r.images_per_s / rows["timm"].images_per_s for r in rows.values())
    assert "effnet-fast" in bench.format_table(res)
    assert res.as_dict()["rows"][0]["x_timm"] == 1.0


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
    rows = {r.impl: r for r in res.rows}
    assert rows["effnet-memeff"].peak_bytes < rows["effnet"].peak_bytes
    assert rows["effnet-memeff"].saved_bytes < 0.5 * rows["effnet"].saved_bytes
    assert rows["effnet-memeff"].max_abs_diff < 1e-5


def _row_line(text: str, impl: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.split() and ln.split()[0] == impl]
    return line


MACHINE_KEYS = {"cpu", "threads", "aten_cpu_capability", "onednn_isa", "torch", "date"}


def test_inference_result_round_trips_json_and_formats_every_row(tmp_path):
    # Medians by hand: timm 0.5 s per batch of 2 -> 4 img/s; effnet 0.25 s -> 8 img/s, 2x timm.
    timm = bench.InferenceRow("timm", 2, (1.0, 0.5, 0.25), 0.0, gflops=3.0)
    eff = bench.InferenceRow("effnet", 2, (0.5, 0.125, 0.25), 2e-6, gflops=6.0)
    lone = bench.InferenceRow("effnet", 4, (0.5,), 0.0, gflops=1.5)  # no timm row at batch 4
    res = bench.InferenceResult("b0", 224, "test CPU", False, 1, 400_000_000, "timm",
                                tuple(r.against(timm if r.batch == 2 else None)
                                      for r in (timm, eff, lone)))
    assert (eff.images_per_s, res.rows[1].x_baseline, res.rows[2].x_baseline) == (8.0, 2.0, None)
    d = res.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert {k: v for k, v in d.items() if k != "rows"} == {
        "task": "inference", "model": "b0", "resolution": 224, "device": "test CPU",
        "amp": False, "threads": 1, "macs_per_image": 400_000_000, "baseline": "timm"}
    assert d["rows"][1] == {"impl": "effnet", "batch": 2, "images_per_s": 8.0, "median_s": 0.25,
                            "seconds": [0.5, 0.125, 0.25], "max_abs_diff": 2e-6, "gflops": 6.0,
                            "x_timm": 2.0}
    assert d["rows"][0]["x_timm"] == 1.0 and "x_timm" not in d["rows"][2]
    text = res.format()
    assert str(res) == text == bench.format_table(res)
    assert text.splitlines()[0].startswith("b0 inference @224px on test CPU, 1 threads")
    assert _row_line(text, "timm").split() == ["timm", "2", "4.0", "1.00", "3.0", "0.0e+00"]
    rows = [ln.split() for ln in text.splitlines()[2:]]
    assert rows[1] == ["effnet", "2", "8.0", "2.00", "6.0", "2.0e-06"]
    assert rows[2] == ["effnet", "4", "8.0", "nan", "1.5", "0.0e+00"]
    written = json.loads(bench.write_json(res, tmp_path / "r.json").read_text())
    assert set(written.pop("machine")) >= MACHINE_KEYS  # every JSON says what it ran on
    assert written == d
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.model = "b1"


def test_training_result_ratios_and_json_of_a_report_holding_records(tmp_path):
    mib = 2**20
    timm = bench.TrainingRow("timm", 4, (2.0, 1.0, 4.0), 0.0, 8 * mib, 32 * mib)
    memeff = bench.TrainingRow("effnet-memeff", 4, (0.5,), 1e-7, 2 * mib, 16 * mib)
    ckpt = bench.TrainingRow("effnet-memeff-ckpt", 4, (1.0,), 1e-7, None, 8 * mib)
    res = bench.TrainingResult("b0", 64, "test CPU", False, True, 2, "timm", "SGD",
                               tuple(r.against(timm) for r in (timm, memeff, ckpt)))
    r = {row.impl: row for row in res.rows}
    # timm: 4 images / median 2 s = 2 img/s; memeff 8 img/s = 4x, keeps 2/8 of the bytes.
    assert (r["effnet-memeff"].x_baseline, r["effnet-memeff"].saved_x_baseline,
            r["effnet-memeff"].peak_x_baseline) == (4.0, 0.25, 0.5)
    assert r["effnet-memeff-ckpt"].saved_x_baseline is None
    rows = res.as_dict()["rows"]
    assert rows[1] == {"impl": "effnet-memeff", "batch": 4, "images_per_s": 8.0,
                       "median_s": 0.5, "seconds": [0.5], "saved_bytes": 2 * mib,
                       "max_abs_diff": 1e-7, "peak_bytes": 16 * mib, "x_timm": 4.0,
                       "saved_x_timm": 0.25, "peak_x_timm": 0.5}
    assert rows[2]["saved_bytes"] is None and "saved_x_timm" not in rows[2]
    assert rows[2]["peak_x_timm"] == 0.25
    text = res.format()
    assert "batch 4" in text.splitlines()[0] and "channels_last" in text.splitlines()[0]
    assert _row_line(text, "timm").split() == ["timm", "2.00", "1.00", "8", "1.00", "32",
                                               "1.00"]
    assert _row_line(text, "effnet-memeff").split() == ["effnet-memeff", "8.00", "4.00", "2",
                                                        "0.25", "16", "0.50"]
    assert _row_line(text, "effnet-memeff-ckpt").split() == ["effnet-memeff-ckpt", "4.00",
                                                             "2.00", "-", "nan", "8", "0.25"]
    # A combined report (benchmarks/gpu_check.py) may hold records: they are written as dicts.
    path = bench.write_json({"device": "test", "stages": {"training": res}}, tmp_path / "g.json")
    written = json.loads(path.read_text())
    assert set(written.pop("machine")) >= MACHINE_KEYS
    assert written == {"device": "test", "stages": {"training": res.as_dict()}}


def test_table4_and_limits_results_compute_their_ratios():
    t4 = bench.Table4Result(1, "test CPU", {"b1": (0.1, 0.2, 0.3), "resnet152": (1.0,),
                                            "b1-fast": (0.2,), "b1-ts": (0.1,),
                                            "resnet152-ts": (0.6,)},
                            b1_macs=700, resnet152_macs=11_550, paper=bench.PAPER_TABLE4)
    assert (t4.speedup_eager, t4.speedup_optimized) == (5.0, pytest.approx(6.0))
    d = t4.as_dict()
    assert json.loads(json.dumps(d)) == d and d["task"] == "table4"
    assert d["latency_s"]["b1"] == 0.2 and d["macs"] == {"b1": 700, "resnet152": 11_550}
    text = t4.format()
    assert "5.00x" in text and "6.00x" in text and "MACs ratio 16.5x" in text
    assert "  b1                200.0 ms" in text.splitlines()
    # Two layers moving 3e6 bytes at 1 GB/s: 3 ms at least; measured 6 ms NCHW is 2x.
    layers = (bench.DepthwiseLayer(0, (1, 8, 4, 4), 3, 1, 1_000_000, 1_000_000),
              bench.DepthwiseLayer(1, (1, 8, 4, 4), 5, 2, 500_000, 2_000_000))
    dw = bench.DepthwiseBound("b0", 1, 224, 1.0, nchw_s=0.006, channels_last_s=0.0015,
                              per_layer=layers)
    assert (dw.layers, dw.macs, dw.bytes, dw.flops_per_byte) == (2, 1_500_000, 3_000_000, 1.0)
    assert dw.bound_s == pytest.approx(0.003) and dw.nchw_x_bound == pytest.approx(2.0)
    frac = bench.PeakFraction("effnet", 8, 25.0, 0.25)
    lim = bench.LimitsResult(2, "test CPU", 100.0, 1.0, dw, (frac,))
    d = lim.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["depthwise"]["per_layer"][1] == {"layer": 1, "input": [1, 8, 4, 4], "kernel": 5,
                                              "stride": 2, "macs": 500_000, "bytes": 2_000_000}
    assert d["fraction_of_peak"] == [{"impl": "effnet", "batch": 8, "gflops": 25.0,
                                      "fraction": 0.25}]
    assert "fraction_of_peak" not in dataclasses.replace(lim, fraction_of_peak=()).as_dict()
    text = lim.format()
    assert "2 layers, 1.5 M MACs" in text and "(2.0x the bound)" in text
    assert "  effnet           batch   8:   25.0 GFLOP/s = 25.0% of the matmul peak" in text


def test_inference_runs_onnxruntime_on_the_same_weights():
    res = bench.inference("b0", batches=(1,), impls=("effnet", "onnxruntime"), resolution=32,
                          repeats=1, min_time=0.0)
    assert [r.impl for r in res.rows] == ["effnet", "onnxruntime"]
    assert res.rows[1].max_abs_diff < 1e-3 and res.rows[1].images_per_s > 0


@pytest.mark.parametrize("flags,cap,expected", [
    ("sse4_1 avx avx2 fma avx512f avx512bw avx512vl avx512dq", "", "avx512_core"),
    ("sse4_1 avx avx2 fma avx512f avx512bw avx512vl avx512dq", "AVX2", "avx2"),
    ("sse4_1 avx avx2 fma", "", "avx2"),  # AMD Zen 1-3, Intel client chips
    ("sse4_1 avx avx2 fma", "AVX512_CORE", "avx2"),  # a cap above the CPU changes nothing
    ("sse4_1 avx avx2", "", "avx"),  # oneDNN's avx2 level needs FMA too
])
def test_onednn_isa_is_the_cpus_level_capped_by_the_environment(monkeypatch, flags, cap,
                                                                  expected):
    from effnet import machine

    monkeypatch.setattr(machine, "_cpuinfo", lambda field: flags if field == "flags" else "")
    machine._onednn_isa.cache_clear()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    try:
        assert machine.onednn_isa() == expected
    finally:
        machine._onednn_isa.cache_clear()
