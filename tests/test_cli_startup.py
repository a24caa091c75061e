"""The command line answers at once: help, --version, the model table, scale and argument errors
import no torch (issue 23). Each case runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest

CASES = [["--help"], ["--version"], ["models"], ["models", "--filter", "lite*"],
         ["scale", "--phi", "0..3"], ["study", "--help"], ["train", "--no-such-flag"],
         ["autoscale", "--preset", "nope"], ["bench", "--help"]]


@pytest.mark.parametrize("argv", CASES, ids=" ".join)
def test_the_cli_answers_without_importing_torch(argv):
    code = (f"import sys\nfrom effnet.cli import main\ntry:\n    main({argv!r})\n"
            "except SystemExit:\n    pass\nprint('torch imported:', 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "torch imported: False", done.stderr[-2000:]


def test_the_model_table_gives_the_flop_counters_params_and_macs():
    import torch

    from effnet.model_factory import create_model
    from effnet.profiling import count_macs, count_params
    from effnet.zoo import MODELS

    done = subprocess.run([sys.executable, "-m", "effnet", "models"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[2:] if line}
    assert set(rows) >= set(MODELS)
    for name in ("b0", "b3", "lite0"):  # the oracle: torch's flop counter on the built model
        with torch.device("meta"):
            model = create_model(name)
        params, macs = count_params(model), count_macs(model, MODELS[name].resolution)
        assert f"{params / 1e6:.2f}" in rows[name] and f"{macs / 1e9:.3f}" in rows[name]
