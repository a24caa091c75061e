"""The run folder's writer: every file a training run leaves, and nothing else writes there.

A run folder (``fit(output=...)``) holds:

* ``config.json``: the resolved settings; ``metrics.csv``: one row per epoch;
* ``last.pt``: the checkpoint a resume continues from (:mod:`.checkpoint`);
* ``best/`` and ``final/``: the best (by validation top-1) and the last
  weights, each a :func:`effnet.weights.save_pretrained` folder
  (``create_model(pretrained="RUN/best")``). For a model that is not an
  effnet model the folder holds only ``model.safetensors``;
* ``summary.json``; ``tensorboard/`` when asked.

Every write is atomic, and the folder is held by a :class:`.rundir.RunLock`
for the whole run. On torchrun only rank 0 writes; the others get a writer
with no folder, which writes nothing.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ParameterError
from .checkpoint import atomic_write_bytes, atomic_write_json, atomic_write_text, load_checkpoint
from .checkpoint import save_checkpoint as _save_checkpoint
from .rundir import RunLock, check_new_run, check_no_links, remove_stale_temporaries

CSV_FIELDS = ["epoch", "step", "lr", "train_loss", "train_top1", "val_loss", "val_top1",
              "val_top5", "val_top1_raw", "test_top1", "test_top5", "epoch_s", "img_per_s"]
CHECKPOINT_NAME = "last.pt"


def csv_text(rows: list[dict]) -> str:
    """metrics.csv's text for `rows` (floats to 6 significant digits)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def save_weights(model: nn.Module, path: str | Path, meta: dict | None = None) -> None:
    """Atomically write `model`'s state dict as safetensors, with `meta` as its metadata."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in (meta or {}).items()}
    atomic_write_bytes(path, save(state, metadata=metadata))


def save_run_weights(model: nn.Module, folder: Path, model_name: str | None = None) -> None:
    """`model` as a save_pretrained folder (effnet models: the one on-disk form), else
    ``folder/model.safetensors`` with what :func:`weights_meta` knows of the model."""
    from ..weights import save_pretrained
    from ..weights.pretrained import WEIGHTS_NAME

    if hasattr(model, "spec") and hasattr(model, "stem"):
        save_pretrained(model, folder)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(model, folder / WEIGHTS_NAME, weights_meta(model, model_name))


def weights_meta(model: nn.Module, model_name: str | None) -> dict:
    """What a run's weights record about the model (name, padding, BN eps, preprocessing)."""
    meta: dict[str, Any] = {"format": "pt"}
    for key in ("padding", "bn_eps"):  # read back by effnet.load_weights
        if hasattr(model, key):
            value = getattr(model, key)
            meta[key] = repr(float(value)) if key == "bn_eps" else str(value)
    name = model_name or getattr(model, "model_name", None)
    if name:
        meta["model_name"] = name
    pcfg = getattr(model, "pretrained_cfg", None)
    if pcfg:
        meta["pretrained_cfg"] = json.loads(json.dumps(pcfg, default=list))
    if hasattr(model, "num_classes"):
        meta["num_classes"] = int(model.num_classes)
    return meta


def summary(model: nn.Module, *, model_name: str | None, image_size: int | None, recipe: str,
            batch_size: int, history: list[dict], best_epoch: int | None, steps: int,
            wall: float) -> dict:
    """summary.json: the model, its cost, the budget, and the best and final epoch's metrics."""
    from ..profiling import count_macs, count_params

    macs = None
    if image_size:
        with contextlib.suppress(Exception):  # models without a conv input (tests) have no MACs
            macs = count_macs(model, image_size)
    final = history[-1] if history else {}
    best_row = next((r for r in history if r["epoch"] == best_epoch), final)

    def metrics(row: dict) -> dict:
        return {k: row.get(k) for k in ("val_top1", "val_top5", "test_top1", "test_top5")}

    return {
        "model": model_name or getattr(model, "model_name", type(model).__name__),
        "params": count_params(model), "macs": macs, "image_size": image_size,
        "recipe": recipe, "epochs": len(history), "steps": steps,
        "batch_size": batch_size, "wall_s": round(wall, 1),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "best": {"epoch": best_epoch, **metrics(best_row)},
        "final": {"epoch": final.get("epoch"), **metrics(final)},
    }


class RunWriter:
    """Owns a run folder for one `fit`: its lock, its checkpoint and every artefact.

    `output` None writes nothing; `is_main` False (torchrun ranks > 0) writes
    nothing but still knows where the checkpoint is.
    """

    def __init__(self, output: str | Path | None, is_main: bool = True,
                 model_name: str | None = None) -> None:
        self.model_name = model_name  # recorded with the weights of models that are not effnet's
        self.checkpoint_path = Path(output) / CHECKPOINT_NAME if output else None
        self.out = Path(output) if output and is_main else None
        self._lock = RunLock(self.out) if self.out is not None else None
        self._tb: Any = None

    @property
    def writes(self) -> bool:
        return self.out is not None

    def open(self, resume: bool, force: bool) -> dict | None:
        """Take the folder (lock, stale temporaries, no overwrite); the checkpoint to resume."""
        ckpt = self.checkpoint_path
        resuming = resume and ckpt is not None and ckpt.exists()
        if self._lock is not None:  # one writer per run folder; then its stale temporaries go
            self._lock.acquire()
            check_no_links(self.out)  # type: ignore[arg-type]  # before any write or delete
            remove_stale_temporaries(self.out)  # type: ignore[arg-type]
            if not resuming:
                check_new_run(self.out, force, resume)  # type: ignore[arg-type]
        if resume and ckpt is None:
            raise ParameterError("resume needs output: the run folder holding last.pt", "resume",
                                 "output")
        return load_checkpoint(ckpt) if resuming else None  # type: ignore[arg-type]

    def diverged_hint(self) -> str:
        """Where a diverged run can be taken up again, in words."""
        ckpt = self.checkpoint_path
        return (f"the last good checkpoint is {ckpt}" if ckpt and ckpt.exists()
                else "no checkpoint was written")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._lock is not None:
            self._lock.release()

    def write_config(self, run_cfg: dict) -> None:
        if self.out is not None:
            atomic_write_json(self.out / "config.json", json.loads(json.dumps(run_cfg,
                                                                                default=str)))

    def open_tensorboard(self) -> None:
        if self.out is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / "tensorboard"))

    def step_scalars(self, step: int, loss: float, lr: float) -> None:
        """Training loss and learning rate, every 50 steps (TensorBoard only)."""
        if self._tb is not None and step % 50 == 0:
            self._tb.add_scalar("train/loss", loss, step)
            self._tb.add_scalar("train/lr", lr, step)

    def checkpoint(self, state: dict) -> None:
        if self.out is not None:
            _save_checkpoint(self.out / CHECKPOINT_NAME, state)

    def save_best(self, model: nn.Module) -> None:
        if self.out is not None:
            save_run_weights(model, self.out / "best", self.model_name)

    def epoch_done(self, history: list[dict]) -> None:
        """The epoch's row to TensorBoard and the whole history to metrics.csv."""
        row = history[-1]
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, float) and k != "epoch":
                    self._tb.add_scalar(f"epoch/{k}", v, row["epoch"])
        if self.out is not None:
            atomic_write_text(self.out / "metrics.csv", csv_text(history))

    def finish(self, eval_model: nn.Module, have_best: bool, run_summary: dict) -> None:
        """final/ (and best/ when no epoch was validated), then summary.json."""
        if self.out is None:
            return
        if not have_best:  # no validation data: the final weights are the best we know
            self.save_best(eval_model)
        save_run_weights(eval_model, self.out / "final", self.model_name)
        atomic_write_json(self.out / "summary.json", run_summary)
