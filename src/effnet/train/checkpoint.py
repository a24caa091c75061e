"""Atomic checkpoints: write to a temporary name in the same folder, then os.replace."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..errors import EffnetError
from ..io_utils import atomic_write, atomic_write_json, atomic_write_text  # noqa: F401 (re-exported)


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
