"""Weights in and out: read foreign checkpoints, load them into models, effnet's own format.

* :mod:`.read` reads files, folders, state dicts and the packaged Lite0 weights;
* :mod:`.layouts` renames the keys of timm, torchvision and lukemelas layouts;
* :mod:`.load` loads them into a model, all tensors or none, with a report of what does not fit;
* :mod:`.pretrained` is effnet's format (`save_pretrained` folders, the one on-disk form);
* :mod:`.resolve` reads what a source says about its model, once (`resolve_weights`);
* :mod:`.convert` writes effnet weights in timm's or torchvision's layout.

This module only re-exports, lazily (PEP 562): `effnet.weights.pretrained`
and `.read` load without the modules that build models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "LAYOUTS": "layouts",
    "PACKAGED": "read",
    "LoadResult": "load",
    "ResolvedWeights": "resolve",
    "WeightsAdaptedWarning": "load",
    "adapt_input_conv": "load",
    "foreign_state_dict": "convert",
    "is_pretrained_dir": "pretrained",
    "load_weights": "load",
    "packaged_weights_path": "read",
    "read_checkpoint": "read",
    "read_config": "pretrained",
    "resolve_weights": "resolve",
    "save_foreign": "convert",
    "save_pretrained": "pretrained",
    "set_bn_eps": "load",
    "set_padding": "load",
}

__all__ = [
    "LAYOUTS",
    "PACKAGED",
    "LoadResult",
    "ResolvedWeights",
    "WeightsAdaptedWarning",
    "adapt_input_conv",
    "foreign_state_dict",
    "is_pretrained_dir",
    "load_weights",
    "packaged_weights_path",
    "read_checkpoint",
    "read_config",
    "resolve_weights",
    "save_foreign",
    "save_pretrained",
    "set_bn_eps",
    "set_padding",
]

if TYPE_CHECKING:
    from .convert import foreign_state_dict, save_foreign
    from .layouts import LAYOUTS
    from .load import (
        LoadResult,
        WeightsAdaptedWarning,
        adapt_input_conv,
        load_weights,
        set_bn_eps,
        set_padding,
    )
    from .pretrained import is_pretrained_dir, read_config, save_pretrained
    from .read import PACKAGED, packaged_weights_path, read_checkpoint
    from .resolve import ResolvedWeights, resolve_weights


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
