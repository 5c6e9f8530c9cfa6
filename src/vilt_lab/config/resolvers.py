"""OmegaConf resolvers the config tree uses (registered on import of the entry points).

`${required:model.init_from}` marks a value a command line must set. OmegaConf's own `???` cannot
do it inside an experiment: merging `???` onto the model preset's `init_from: null` keeps the
null, so a fine-tuning run would silently start from random weights.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from .errors import ConfigError


def required(key: str) -> None:
    raise ConfigError([f"{key} is required: set {key}=<value> on the command line (or {key}=null)"])


if not OmegaConf.has_resolver("required"):
    OmegaConf.register_new_resolver("required", required)
