"""The machine a timing or a kernel choice belongs to: CPU model and the ISA oneDNN dispatches to.

No torch here: both come from /proc/cpuinfo and the environment.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from pathlib import Path


@functools.cache
def _cpuinfo(field: str) -> str:
    with contextlib.suppress(OSError):
        m = re.search(rf"^{field}\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        return m.group(1).strip() if m else ""
    return ""


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ('' where it cannot be read)."""
    return _cpuinfo("model name")


# oneDNN's x86 ISA levels, lowest first, with the /proc/cpuinfo flags each needs on top of
# the one before (oneDNN's cpu_isa_traits); ONEDNN_MAX_CPU_ISA caps the level it dispatches to.
_ONEDNN_ISAS = (("sse41", {"sse4_1"}), ("avx", {"avx"}), ("avx2", {"avx2", "fma"}),
                ("avx2_vnni", {"avx_vnni"}),
                ("avx512_core", {"avx512f", "avx512bw", "avx512vl", "avx512dq"}),
                ("avx512_core_vnni", {"avx512_vnni"}), ("avx512_core_bf16", {"avx512_bf16"}),
                ("avx512_core_fp16", {"avx512_fp16"}), ("avx512_core_amx", {"amx_tile"}))


@functools.cache
def _onednn_isa(cap: str) -> str:
    flags = set(_cpuinfo("flags").split())
    names = [n for n, _ in _ONEDNN_ISAS]
    level = -1
    for i, (_, need) in enumerate(_ONEDNN_ISAS):
        if not need <= flags:
            break
        level = i
    if cap in names:
        level = min(level, names.index(cap))
    return names[level] if level >= 0 else "none"


def onednn_isa() -> str:
    """The x86 ISA level oneDNN dispatches to here: the CPU's flags, capped by ONEDNN_MAX_CPU_ISA.

    Derived, not asked of oneDNN (PyTorch does not expose it); `ONEDNN_VERBOSE=1`
    names the kernels it really runs. The AVX2 vs AVX-512 line is what decides
    which depthwise kernels it has (see effnet.nn.depthwise).
    """
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    return _onednn_isa(cap.lower())
