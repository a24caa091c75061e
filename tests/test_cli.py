"""The `effnet` command as a user runs it."""

from __future__ import annotations

import subprocess
import sys

from effnet.cli import main, parse_phis


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "effnet", *args], capture_output=True, text=True)


def test_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("b0", "b7", "l2", "lite4"):
        assert f"\n{name} " in out
    b0 = next(line for line in out.splitlines() if line.startswith("b0 "))
    assert "5.29" in b0 and "0.386" in b0 and "0.39" in b0


def test_scale_prints_coefficients(capsys):
    assert main(["scale", "--phi", "1"]) == 0
    out = capsys.readouterr().out
    assert "1.200" in out and "1.100" in out and "258" in out


def test_profile(capsys):
    assert main(["profile", "efficientnet_b0", "--resolution", "128"]) == 0
    out = capsys.readouterr().out
    assert "5,288,548" in out and "resolution   128" in out


def test_parse_phis():
    assert parse_phis("1..3") == [1.0, 2.0, 3.0]
    assert parse_phis("0,2.5") == [0.0, 2.5]


def test_unknown_name_is_one_line_error():
    r = run("profile", "b9")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "unknown model 'b9'" in r.stderr and "lite4" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_alpha_is_one_line_error():
    r = run("scale", "--phi", "1", "--alpha", "0.5")
    assert r.returncode == 2 and "alpha must be" in r.stderr and "Traceback" not in r.stderr
    r = run("scale", "--phi", "x")
    assert r.returncode == 2 and "bad --phi" in r.stderr


def test_parse_phis_is_one_grammar_for_every_command():
    """scale, autoscale: a number, a list or an integer range; never a non-finite phi."""
    import pytest

    from effnet.errors import EffnetError

    assert parse_phis("2.5") == [2.5]
    for bad in ("x", "1..x", "inf", "1,nan"):
        with pytest.raises(EffnetError, match="bad --phi"):
            parse_phis(bad)


def test_every_base_option_takes_the_same_baseline_names(capsys):
    """lite (spec.BASELINES) and lite0 (the zoo) name one baseline for scale, search and nas."""
    from effnet.cli import build_parser
    from effnet.cli.nas import nas_config
    from effnet.spec import BASELINES, baseline_name

    outs = []
    for base in ("lite", "lite0", "efficientnet-lite0"):
        assert main(["scale", "--phi", "0,1", "--base", base]) == 0
        outs.append(capsys.readouterr().out)
        assert baseline_name(base) == "lite"  # what `effnet search --base` stores
        args = build_parser().parse_args(["nas", "--base", base])
        assert nas_config(args).space.base == BASELINES["lite"]
    assert outs[0] == outs[1] == outs[2]


def test_library_errors_name_parameters_and_the_cli_names_flags(tmp_path, capsys):
    """fit(eval_every=0) speaks Python; `effnet eval --limit 0` gets the same check as a flag."""
    import pickle

    import pytest

    from effnet.errors import ParameterError
    from effnet.inference.evaluate import evaluate

    with pytest.raises(ParameterError, match=r"^limit 0 must be >= 1") as caught:
        evaluate(None, tmp_path, limit=0)  # type: ignore[arg-type]
    err = pickle.loads(pickle.dumps(caught.value))  # as a worker process sends it back
    assert err.with_flags({}) == str(err).replace("limit", "--limit", 1)
    assert ParameterError("n_trials must be >= 1 in /x/n_trials", "n_trials").with_flags(
        {"n_trials": "--trials"}) == "--trials must be >= 1 in /x/n_trials"
    r = run("export", "b0", "--output", str(tmp_path / "m.onnx"), "--opset", "3")
    assert r.returncode == 2 and "--opset 3 is not supported" in r.stderr
