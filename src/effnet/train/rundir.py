"""The run folder's guards: one writer at a time, no silent overwrite, no stale temporaries.

* :class:`RunLock` holds ``OUTPUT/.lock`` (the owner's PID and host) while a
  run writes; a second writer stops with a clear error, and a lock whose owner
  is dead (killed) is taken over.
* :func:`check_no_links` refuses a run folder holding a symbolic link where the
  run writes or deletes (``best/``, ``final/``, their files, ``last.pt``, ...):
  effnet never writes or deletes through a link, into another folder.
* :func:`check_new_run` refuses to start a new run over an existing one
  unless ``force`` (then the old run's files are removed first, so the folder
  never mixes two runs).
* :func:`remove_stale_temporaries` deletes the ``.NAME.*.tmp`` files that a
  killed atomic write leaves behind (only ever called while holding the lock).
* :func:`check_resume_settings` compares a resumed run's settings with the
  checkpoint's before anything is written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from pathlib import Path

from ..errors import EffnetError, ParameterError
from ..io_utils import pid_alive
from .recipes import Recipe

LOCK_NAME = ".lock"
RUN_FILES = ("last.pt", "metrics.csv", "summary.json", "best", "final", "tensorboard",
             "best.safetensors", "final.safetensors")  # the last two: runs written before best/


class RunLock:
    """An exclusive lock on a run folder: ``.lock`` holds 'PID HOST' of the writer."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.held = self.created = False

    def acquire(self) -> RunLock:
        """Take the lock, or raise EffnetError naming the live owner; dead owners' locks go."""
        self.created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:  # owner is dead, or the file was half written: take it over
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                raise ParameterError(
                    f"{self.path.parent} is in use by another effnet train ({owner}): wait for it "
                    f"to finish, or use another output (delete {self.path} only if that "
                    "process is gone)", "output") from None
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return self
        raise EffnetError(f"cannot take the lock {self.path}: another process keeps replacing it")

    def _owner(self) -> str | None:
        """'process PID on HOST' if the lock's owner may be alive, else None."""
        try:
            pid_text, _, host = self.path.read_text().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if host and host != socket.gethostname():
            return f"process {pid} on {host}"
        if pid == os.getpid() or not pid_alive(pid):
            return None
        return f"process {pid}"

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False
            if self.created:  # a run that failed before writing anything leaves no folder
                with contextlib.suppress(OSError):
                    self.path.parent.rmdir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def check_no_links(folder: str | os.PathLike) -> None:
    """Refuse a run folder where a file or folder the run writes or deletes is a symbolic link.

    Checked before anything is written or deleted: a link would send the run's writes (or a
    --force deletion) into the folder it points to.
    """
    folder = Path(folder)
    places = [folder / n for n in (*RUN_FILES, "config.json")]
    for sub in ("best", "final"):
        if (folder / sub).is_dir() and not (folder / sub).is_symlink():
            places += sorted((folder / sub).iterdir())
    for path in places:
        if path.is_symlink():
            raise ParameterError(f"{path} is a symbolic link: effnet never writes or deletes "
                                 "through links in a run folder; replace it with a plain file or "
                                 "folder, or use another output", "output")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete atomic-write leftovers (``.NAME.*.tmp``) in `folder` and its best/ and final/."""
    removed = []
    for sub in (Path(folder), Path(folder) / "best", Path(folder) / "final"):
        if not sub.is_dir():
            continue
        for p in sub.glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def check_new_run(folder: str | os.PathLike, force: bool, resume: bool = False) -> None:
    """A new run may not replace an existing one's files unless `force` (which deletes them).

    A lone config.json (a run killed before its first checkpoint) holds no work and is
    replaced. With `resume` there is no last.pt to continue from.
    """
    folder = Path(folder)
    existing = [n for n in RUN_FILES if (folder / n).exists()]
    if not existing:
        return
    if not force:
        fix = ("it has no last.pt to continue: use force to start over (deletes it)"
               if resume else "use resume to continue it, force to start over (deletes it)")
        raise ParameterError(f"{folder} already holds a training run ({', '.join(existing[:3])}): "
                             f"{fix}, or use another output", "force", "resume", "output")
    for name in [*existing, "config.json"]:
        if not (folder / name).exists():
            continue
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def run_recipe(folder: str | os.PathLike) -> Recipe | None:
    """The Recipe recorded in a run folder's config.json, or None."""
    import json

    try:
        saved = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return Recipe.from_dict(saved.get("recipe") if isinstance(saved, dict) else None)


def check_resume_settings(saved: dict, now: dict, where: str) -> None:
    """Refuse a resume whose settings differ from the checkpoint's (recipe fields, batch size).

    `saved` and `now` map setting names to values; the learning rate is not
    among them (a changed --lr is honoured from the next step).
    """
    for key, value in now.items():
        if key in saved and saved[key] != value and not _same_number(saved[key], value):
            raise ParameterError(f"{key} is {value!r} but the run in {where} was trained with "
                                 f"{saved[key]!r}: resume with the same {key} (or drop it), or "
                                 "start a new run (force or another output)", key, "force",
                                 "output")


def _same_number(a: object, b: object) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return False
