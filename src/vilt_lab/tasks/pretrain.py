"""Pre-training: the selected objectives (objective=[itm,mlm,wpa]) on image-caption data.

Which objectives run is the `objective` group's selection alone. Each conf/objective/<name>.yaml
marks its entry `selected: true`; settings that reach `objective.<name>` otherwise (an experiment
tuning `objective.wpa.weight`, an override) only tune an objective the group selected. The mark is
part of the resolved config, so a composed config, `run(cfg)` and a run's saved config.yaml all
select the same objectives, with or without Hydra's runtime.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from omegaconf import DictConfig

from vilt_lab.config.schema import ObjectiveSchema, RunConfig
from vilt_lab.data.masking import MASKING_KEYS, MaskingStep
from vilt_lab.data.pipeline import ItemSpec
from vilt_lab.evaluation.evaluators import MeansEvaluator
from vilt_lab.utils.progress import progress_style

from .base import Task

log = logging.getLogger(__name__)

# The key only the objective group's files set: `objective.<name>.selected: true`.
SELECTED_KEY = "selected"
# Objective settings that the data workers use rather than the objective module.
DATA_SIDE_KEYS = {"mlm": MASKING_KEYS}


def objective_settings(cfg: RunConfig) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(name -> `objective.<name>` of each selected objective as a dict, every key's value given,
    names of the unselected entries)."""
    entries: dict[str, ObjectiveSchema] = {
        f.name: getattr(cfg.objective, f.name)
        for f in dataclasses.fields(cfg.objective)
        if getattr(cfg.objective, f.name) is not None
    }
    selected = {name: dataclasses.asdict(entry) for name, entry in entries.items() if entry.selected}
    return selected, sorted(set(entries) - set(selected))


def mark_unmarked_selection(cfg: DictConfig) -> None:
    """Mark every `objective.<name>` selected in a run's config.yaml written before the group
    marked its selection (no entry carries the mark): each entry was a selected objective then."""
    entries = cfg.get("objective") or {}
    if not any(SELECTED_KEY in values for values in entries.values()):
        for values in entries.values():
            values[SELECTED_KEY] = True


class PretrainTask(Task):
    name = "pretrain"
    provides = "captions"

    def objectives(
        self, cfg: RunConfig, tokenizer, *, train: bool
    ) -> dict[str, tuple[float, dict[str, Any]]]:
        """`objective.<name>` for each selected objective: its weight and constructor arguments."""
        selected, ignored = objective_settings(cfg)
        if not selected:
            raise ValueError("no objective selected: set objective=[itm,mlm,...]")
        if ignored:
            log.warning(
                "%s: set, but not selected by objective=[%s]; ignored",
                ", ".join(f"objective.{name}" for name in ignored),
                ",".join(selected),
            )
        out = {}
        for name, values in selected.items():
            if values["weight"] is None:
                raise KeyError(f"objective.{name}.weight is missing")
            weight = float(values.pop("weight"))
            for key in (SELECTED_KEY, *DATA_SIDE_KEYS.get(name, ())):
                values.pop(key, None)
            out[name] = (weight, values)
        # WPA reads the ITM pass, so it draws that pass's negatives as ITM is set to.
        if "wpa" in out and "itm" in selected:
            out["wpa"][1]["negatives"] = selected["itm"]["negatives"]
        return out

    def objective_names(self, cfg: RunConfig) -> list[str]:
        return list(objective_settings(cfg)[0])

    def items(self, cfg: RunConfig, tokenizer, module) -> ItemSpec:
        """Caption items (`data.caption_sampling`); whole-word masking only when MLM is selected.
        MixGen (`augment.mixgen`) may mix them: a caption carries no label of its own."""
        mlm = objective_settings(cfg)[0].get("mlm")
        steps = () if mlm is None else (MaskingStep.from_settings(tokenizer, mlm, cfg.data.max_text_len),)
        return dataclasses.replace(self.caption_items(cfg, steps), mixes_pairs=True)

    def evaluator(self, cfg: RunConfig, tokenizer, module, loader, urls) -> MeansEvaluator:
        return MeansEvaluator(
            self.eval_loader(cfg, tokenizer, module, loader, urls),
            seed=cfg.seed,
            max_batches=cfg.trainer.eval_batches,
            progress=progress_style(cfg.trainer),
        )
