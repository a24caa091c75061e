"""One reader of a weights source's identity: `resolve_weights(source)`.

Whatever the source (a `save_pretrained` folder, a training run folder, a run's
``.safetensors`` from before runs wrote ``best/``, a checkpoint file, a state dict,
'packaged'), it is resolved once into a :class:`ResolvedWeights`: where the tensors are,
and what the source says about the model that holds them (its config, name, classes,
input channels and preprocessing). `create_model`, `load_weights`, predict, eval,
convert and export all take it, so a folder's config.json is parsed once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .pretrained import effnet_config, pretrained_cfg_from_config, spec_from_config
from .read import PACKAGED, Checkpoint, read_checkpoint

# What a source is: a save_pretrained folder, a run's .safetensors (runs before best/ folders
# wrote RUN/best.safetensors with the model in its metadata), or weights that say nothing.
FOLDER, RUN_FILE, PLAIN = "folder", "run-file", "weights"


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights source and what it says about its model, read once.

    `source` is what the tensors are read from (a training run folder resolved to its
    best weights); `kind` is 'folder' (a save_pretrained folder, `config` its config.json),
    'run-file' (an older run's .safetensors) or 'weights' (nothing known about the model).
    `num_classes`, `in_chans` and `pretrained_cfg` are as stored (not yet checked for a
    folder: :meth:`network_spec` and `create_model` check what they use).
    """

    source: Any
    kind: str = PLAIN
    config: Mapping[str, Any] | None = None
    model_name: str | None = None
    num_classes: Any = None
    in_chans: Any = None
    padding: str | None = None
    pretrained_cfg: dict[str, Any] = field(default_factory=dict)

    @property
    def names_model(self) -> bool:
        """Whether the source says which model it holds (create_model needs no name)."""
        return self.kind != PLAIN

    def network_spec(self):
        """The folder's full network spec (paper Table 1 as data); folders only."""
        return spec_from_config(self.config or {})

    def checkpoint(self) -> Checkpoint:
        """The tensors, read now (a folder's config.json is not read again)."""
        config = dict(self.config) if self.config is not None else None
        return read_checkpoint(self.source, config=config)


def resolve_weights(source: Any) -> ResolvedWeights:
    """`source` and what it says about its model; a training run folder stands for its best
    weights (RUN/best, or RUN/best.safetensors for runs written before best/ folders).

    Reads only config.json (or a .safetensors header): the tensors are read by
    :meth:`ResolvedWeights.checkpoint` when the model is loaded.
    """
    if isinstance(source, ResolvedWeights):
        return source
    if not isinstance(source, str | os.PathLike) or str(source) == PACKAGED:
        return ResolvedWeights(source)
    config = effnet_config(source)
    if config is None:
        source, config = _run_best(source)
    if config is not None:
        return ResolvedWeights(
            source, FOLDER, config, model_name=config.get("model_name"),
            num_classes=config.get("num_classes", 1000), in_chans=config.get("in_chans", 3),
            padding=config.get("padding"), pretrained_cfg=pretrained_cfg_from_config(config))
    return _run_file(source) or ResolvedWeights(source)


def _run_best(run: Any) -> tuple[Any, dict[str, Any] | None]:
    """A training run folder's best weights and their config (None for a .safetensors); the
    source unchanged when it is no run folder."""
    best = Path(run) / "best"
    config = effnet_config(best)
    if config is not None:
        return best, config
    legacy = Path(run) / "best.safetensors"
    if Path(run).is_dir() and legacy.is_file():
        return legacy, None
    return run, None


def _run_file(weights: Any) -> ResolvedWeights | None:
    """What a `.safetensors` written by effnet train before best/ folders says about its
    model (name, classes, channels, padding, preprocessing); None for any other file."""
    path = Path(weights)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception:  # safetensors' own errors: load_weights says what is wrong with the file
        return None
    try:
        if "num_classes" not in meta or "pretrained_cfg" not in meta:
            return None
        cfg = json.loads(meta["pretrained_cfg"])
        num_classes = int(meta["num_classes"])
        in_chans = int(cfg.get("input_size", (3,))[0])
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    return ResolvedWeights(weights, RUN_FILE, model_name=meta.get("model_name") or None,
                           num_classes=num_classes, in_chans=in_chans,
                           padding=meta.get("padding"), pretrained_cfg=cfg)
