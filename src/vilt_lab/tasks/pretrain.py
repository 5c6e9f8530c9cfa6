"""Pre-training: the selected objectives (objective=[itm,mlm,wpa]) on image-caption data."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from vilt_lab.data.masking import MaskingStep
from vilt_lab.data.pipeline import ItemSpec
from vilt_lab.evaluation.evaluators import MeansEvaluator

from .base import Task

# Objective settings that the data workers use rather than the objective module.
DATA_SIDE_KEYS = {"mlm": ("whole_word", "probability")}


class PretrainTask(Task):
    name = "pretrain"
    provides = "captions"

    def objectives(
        self, cfg: DictConfig, tokenizer, *, train: bool
    ) -> dict[str, tuple[float, dict[str, Any]]]:
        """`objective.<name>` for each selected objective: its weight and constructor arguments."""
        selected = OmegaConf.to_container(cfg.objective, resolve=True) if cfg.get("objective") else {}
        if not selected:
            raise ValueError("no objective selected: set objective=[itm,mlm,...]")
        out = {}
        for name, values in selected.items():
            values = dict(values or {})
            if "weight" not in values:
                raise KeyError(f"objective.{name}.weight is missing")
            weight = float(values.pop("weight"))
            for key in DATA_SIDE_KEYS.get(name, ()):
                values.pop(key, None)
            out[name] = (weight, values)
        return out

    def items(self, cfg: DictConfig, tokenizer, module) -> ItemSpec:
        """One caption per image; whole-word masking only when MLM is selected."""
        mlm = cfg.objective.get("mlm")
        if mlm is None:
            return ItemSpec()
        masking = MaskingStep(
            len(tokenizer),
            tokenizer.mask_token_id,
            float(mlm.get("probability", 0.15)),
            bool(mlm.get("whole_word", True)),
        )
        return ItemSpec(steps=(masking,))

    def evaluator(self, cfg: DictConfig, tokenizer, module, loader, urls) -> MeansEvaluator:
        return MeansEvaluator(
            self.eval_loader(cfg, tokenizer, module, loader, urls),
            seed=int(cfg.seed),
            max_batches=cfg.trainer.get("eval_batches"),
            progress=bool(cfg.trainer.progress),
        )
