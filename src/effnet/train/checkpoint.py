"""Atomic checkpoints: write to a temporary name in the same folder, then os.replace.

A checkpoint (`last.pt`) holds tensors and plain Python data only (dicts,
lists, tuples, numbers, strings): it is read with ``torch.load(...,
weights_only=True)``, which refuses any other pickled object, so a run folder
from someone else cannot run code when resumed.
"""

from __future__ import annotations

import io
import pickle
import random
from pathlib import Path

import numpy as np
import torch

from ..errors import EffnetError, ParameterError
from ..io_utils import (  # noqa: F401 (re-exported)
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)


def rng_state() -> dict:
    """Every RNG the training loop draws from: python, numpy, torch CPU and CUDA.

    Only tensors and plain data (numpy's key array as a tensor), so the
    checkpoint loads with weights_only=True.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                       int(has_gauss), float(gauss)),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos,
                         has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict) -> None:
    """torch.save `state` atomically (serialised in memory first: a full disk is a clean error)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getbuffer())


CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "batch", "step")


def load_checkpoint(path: str | Path, required: tuple[str, ...] = CHECKPOINT_KEYS) -> dict:
    """Load a checkpoint written by save_checkpoint; never unpickles anything but plain data.

    A damaged, incomplete or foreign file (one holding other pickled objects,
    which could run code) gets a one-line EffnetError.
    """
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"no checkpoint at {path}: drop resume to start a new run", "resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise EffnetError(f"checkpoint {path} holds objects other than tensors and plain data "
                          "(refused: loading them could run code); it was not written by "
                          "effnet train: delete it to restart") from None
    except Exception as err:
        raise EffnetError(f"checkpoint {path} cannot be read ({type(err).__name__}): "
                          "delete it to restart, or restore a copy") from None
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise EffnetError(f"checkpoint {path} is incomplete (no {', '.join(map(repr, missing))}):"
                          " it was not written by effnet train; delete it to restart")
    return state
