"""Issue 22: hostile input, second pass. Each test is named after the issue's item.

Escape tests hash the tree around the folder before and after: nothing outside may change.
A b0 with 2 classes at 32 px (or a one-stage spec) keeps them fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import effnet
from effnet.cli import main
from effnet.errors import EffnetError
from tests.test_hostile_input import _image as image
from tests.test_hostile_input import _one_line as one_line

sys.path.insert(0, str(Path(__file__).parent / "data"))
from train_tiny import make_image_folder  # noqa: E402


def tree_hash(root: Path) -> dict[str, str]:
    """Every entry under `root` (not following links): its kind and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _train_args(tmp_path: Path, run: Path) -> list[str]:
    if not (tmp_path / "d").exists():
        make_image_folder(tmp_path / "d", classes=2, per_class=3)
    return ["train", "--model", "b0", "--dataset", "imagefolder", "--data", str(tmp_path / "d"),
            "--image-size", "32", "--epochs", "1", "--batch-size", "4", "--no-progress",
            "--workers", "0", "--threads", "1", "--output", str(run)]


def _fake_run(run: Path, keep: Path) -> None:
    """A run folder (last.pt, metrics, best/) whose final/ is a link to a user's folder."""
    keep.mkdir()
    (keep / "model.safetensors").write_text("precious")
    (keep / ".model.safetensors.1.abcd1234.tmp").write_text("not ours either")
    (run / "best").mkdir(parents=True)
    for name in ("last.pt", "metrics.csv", "summary.json", "best/model.safetensors"):
        (run / name).write_text("old run")
    (run / "final").symlink_to(keep, target_is_directory=True)


def _linked_run(tmp_path: Path) -> tuple[Path, list[str], dict[str, str]]:
    run = tmp_path / "run"
    _fake_run(run, tmp_path / "keep")
    args = _train_args(tmp_path, run)
    return run, args, tree_hash(tmp_path)


# ---------------------------------------------------------------- 1
def test_1_resume_never_writes_through_a_linked_final(tmp_path, capsys):
    run, args, before = _linked_run(tmp_path)
    assert main([*args, "--resume"]) == 2
    one_line(capsys, rf"{re.escape(str(run / 'final'))} is a symbolic link")
    assert tree_hash(tmp_path) == before


def test_1_a_linked_file_inside_best_is_refused_too(tmp_path, capsys):
    run = tmp_path / "run"
    (tmp_path / "outside.json").write_text("{}")
    (run / "best").mkdir(parents=True)
    (run / "last.pt").write_text("old run")
    (run / "best" / "config.json").symlink_to(tmp_path / "outside.json")
    args = _train_args(tmp_path, run)
    before = tree_hash(tmp_path)
    assert main([*args, "--resume"]) == 2
    one_line(capsys, r"best/config\.json is a symbolic link")
    assert tree_hash(tmp_path) == before


# ---------------------------------------------------------------- 6
def test_6_force_checks_for_links_before_deleting_anything(tmp_path, capsys):
    run, args, before = _linked_run(tmp_path)
    assert main([*args, "--force"]) == 2
    one_line(capsys, r"final is a symbolic link")
    assert tree_hash(tmp_path) == before  # last.pt, metrics.csv, summary.json all kept


def _run_python(code: str, *args: str, limit: int | None = None) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter (with this checkout's effnet), optionally under a file-size
    limit of `limit` bytes (RLIMIT_FSIZE, as `ulimit -f`)."""
    prelude = ("import resource, sys, torch; torch.set_num_threads(1)\n"
               + (f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
                  if limit else ""))
    env = {**os.environ, "PYTHONPATH": str(Path(effnet.__file__).parents[1])}
    return subprocess.run([sys.executable, "-c", prelude + code, *args], capture_output=True,
                          text=True, env=env, timeout=120)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------- 2
def test_2_model_name_cannot_steer_the_onnx_cache_out_of_the_folder(cat_dog, tmp_path, capsys):
    nest = tmp_path / "a" / "b" / "c"
    nest.mkdir(parents=True)
    weights = nest / "catdog"
    cat_dog.rename(weights)
    _edit_config(weights, model_name="../../../../outside/evil")
    img = str(image(tmp_path / "a.png"))
    before = tree_hash(tmp_path)
    assert main(["predict", img, "--weights", str(weights), "--runtime", "onnxruntime"]) == 0
    after = tree_hash(tmp_path)
    added = {k for k in after if k not in before}
    assert all(k.startswith("a/b/c/catdog/") and "/" not in k[len("a/b/c/catdog/"):]
               for k in added), added
    assert any(k.endswith(".onnx") for k in added)
    assert {k: after[k] for k in before} == before


# ---------------------------------------------------------------- 5
def test_5_the_onnx_cache_deletes_only_its_own_exports(cat_dog, tmp_path):
    from effnet.inference.export import onnx_cache_path
    from effnet.inference.predict import prepare_model

    net = effnet.create_model(pretrained=cat_dog)
    mine = cat_dog / onnx_cache_path(net, cat_dog, 32).name.replace(".onnx", "").rsplit(".", 1)[0]
    users = [Path(f"{mine}.v1.onnx"), cat_dog / "model.b0-2c-32px-symmetric.v1.onnx"]
    for f in users:
        f.write_bytes(b"the user's own file")
    first = prepare_model(None, cat_dog, runtime="onnxruntime")
    old = onnx_cache_path(first.module, cat_dog, 32)
    assert old.is_file()
    net.classifier.bias.data += 1  # new weights: a new export replaces the cache's old one
    net.save_pretrained(cat_dog)
    prepare_model(None, cat_dog, runtime="onnxruntime")
    assert not old.exists()
    assert all(f.read_bytes() == b"the user's own file" for f in users)


# ---------------------------------------------------------------- 7
SIGTERM_DURING_EXPORT = """
import os, signal, time, torch
import effnet
from effnet.cli import main
from tests.test_hostile_input import _image as image
def export(model, args, f, **kw):
    open(f, "wb").write(b"x" * 100000)  # half an export
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
torch.onnx.export = export
sys.exit(main(["export", sys.argv[1], "--output", sys.argv[2], "--no-check"]))
"""


def test_7_sigterm_during_export_leaves_no_temporary(cat_dog, tmp_path):
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    done = _run_python(SIGTERM_DURING_EXPORT, str(cat_dog), str(out))
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip() == "effnet: terminated"
    assert list(out.parent.iterdir()) == []


def test_7_temporaries_of_dead_writers_are_removed(cat_dog, tmp_path):
    from effnet.inference.export import onnx_cache_path

    out = tmp_path / "m.pt"
    cache = onnx_cache_path(effnet.create_model(pretrained=cat_dog), cat_dog, 32)
    dead, live = _dead_pid(), os.getpid()
    stale = [tmp_path / f".m.pt.{dead}.0123abcd.pt.tmp",
             cache.parent / f".{cache.name}.{dead}.0123abcd.onnx.tmp"]
    alive = tmp_path / f".m.pt.{live}.0123abcd.pt.tmp"  # a writer still at work
    for f in [*stale, alive]:
        f.write_bytes(b"partial")
    assert main(["export", str(cat_dog), "--output", str(out), "--format", "torchscript"]) == 0
    img = str(image(tmp_path / "a.png"))
    assert main(["predict", img, "--weights", str(cat_dog), "--runtime", "onnxruntime"]) == 0
    assert not any(f.exists() for f in stale) and alive.exists()


# ---------------------------------------------------------------- 3
def test_3_convert_replaces_an_existing_model_only_with_force(cat_dog, tmp_path, capsys):
    torch.manual_seed(1)
    src = effnet.create_model("b0").save_pretrained(tmp_path / "src")
    before = tree_hash(cat_dog)
    args = ["convert", str(src), "--model", "b0", "--output", str(cat_dog)]
    assert main(args) == 2
    one_line(capsys, r"--output \S*catdog exists: add --force")
    assert tree_hash(cat_dog) == before
    assert main([*args, "--force"]) == 0
    assert effnet.create_model(pretrained=cat_dog).num_classes == 1000


# ---------------------------------------------------------------- 4
def test_4_save_pretrained_keeps_the_old_pair_when_the_config_cannot_be_written(
        cat_dog, monkeypatch):
    import effnet.weights.pretrained as pretrained

    before = tree_hash(cat_dog.parent)
    torch.manual_seed(1)
    model = effnet.create_model("b0", num_classes=3)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pretrained, "atomic_write_json", full)
    with pytest.raises(OSError):
        model.save_pretrained(cat_dog)
    assert tree_hash(cat_dog.parent) == before


def test_4_weights_and_config_of_different_saves_are_refused(cat_dog, tmp_path, capsys):
    old_config = (cat_dog / "config.json").read_bytes()
    torch.manual_seed(1)
    effnet.create_model("b0", num_classes=2).save_pretrained(cat_dog)
    (cat_dog / "config.json").write_bytes(old_config)  # as a kill between the two renames leaves
    with pytest.raises(EffnetError, match=r"come from different saves"):
        effnet.create_model(pretrained=cat_dog)
    assert main(["predict", str(image(tmp_path / "a.png")), "--weights", str(cat_dog)]) == 2
    one_line(capsys, r"model\.safetensors and config\.json come from different saves")


# ---------------------------------------------------------------- 8
@pytest.mark.parametrize("command", ["predict", "eval", "export"])
@pytest.mark.parametrize("num_classes, pattern", [
    (3, r"classifier of 2 classes not loaded.*inference needs the trained classifier"),
    (0, r"classifier of 2 classes not loaded|has no classifier"),
])
def test_8_inference_never_runs_a_new_classifier(cat_dog, tmp_path, capsys, command,
                                                  num_classes, pattern):
    _edit_config(cat_dog, num_classes=num_classes)
    make_image_folder(tmp_path / "d", classes=2, per_class=1)
    argv = {"predict": ["predict", str(tmp_path / "d"), "--weights", str(cat_dog)],
            "eval": ["eval", "--data", str(tmp_path / "d"), "--weights", str(cat_dog),
                     "--workers", "0", "--no-progress"],
            "export": ["export", str(cat_dog), "--output", str(tmp_path / "m.onnx"),
                       "--no-check"]}[command]
    assert main(argv) == 2
    one_line(capsys, pattern)
    assert not (tmp_path / "m.onnx").exists()


def test_8_a_classifier_of_another_shape_is_refused_too(cat_dog, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    state = load_file(cat_dog / "model.safetensors")
    state["classifier.weight"] = torch.randn(5, 1280)  # config.json still says 2 classes
    state["classifier.bias"] = torch.zeros(5)
    save_file(state, str(cat_dog / "model.safetensors"))
    assert main(["predict", str(image(tmp_path / "a.png")), "--weights", str(cat_dog)]) == 2
    one_line(capsys, r"classifier of 5 classes not loaded: 2 classes")


def test_8_training_still_adapts_the_head(cat_dog):
    with pytest.warns(effnet.weights.WeightsAdaptedWarning, match="freshly initialised"):
        assert effnet.create_model("b0", pretrained=cat_dog, num_classes=5).num_classes == 5


# ---------------------------------------------------------------- 9
def test_9_integer_weights_are_refused(cat_dog, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    state = load_file(cat_dog / "model.safetensors")
    state["stem.conv.weight"] = (state["stem.conv.weight"] * 100).to(torch.int8)
    save_file(state, str(cat_dog / "model.safetensors"))
    assert main(["predict", str(image(tmp_path / "a.png")), "--weights", str(cat_dog)]) == 2
    one_line(capsys, r"holds torch\.int8 weights .*stem\.conv\.weight.*float weights only")
    state["stem.conv.weight"] = state["stem.conv.weight"].to(torch.bfloat16)  # floats are fine
    save_file(state, str(cat_dog / "model.safetensors"))
    assert main(["predict", str(image(tmp_path / "a.png")), "--weights", str(cat_dog)]) == 0


# ---------------------------------------------------------------- 10
FIFO_PREDICT_EVAL = """
from effnet.cli import main
print("predict", main(["predict", sys.argv[1] + "/class0", "--weights", sys.argv[2]]))
print("eval", main(["eval", "--data", sys.argv[1], "--weights", sys.argv[2], "--workers", "0",
                    "--no-progress", "--class-order", "sorted"]))
"""


def test_10_a_fifo_named_like_an_image_is_skipped_not_waited_for(cat_dog, tmp_path):
    make_image_folder(tmp_path / "d", classes=2, per_class=2)
    os.mkfifo(tmp_path / "d" / "class0" / "pipe.png")
    done = _run_python(FIFO_PREDICT_EVAL, str(tmp_path / "d"), str(cat_dog))  # times out on a hang
    assert "predict 1" in done.stdout and "eval 0" in done.stdout, done.stderr
    assert "class0/0.png" in done.stdout and "class0/1.png" in done.stdout
    assert re.search(r"pipe\.png is not a regular file \(a FIFO.*skipped", done.stderr)


# ---------------------------------------------------------------- 11
def test_11_a_kernel_larger_than_its_map_is_refused(tmp_path, capsys):
    from effnet.spec import EFFICIENTNET_B0, save_spec

    stages = list(EFFICIENTNET_B0.stages)
    stages[3] = stages[3].__class__(**{**stages[3].__dict__, "kernel": 1001})
    save_spec(EFFICIENTNET_B0.with_(name="wide", stages=tuple(stages)), tmp_path / "spec.json")
    assert main(["profile", str(tmp_path / "spec.json"), "--resolution", "64",
                 "--num-classes", "10"]) == 2
    one_line(capsys, r"stage 4: kernel 1001 meets a \d+x\d+ map, larger than the map")
    assert main(["profile", "b0", "--resolution", "32"]) == 0  # 5x5 kernels on 1x1 maps: fine


def test_11_macs_are_estimated_and_bounded(monkeypatch):
    from effnet.limits import check_model_size, estimate_size
    from effnet.profiling import count_macs
    from effnet.zoo import MODELS

    model = effnet.create_model("b0")
    est = estimate_size(model.spec, 224)
    assert est.macs == count_macs(model, 224)  # FlopCounterMode on the built graph
    assert abs(est.macs / 1e9 - 0.3858) < 5e-4  # timm's B0: 0.3858 GMAC (paper: 0.39B FLOPs)
    monkeypatch.setenv("EFFNET_MAX_MACS", "1e8")
    with pytest.raises(EffnetError, match=r"MACs per image at 224 px, over the limit 1e\+08"):
        check_model_size(MODELS["b0"].spec, 224)


# ---------------------------------------------------------------- 12
@pytest.mark.parametrize("command", ["train", "eval"])
def test_12_workers_are_bounded_by_the_cpus(cat_dog, tmp_path, capsys, command):
    make_image_folder(tmp_path / "d", classes=2, per_class=1)
    argv = (_train_args(tmp_path, tmp_path / "run") if command == "train" else
            ["eval", "--data", str(tmp_path / "d"), "--weights", str(cat_dog), "--workers", "0"])
    argv[argv.index("--workers") + 1] = "100000"
    assert main(argv) == 2
    one_line(capsys, rf"--workers 100000 is out of range: use 0\.\.{len(os.sched_getaffinity(0))}")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- 13
@pytest.mark.parametrize("command", ["predict", "export", "train"])
def test_13_image_size_override_goes_through_the_size_limits(cat_dog, tmp_path, capsys,
                                                              command):
    img = str(image(tmp_path / "a.png"))
    argv = {"predict": ["predict", img, "--weights", str(cat_dog)],
            "export": ["export", str(cat_dog), "--output", str(tmp_path / "m.onnx")],
            "train": _train_args(tmp_path, tmp_path / "run")}[command]
    if "--image-size" in argv:
        argv[argv.index("--image-size") + 1] = "100000"
    else:
        argv += ["--image-size", "100000"]
    assert main(argv) == 2
    one_line(capsys, r"GiB of activations per image at 100000 px, over the limit")


@pytest.mark.parametrize("field", ["num_classes", "in_chans"])
def test_13_restore_checks_the_configs_classes_and_channels(cat_dog, capsys, field):
    _edit_config(cat_dog, **{field: 10**9})
    with pytest.raises(EffnetError, match=rf"over the limit|{field}"):
        effnet.create_model(pretrained=cat_dog)
    _edit_config(cat_dog, **{field: 1e9})  # a JSON float
    with pytest.raises(EffnetError, match=rf"{field} in config\.json must be an integer"):
        effnet.create_model(pretrained=cat_dog)


# ---------------------------------------------------------------- 17
@pytest.mark.parametrize("call, pattern", [
    (lambda: effnet.create_model("b0", num_classes=2.5), r"num_classes must be an integer"),
    (lambda: effnet.create_model("b0", num_classes="10"), r"num_classes must be an integer"),
    (lambda: effnet.create_model("b0", num_classes=-1), r"num_classes must be an integer >= 0"),
    (lambda: effnet.create_model("b0", in_chans=0), r"in_chans must be an integer >= 1"),
    (lambda: effnet.create_model("b0", num_classes=2).reset_classifier(-1),
     r"num_classes must be an integer >= 0, got -1"),
])
def test_17_api_arguments_are_checked_by_name(call, pattern):
    with pytest.raises(EffnetError, match=pattern):
        call()


# ---------------------------------------------------------------- 18
def test_18_a_missing_extra_says_which_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` fails as if not installed
    assert main(["search", "--storage", str(tmp_path / "s.db"), "--dataset", "imagefolder",
                 "--data", str(tmp_path)]) == 2
    one_line(capsys, r"effnet search needs optuna, which is not installed: "
                     r"pip install 'effnet\[study\]'")


def test_18_a_safetensors_header_claiming_2_62_bytes_is_not_valid(cat_dog, tmp_path, capsys):
    import struct

    bad = tmp_path / "big.safetensors"
    bad.write_bytes(struct.pack("<Q", 2**62) + b'{"a": 1}')
    img = str(image(tmp_path / "a.png"))
    for argv in (["predict", img, "--model", "b0", "--weights", str(bad)],
                 ["convert", str(bad), "--model", "b0", "--output", str(tmp_path / "o")]):
        assert main(argv) == 2
        one_line(capsys, r"big\.safetensors is not a valid safetensors file")


# ---------------------------------------------------------------- 15
@pytest.mark.parametrize("stage, network, pattern", [
    ({"expand_ratio": 0}, {}, r"expand_ratio must be a number in \(0, inf\], got 0"),
    ({"expand_ratio": "6"}, {}, r"expand_ratio must be a number .*got '6' \(str\)"),
    ({"expand_ratio": float("inf")}, {}, r"expand_ratio must be a number"),
    ({"expand_ratio": -6}, {}, r"expand_ratio must be a number"),
    ({"kernel": 3.5}, {}, r"kernel must be an integer >= 1, got 3\.5"),
    ({"repeats": 1.5}, {}, r"repeats must be an integer >= 1, got 1\.5"),
    ({"stride": True}, {}, r"stride must be an integer >= 1, got True"),
    ({}, {"stem_channels": 0}, r"stem_channels must be an integer >= 1, got 0"),
    ({}, {"stem_channels": -3}, r"stem_channels must be an integer >= 1, got -3"),
    ({}, {"stem_kernel": 0}, r"stem_kernel must be an integer >= 1, got 0"),
    ({}, {"stem_stride": 0}, r"stem_stride must be an integer >= 1, got 0"),
    ({}, {"head_channels": -1}, r"head_channels must be an integer >= 0, got -1"),
])
def test_15_spec_fields_are_validated(tmp_path, capsys, stage, network, pattern):
    from effnet.spec import EFFICIENTNET_B0, spec_to_dict

    data = spec_to_dict(EFFICIENTNET_B0)
    data["stages"][0].update(stage)
    data.update(network)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"format": "effnet-spec", "spec": data}))
    assert main(["profile", str(path), "--resolution", "64", "--num-classes", "10"]) == 2
    one_line(capsys, r"not a valid network spec \(" + pattern)
    assert main(["scale", "--phi", "1", "--base", str(path)]) == 2
    one_line(capsys, pattern)
    with pytest.raises(EffnetError, match=pattern):
        effnet.create_model(spec=data)


def test_15_deeply_nested_json_is_a_one_line_error(cat_dog, tmp_path, capsys):
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "spec.json").write_text(deep)
    assert main(["profile", str(tmp_path / "spec.json")]) == 2
    one_line(capsys, r"spec\.json is not JSON that effnet reads")
    (cat_dog / "config.json").write_text('{"format": "effnet", "spec": ' + deep + "}")
    assert main(["predict", str(image(tmp_path / "a.png")), "--weights", str(cat_dog)]) == 2
    one_line(capsys, r"cannot read \S*config\.json")


# ---------------------------------------------------------------- 16
@pytest.mark.parametrize("pretrained_cfg, pattern", [
    ("MEAN2", r"pretrained_cfg\.mean in config\.json must be a list of 1 or 3 numbers"),
    ("MEANABC", r"pretrained_cfg\.mean in config\.json must be a list"),
    ([], r"pretrained_cfg in config\.json must be an object, got list"),
    (None, r"pretrained_cfg in config\.json must be an object, got NoneType"),
])
def test_16_pretrained_cfg_is_validated(cat_dog, tmp_path, capsys, pretrained_cfg, pattern):
    config = json.loads((cat_dog / "config.json").read_text())
    if pretrained_cfg in ("MEAN2", "MEANABC"):
        config["pretrained_cfg"]["mean"] = [0.5, 0.5] if pretrained_cfg == "MEAN2" else "abc"
    else:
        config["pretrained_cfg"] = pretrained_cfg
    (cat_dog / "config.json").write_text(json.dumps(config))
    assert main(["predict", str(image(tmp_path / "a.png")), "--weights", str(cat_dog)]) == 2
    one_line(capsys, pattern)


# ---------------------------------------------------------------- 14
DISK_FULL = """
import contextlib, io, json, torch
import effnet
from effnet.cli import main
from effnet.train.checkpoint import save_checkpoint
folder, out = sys.argv[1], {}
for what, write in [
        ("checkpoint", lambda: save_checkpoint(folder + "/last.pt", {"w": torch.ones(10**6)})),
        ("save_pretrained", lambda: effnet.create_model("b0", num_classes=2).save_pretrained(
            folder + "/model"))]:
    try:
        write()
        out[what] = "written"
    except OSError as err:
        out[what] = str(err)
for fmt in ("torchscript", "onnx"):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["export", folder + "/model", "--output", folder + "/m." + fmt, "--format", fmt,
                   "--force", "--no-check"])
    out[fmt] = [rc, err.getvalue()]
print(json.dumps(out))
"""


def test_14_a_full_disk_is_one_line_and_changes_nothing(cat_dog, tmp_path):
    from effnet.train.checkpoint import save_checkpoint

    folder = tmp_path / "f"
    folder.mkdir()
    save_checkpoint(folder / "last.pt", {"w": torch.zeros(3)})
    cat_dog.rename(folder / "model")
    for fmt in ("torchscript", "onnx"):
        (folder / f"m.{fmt}").write_text("old export")
    before = tree_hash(folder)
    done = _run_python(DISK_FULL, str(folder), limit=200_000)  # as `ulimit -f 195`
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for what in ("checkpoint", "save_pretrained"):
        assert re.fullmatch(r"no space left on the device of .* \(nothing was changed\).*",
                            out[what]), out
    for fmt in ("torchscript", "onnx"):
        rc, err = out[fmt]
        assert rc == 2 and err.startswith("effnet: error:") and len(err.splitlines()) == 1, out
        assert re.search(r"no space left|File too large", err), err
    assert tree_hash(folder) == before  # old files intact, no temporary left
