"""CPU engines against eager PyTorch, `--format best` by measurement, `effnet bench deploy`
(issue 21). Tiny models at 32 px; the reference is always the eager model in the same test."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import statistics

import numpy as np
import onnxruntime as ort
import pytest
import torch

from effnet.cli import main
from effnet.errors import EffnetError
from effnet.inference import engines as engines_mod
from effnet.inference.engines import ENGINES, Setting, check_inputs, eager_logits, require
from effnet.inference.fastest import export_fastest, pick_fastest
from tests.conftest import tiny_model

deploy_mod = importlib.import_module("effnet.bench.deploy")  # the module, not the function
FP32 = ["eager", "fast", "torchscript", "onnxruntime", "openvino"]
MODELS = {  # Lite-like (ReLU6, no SE), B-like (Swish, SE), and TF SAME padding (even input)
    "lite": dict(activation="relu6"),
    "swish-se": dict(activation="silu", se_ratio=0.25),
    "same": dict(activation="relu6", padding="same"),
}
SETTING = Setting(image_size=32, batch=2, threads=1)
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    return tiny_model(**MODELS[request.param])


@pytest.mark.parametrize("name", FP32)
def test_each_fp32_engine_matches_eager_within_its_tolerance(model, name, tmp_path):
    engine = ENGINES[name]
    if engine.missing() is not None:  # an optional engine absent: its message says how to fix
        assert "pip install 'effnet[openvino]'" in engine.missing()
        with pytest.raises(EffnetError, match=r"effnet\[openvino\]"):
            require(name)
        return
    x = check_inputs(SETTING)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out = engine.prepare(model, SETTING, tmp_path, True, None).run(x)
    check = engine.check(out, ref)
    assert out.shape == (2, 10) and check.passed, check.describe()
    assert check.max_abs_diff <= engine.atol + engine.rtol * np.abs(ref).max()


@pytest.mark.parametrize("name", ["onnxruntime-int8", "openvino-int8"])
def test_int8_engines_stay_close_to_eager(name, tmp_path):
    engine = ENGINES[name]
    if engine.missing() is not None:
        assert "effnet[openvino]" in engine.missing()
        return
    net = tiny_model()
    cal = np.random.default_rng(1).standard_normal((16, 3, 32, 32), dtype=np.float32)
    x = check_inputs(SETTING)
    out = engine.prepare(net, SETTING, tmp_path, True, cal).run(x)
    ref = eager_logits(net, x)
    rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert engine.check(out, ref).passed and 0 < rel < engine.max_relative_error


def test_the_check_fails_outputs_off_eager():
    ref = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    fp32, int8 = ENGINES["onnxruntime"], ENGINES["onnxruntime-int8"]
    assert fp32.check(ref + 1e-5, ref).passed
    assert not fp32.check(ref + 1e-2, ref).passed
    assert not fp32.check(ref * np.nan, ref).passed
    assert int8.check(ref * 1.1, ref).passed and not int8.check(-ref, ref).passed


@pytest.mark.slow
def test_compile_engine_matches_eager(tmp_path):
    net = tiny_model()
    x = check_inputs(SETTING)
    out = ENGINES["compile"].prepare(net, SETTING, tmp_path, True, None).run(x)
    assert ENGINES["compile"].check(out, eager_logits(net, x)).passed


def test_a_missing_engine_gives_a_one_line_install_hint(monkeypatch, tmp_path, capsys, cat_dog):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "openvino" else real(n, *a))
    assert "pip install 'effnet[openvino]'" in ENGINES["openvino"].missing()
    code = main(["export", str(cat_dog), "--format", "openvino", "--output",
                 str(tmp_path / "m.xml")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "effnet[openvino]" in err
    assert not (tmp_path / "m.xml").exists()


# ---------------------------------------------------------------- --format best
def _fake_timer(times: dict[str, float]):
    seen = {}

    def timer(calls):
        seen.update(calls)
        for call in calls.values():  # the calls are real: each runs
            call()
        return {n: times[n] for n in calls}

    timer.seen = seen
    return timer


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("winner", ["torchscript", "onnxruntime"])
def test_best_picks_what_the_timer_measured_and_writes_that_file(winner, tmp_path):
    net = tiny_model()
    times = {"torchscript": 2.0, "onnxruntime": 3.0}
    times[winner] = 1.0
    timer = _fake_timer(times)
    pick, files = export_fastest(net, tmp_path / "model.bin", SETTING,
                                 ["torchscript", "onnxruntime"], timer=timer)
    assert pick.engine == winner and set(timer.seen) == {"torchscript", "onnxruntime"}
    assert pick.seconds == times and f"fastest: {winner}" in pick.describe()
    suffix = ENGINES[winner].suffix
    assert [f.name for f in files] == [f"model{suffix}"]
    x = check_inputs(SETTING)
    if winner == "onnxruntime":
        s = ort.InferenceSession(str(files[0]), providers=["CPUExecutionProvider"])
        out = s.run(None, {s.get_inputs()[0].name: x})[0]
    else:
        out = torch.jit.load(str(files[0]))(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, eager_logits(net, x), atol=1e-4, rtol=1e-4)


def test_best_drops_an_engine_whose_outputs_are_off(monkeypatch, tmp_path):
    net = tiny_model()
    good = ENGINES["onnxruntime"]

    def broken(*args):
        runner = good.prepare(*args)
        run = runner.run
        return dataclasses.replace(runner, run=lambda x: run(x) + 1.0)

    monkeypatch.setitem(ENGINES, "onnxruntime", dataclasses.replace(good, prepare=broken))
    pick = pick_fastest(net, SETTING, ["torchscript", "onnxruntime"],
                        timer=_fake_timer({"torchscript": 9.0, "onnxruntime": 1.0}))
    assert pick.engine == "torchscript" and "outputs off eager" in pick.skipped["onnxruntime"]


def test_cli_format_best_follows_the_timer(monkeypatch, tmp_path, capsys, cat_dog):
    from effnet.cli import inference as cli_inference

    monkeypatch.setattr(cli_inference, "TIMER",
                        _fake_timer({"torchscript": 5e-3, "onnxruntime": 1e-3}))
    code = main(["export", str(cat_dog), "--format", "best", "--engines",
                 "torchscript,onnxruntime", "--output", str(tmp_path / "m"), "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0 and (tmp_path / "m.onnx").is_file() and not (tmp_path / "m.pt").exists()
    assert "fastest: onnxruntime" in out and "5.00x the winner's" in out


def test_unknown_engine_is_one_line(tmp_path, capsys, cat_dog):
    code = main(["export", str(cat_dog), "--format", "best", "--engines", "tensorrt",
                 "--output", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "unknown engine 'tensorrt'" in err


# ---------------------------------------------------------------- bench deploy
def test_deploy_checks_then_times_and_its_ratios_follow_its_medians(tmp_path, monkeypatch):
    real = engines_mod.ENGINES["fast"]

    def off(*args):
        runner = real.prepare(*args)
        run = runner.run
        return dataclasses.replace(runner, run=lambda x: run(x) * 1.01 + 1.0)

    monkeypatch.setitem(engines_mod.ENGINES, "fast", dataclasses.replace(real, prepare=off))
    result = deploy_mod.deploy(["lite0"], [1], [1], ["timm-eager", "eager", "fast",
                                                     "onnxruntime"],
                               rounds=2, min_time=0.0, isolate=False, resolution=32,
                               peak_size=64)
    rows = {r.row: r for r in result.rows}
    assert not rows["fast"].passed and rows["fast"].seconds == ()  # checked before timing
    for name in ("timm-eager", "eager", "onnxruntime"):
        r = rows[name]
        assert r.passed and len(r.seconds) == 2
        assert r.x_timm_eager == pytest.approx(statistics.median(rows["timm-eager"].seconds)
                                               / statistics.median(r.seconds))
        assert r.gflops == pytest.approx(2 * result.models["lite0"]["macs_per_image"]
                                         / statistics.median(r.seconds) / 1e9)
        assert r.share_of_peak == pytest.approx(r.gflops / result.peaks_gflops[1])
    summary = result.summary()[0]
    ours = min(("eager", "onnxruntime"), key=lambda n: rows[n].median_s)
    assert summary["best"] == ours and summary["best_default"] == "timm-eager"
    path = tmp_path / "deploy.json"
    from effnet.bench import write_json

    data = json.loads(write_json(result, path).read_text())
    assert data["task"] == "deploy" and data["machine"]["aten_cpu_capability"]
    assert "cpu" in data["machine"] and data["summary"][0]["best"] == ours


def test_deploy_runs_each_row_in_its_own_process(capsys):
    result = deploy_mod.deploy(["lite0"], [1], [1], ["timm-onnxruntime", "onnxruntime"],
                               rounds=1, min_time=0.0, isolate=True, resolution=32,
                               peak_size=64)
    assert all(r.passed and len(r.seconds) == 1 for r in result.rows), result.format()
    assert "effnet's best onnxruntime" in result.format()


def test_deploy_rejects_unknown_rows_and_models():
    with pytest.raises(EffnetError, match="unknown engine row"):
        deploy_mod.deploy(["lite0"], [1], [1], ["nope"], isolate=False)
    with pytest.raises(EffnetError, match="unknown model"):
        deploy_mod.deploy(["b99"], [1], [1], ["eager"], isolate=False)


def test_bench_deploy_cli_bad_threads_is_one_line(capsys):
    assert main(["bench", "inference", "--threads", "1,2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "several are for deploy" in err


def test_export_form_folds_same_padding_into_static_pads(tmp_path):
    """TF SAME padding traced from the input's shape leaves shape arithmetic in the ONNX graph;
    folded for the export size it leaves none, and the outputs stay eager's."""
    import onnx

    net = tiny_model(padding="same")
    path = engines_mod.fp32_onnx(net, SETTING, tmp_path)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Shape" not in ops and "Gather" not in ops and "MatMul" not in ops and "Conv" in ops
    x = check_inputs(SETTING)
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(s.run(None, {s.get_inputs()[0].name: x})[0], eager_logits(net, x),
                               atol=1e-4, rtol=1e-4)
