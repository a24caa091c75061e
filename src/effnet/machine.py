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


def cpu_flags() -> str:
    """The CPU's feature flags from /proc/cpuinfo, space-separated ('' where it cannot be read)."""
    return _cpuinfo("flags")


_AVX2 = {"sse4_1", "avx", "avx2", "fma"}
_AVX512 = _AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq"}
# oneDNN's x86 ISA levels, lowest first, each with every /proc/cpuinfo flag it needs (oneDNN's
# cpu_isa_traits); ONEDNN_MAX_CPU_ISA caps the level it dispatches to.
_ONEDNN_ISAS = (("sse41", {"sse4_1"}), ("avx", {"sse4_1", "avx"}), ("avx2", _AVX2),
                ("avx2_vnni", _AVX2 | {"avx_vnni"}), ("avx512_core", _AVX512),
                ("avx512_core_vnni", _AVX512 | {"avx512_vnni"}),
                ("avx512_core_bf16", _AVX512 | {"avx512_vnni", "avx512_bf16"}),
                ("avx512_core_fp16", _AVX512 | {"avx512_vnni", "avx512_bf16", "avx512_fp16"}),
                ("avx512_core_amx", _AVX512 | {"avx512_vnni", "avx512_bf16", "avx512_fp16",
                                               "amx_tile"}))


@functools.cache
def _onednn_isa(cap: str) -> str:
    flags = set(_cpuinfo("flags").split())
    names = [n for n, _ in _ONEDNN_ISAS]
    levels = [i for i, (_, need) in enumerate(_ONEDNN_ISAS) if need <= flags]
    if cap in names:
        levels = [i for i in levels if i <= names.index(cap)]
    return names[max(levels)] if levels else "none"


def onednn_isa() -> str:
    """The x86 ISA level oneDNN dispatches to here: the CPU's flags, capped by ONEDNN_MAX_CPU_ISA.

    Derived, not asked of oneDNN (PyTorch does not expose it); `ONEDNN_VERBOSE=1`
    names the kernels it really runs. The AVX2 vs AVX-512 line is what decides
    which depthwise kernels it has (see effnet.nn.depthwise).
    """
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    return _onednn_isa(cap.lower())
