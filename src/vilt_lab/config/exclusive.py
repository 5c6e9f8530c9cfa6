"""Keys of which a config sets exactly one: the command line's choice wins over an experiment's.

`schedule.max_steps` and `schedule.max_epochs` (and `trainer.eval_every` and
`trainer.evals_per_epoch`) exclude each other, and validation refuses a config that sets both.
An experiment that trains for epochs would then refuse `schedule.max_steps=20` on the command
line until the user also typed `schedule.max_epochs=null`. Instead, as HF's Trainer lets
`max_steps` win over `num_train_epochs`, a key set on the command line clears its partner, unless
the command line sets the partner too (then validation says which to drop).
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

EXCLUSIVE = (
    ("schedule.max_steps", "schedule.max_epochs"),
    ("trainer.eval_every", "trainer.evals_per_epoch"),
)


def overridden_keys(overrides: Sequence[str]) -> dict[str, str]:
    """{key: value as typed} of Hydra's command-line overrides (`key=v`, `+key=v`, `++key=v`)."""
    keys = {}
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and not key.startswith("~"):
            keys[key.lstrip("+")] = value
    return keys


def let_the_command_line_choose(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """Clear (null) the partner of every exclusive key that ``overrides`` set to a value, unless
    they set the partner as well; returns the keys cleared, for the run's log."""
    given = overridden_keys(overrides)
    cleared = []
    for pair in EXCLUSIVE:
        for key, partner in (pair, pair[::-1]):
            chosen = key in given and given[key] != "null"
            if chosen and partner not in given and OmegaConf.select(cfg, partner) is not None:
                OmegaConf.update(cfg, partner, None)
                cleared.append(partner)
    return cleared
