"""Older import path of the weight readers and effnet's format; use `read` and `pretrained`."""

from ..io_utils import atomic_path, atomic_write_json, first_line
from .pretrained import (
    FORMAT_NAME,
    FORMAT_VERSION,
    is_pretrained_dir,
    model_config,
    pretrained_cfg_from_config,
    read_config,
    save_pretrained,
    spec_from_config,
)
from .read import (
    CONFIG_NAME,
    PACKAGED,
    PACKAGED_HINT,
    WEIGHTS_NAME,
    Checkpoint,
    packaged_weights_path,
    read_checkpoint,
    tf_name_hint,
)

write_json_atomic = atomic_write_json

__all__ = ["CONFIG_NAME", "FORMAT_NAME", "FORMAT_VERSION", "PACKAGED", "PACKAGED_HINT",
           "WEIGHTS_NAME", "Checkpoint", "atomic_path", "first_line", "is_pretrained_dir",
           "model_config", "packaged_weights_path", "pretrained_cfg_from_config",
           "read_checkpoint", "read_config", "save_pretrained", "spec_from_config",
           "tf_name_hint", "write_json_atomic"]
