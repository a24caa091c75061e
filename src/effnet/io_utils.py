"""Small helpers every layer uses: atomic writes of files and figures, an error's first line.

No torch here. Everything that writes a file that matters goes through
:func:`atomic_write`: a temporary name in the same folder, fsync, rename, so
a killed process leaves either the old file or the new one, never half a file.
The temporary's name holds the writer's PID: the next write of the same file
removes the temporaries of writers that are dead (killed with SIGKILL).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# A full disk, a file-size limit (ulimit -f) or a full quota.
DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(OSError):
    """A write that did not fit; the old file is left as it was."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success fsync and rename it to `path`.

    On an exception the temporary file is deleted and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}.tmp"
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # some writers (safetensors) make 0600: the usual mode
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in DISK_FULL:
            raise DiskFullError(f"no space left on the device of {path.parent} for {path.name} "
                                f"(nothing was changed): free some space and run again "
                                f"({first_line(err)})") from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except (OverflowError, ValueError):  # no such PID can exist
        return False
    return True


def remove_dead_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries ``.NAME.PID.*.tmp`` that dead writers of `path` left behind."""
    path = Path(path)
    removed = []
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]{{8}}[^/]*\.tmp")
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        found = pattern.fullmatch(tmp.name)
        if found and not pid_alive(int(found.group(1))) and not tmp.is_symlink() \
                and tmp.is_file():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes, suffix: str = "") -> None:
    """Write `data` to `path` atomically. Writers that fail badly on a full disk (torch.save,
    safetensors, TorchScript) serialise to bytes first, and this write fails cleanly."""
    with atomic_path(path, suffix) as tmp:
        tmp.write_bytes(data)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Call `write(tmp_path)`, fsync, then rename over `path`: a kill leaves the old file whole."""
    with atomic_path(path) as tmp:
        write(str(tmp))


def cache_dir() -> Path:
    """Where effnet keeps derived files ($EFFNET_CACHE_DIR, else $XDG_CACHE_HOME/effnet)."""
    root = os.environ.get("EFFNET_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "effnet"


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write `obj` as JSON (and a final newline) to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an error's message (its type name when the message is empty)."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, **savefig: Any) -> None:
    """Write `fig` to `path` as a 110-dpi PNG atomically (:func:`atomic_path`),
    then close it."""
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=110, **savefig)
    finally:
        pyplot().close(fig)
