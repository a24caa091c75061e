"""Atomic checkpoints: write to a temporary name in the same folder, then os.replace."""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import EffnetError


def atomic_write(path: str | Path, write) -> None:
    """Call `write(tmp_path)`, fsync, then rename over `path`: a kill leaves the old file whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    atomic_write(path, write)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def rng_state() -> dict:
    """Every RNG the training loop draws from: python, numpy, torch CPU and CUDA."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict) -> None:
    """torch.save `state` atomically."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by save_checkpoint; a damaged file gets a clear error."""
    path = Path(path)
    if not path.is_file():
        raise EffnetError(f"no checkpoint at {path}: drop --resume to start a new run")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise EffnetError(f"checkpoint {path} cannot be read ({type(err).__name__}): "
                          "delete it to restart, or restore a copy") from None
