"""The depthwise weight-gradient kernel in C, built with this machine's compiler on first use.

`_dwgrad.c` is compiled once (`cc -O3 -march=native -shared -fPIC`) into effnet's cache
folder, under a name that hashes the source, the compiler and the CPU's flags, and loaded
with ctypes (which releases the GIL, so channel blocks run on several threads). Where no C
compiler is found, or it fails, or `EFFNET_NATIVE=0`, :func:`weight_grad_kernel` is None and
the weight gradient stays oneDNN's.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from ..machine import cpu_flags

SOURCE = Path(__file__).with_name("_dwgrad.c")
_ARGS = [ctypes.c_void_p] * 3 + [ctypes.c_long] * 14


def _compiler() -> list[str] | None:
    """The C compiler command: $CC, Python's own CC, or cc / gcc / clang on the PATH."""
    for cmd in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc", "clang"):
        if cmd and shutil.which(shlex.split(cmd)[0]):
            return shlex.split(cmd)
    return None


def _build(cc: list[str], out: Path) -> bool:
    """Compile the kernel to `out` (atomically: a temporary name, then a rename)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
    except OSError:  # a read-only or full cache folder: no kernel, oneDNN's path
        return False
    try:
        done = subprocess.run([*cc, "-O3", "-march=native", "-shared", "-fPIC", "-o", tmp,
                               str(SOURCE)], capture_output=True, timeout=120)
        if done.returncode != 0:
            return False
        os.replace(tmp, out)
        return True
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@functools.cache
def weight_grad_kernel() -> dict[Any, Any] | None:
    """{torch dtype: C function} for float32 and float64, or None where it cannot be built."""
    import torch

    from ..io_utils import cache_dir

    if os.environ.get("EFFNET_NATIVE", "1") == "0":
        return None
    cc = _compiler()
    if cc is None:
        return None
    digest = hashlib.sha256(SOURCE.read_bytes())
    for part in (" ".join(cc), cpu_flags(), sysconfig.get_platform()):
        digest.update(part.encode())
    path = cache_dir() / "native" / f"dwgrad-{digest.hexdigest()[:16]}.so"
    if not path.exists() and not _build(cc, path):
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        return None
    fns = {}
    for dtype, name in ((torch.float32, "dw_weight_grad_f32"), (torch.float64,
                                                                "dw_weight_grad_f64")):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = _ARGS, None
        fns[dtype] = fn
    return fns
