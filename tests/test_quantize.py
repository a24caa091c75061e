"""INT8 export: static quantization calibrated on an image folder, the Swish refusal, and bad
input as one-line errors (issue 21). Tiny models at 32 px, PNGs written to tmp_path."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from PIL import Image

from effnet.cli import main
from effnet.errors import ParameterError
from effnet.inference.engines import eager_logits
from effnet.inference.quantize import (
    calibration_batch,
    check_int8_allowed,
    export_int8,
    prepare_weights,
    uses_swish,
    weight_levels,
)
from tests.conftest import tiny_model

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


@pytest.fixture
def images(tmp_path):
    """12 RGB PNGs of 32x32 (the models' size: the eval transform only converts them), in two
    sub-folders, plus a file that is not an image; returns (folder, the uint8 pixels)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "calib"
    pixels = []
    for i in range(12):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        ramp = np.linspace(0, 255, 32)[None, :, None] * rng.uniform(0.2, 1.0, (1, 1, 3))
        img = np.clip(ramp + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(sub / f"{i:02d}.png")
        pixels.append(img)
    (folder / "notes.txt").write_text("not an image")
    return folder, np.stack(pixels)


@pytest.fixture
def swish_folder(tmp_path):
    """A save_pretrained folder of the tiny Swish model (32 px, whole-image eval)."""
    return tiny_model(activation="silu", se_ratio=0.25).save_pretrained(tmp_path / "swish")


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_int8_export_is_qdq_per_channel_and_calibrated_on_the_folder(images, tmp_path):
    folder, pixels = images
    net = tiny_model()
    path = export_int8(net, tmp_path / "q.onnx", folder)
    graph = onnx.load(str(path))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("QuantizeLinear") > 5 and ops.count("DequantizeLinear") > 5
    inits = _initializers(graph)
    # per-channel weights: the stem conv's DequantizeLinear has one scale per output channel
    weight_scales = [inits[n.input[1]] for n in graph.graph.node if n.op_type == "DequantizeLinear"
                     and inits.get(n.input[0]) is not None and inits[n.input[0]].dtype == np.int8]
    assert weight_scales and any(s.shape == (16,) for s in weight_scales)
    # the input's range comes from the folder's images, normalised by the model's cfg (MinMax,
    # uint8 with zero in range: scale = (max - min) / 255)
    normalised = (pixels / 255.0 - MEAN) / STD
    lo, hi = min(normalised.min(), 0.0), max(normalised.max(), 0.0)
    q_in = next(n for n in graph.graph.node if n.op_type == "QuantizeLinear"
                and n.input[0] == graph.graph.input[0].name)
    assert float(inits[q_in.input[1]]) == pytest.approx((hi - lo) / 255, rel=1e-4)
    # and the INT8 file stays close to the FP32 model on those images
    data = calibration_batch(net, folder)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: data})[0]
    ref = eager_logits(net, data)
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.25


def test_weights_land_on_the_quantizer_grid_keep_their_sums_and_mean_outputs(images, tmp_path):
    """prepare_weights: each channel's weights are integers times max|w| / levels (ONNX
    Runtime's symmetric grid), each channel's integer sum is its real sum rounded, and bias
    correction gives the first (1x1) conv the FP32 conv's mean output on the calibration images
    (linearity: E[W'x + b'] = W'E[x] + b - (W' - W)E[x] = E[Wx + b]). Then quantizing the
    exported file leaves those weights exactly where they are."""
    conv = torch.nn.Conv2d(3, 8, 1, bias=True)
    dw = torch.nn.Conv2d(8, 8, 3, groups=8, bias=True)
    net = torch.nn.Sequential(conv, torch.nn.ReLU(), dw).eval()
    with torch.no_grad():
        dw.weight.mul_(torch.linspace(0.01, 5.0, 8)[:, None, None, None])
    original = {k: v.clone() for k, v in net.state_dict().items()}
    data = np.random.default_rng(1).uniform(-1, 3, (16, 3, 12, 12)).astype(np.float32)
    levels = weight_levels(reduce_range=True)
    assert levels == 64 and weight_levels(reduce_range=False) == 127
    prepare_weights(net, data, reduce_range=True)
    for name in ("0.weight", "2.weight"):
        w, w0 = net.state_dict()[name].double(), original[name].double()
        scale = w0.flatten(1).abs().amax(1) / levels
        units = w.flatten(1) / scale[:, None]
        assert torch.allclose(units, units.round(), atol=1e-4)
        assert units.abs().max() <= levels + 1e-4
        assert torch.equal(units.round().sum(1), (w0.flatten(1) / scale[:, None]).sum(1).round())
        assert (units - w0.flatten(1) / scale[:, None]).abs().max() < 1.0
    x = torch.from_numpy(data)
    with torch.no_grad():
        ref = torch.nn.functional.conv2d(x, original["0.weight"], original["0.bias"])
        assert torch.allclose(conv(x).mean((0, 2, 3)), ref.mean((0, 2, 3)), atol=1e-5)
    # the exported, quantized file dequantizes to the prepared weights
    from effnet.inference.optimize import quiet_tracing
    from effnet.inference.quantize import quantize_onnx

    fp32 = tmp_path / "fp32.onnx"
    with quiet_tracing():
        torch.onnx.export(net, (x[:1],), str(fp32), dynamo=False, input_names=["input"],
                          dynamic_axes={"input": {0: "batch"}}, opset_version=17)
    inits = _initializers(onnx.load(str(quantize_onnx(fp32, tmp_path / "q.onnx", data,
                                                      reduce_range=True))))
    q = inits["0.weight_quantized"].astype(np.float64)
    s = inits["0.weight_scale"].astype(np.float64)
    assert np.allclose(q * s[:, None, None, None], net.state_dict()["0.weight"].numpy(),
                       atol=1e-6)


@pytest.mark.parametrize("count", [32, 12])
def test_calibration_in_whole_flushes_of_batches(count, tmp_path):
    """32 images are 4 batches of 8, as many as ONNX Runtime's calibrator holds before it folds
    them into its ranges: the quantization must still find its data (it once failed with
    "No data is collected" on the default 256 images)."""
    net = tiny_model()
    data = np.random.default_rng(0).standard_normal((count, 3, 32, 32)).astype(np.float32)
    path = export_int8(net, tmp_path / "q.onnx", data, 32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: data})[0]
    assert out.shape == (count, net.num_classes)


def test_calibration_reads_images_only_and_spreads_the_limit(images):
    folder, pixels = images
    net = tiny_model()
    data = calibration_batch(net, folder, limit=4)
    assert data.shape == (4, 3, 32, 32)
    everything = calibration_batch(net, folder)
    assert everything.shape == (12, 3, 32, 32)
    expected = ((pixels / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)
    got = np.sort(everything.reshape(12, -1), axis=0)
    np.testing.assert_allclose(got, np.sort(expected.reshape(12, -1), axis=0), atol=1e-5)


def test_swish_models_are_refused_unless_asked(images, tmp_path):
    folder, _ = images
    swish = tiny_model(activation="silu", se_ratio=0.25)
    assert uses_swish(swish) and not uses_swish(tiny_model())
    with pytest.raises(ParameterError, match="Swish") as err:
        check_int8_allowed(swish)
    assert "allow_swish" in str(err.value) and "lite0" in str(err.value)
    check_int8_allowed(swish, allow_swish=True)
    assert export_int8(swish, tmp_path / "s.onnx", folder, allow_swish=True).is_file()


def test_cli_int8_export_and_its_check(images, tmp_path, capsys, swish_folder):
    folder, _ = images
    out = tmp_path / "q.onnx"
    code = main(["export", str(swish_folder), "--int8", "--calibration", str(folder), "--output",
                 str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--allow-swish-int8" in err
    assert not out.exists()
    code = main(["export", str(swish_folder), "--int8", "--calibration", str(folder),
                 "--allow-swish-int8", "--output", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "12 images" in stdout and "INT8 vs FP32 PyTorch" in stdout


@pytest.mark.parametrize("argv,message", [
    (["--int8", "--calibration", "EMPTY", "--allow-swish-int8"], "no image files under"),
    (["--int8", "--calibration", "MISSING", "--allow-swish-int8"], "not found"),
    (["--int8", "--allow-swish-int8"], "--int8 needs --calibration"),
    (["--calibration", "EMPTY"], "--calibration is for INT8"),
    (["--int8", "--calibration", "EMPTY", "--format", "torchscript"], "--int8 writes ONNX"),
    (["--int8", "--calibration", "EMPTY", "--allow-swish-int8", "--calibration-images", "0"],
     "--calibration-images 0 must be >= 1"),
])
def test_bad_int8_input_is_one_line(argv, message, tmp_path, capsys, swish_folder):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("no images here")
    argv = [str(tmp_path / "empty") if a == "EMPTY" else str(tmp_path / "nope") if a == "MISSING"
            else a for a in argv]
    code = main(["export", str(swish_folder), *argv, "--output", str(tmp_path / "q.onnx")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "q.onnx").exists()
