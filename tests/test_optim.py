"""AdamW's parameter groups: no decay for `ndim <= 1` and for what `no_weight_decay()` names."""

from __future__ import annotations

import pytest
import torch

from vilt_lab.model import ViltBackbone, create_backbone
from vilt_lab.tasks.module import build_task_module
from vilt_lab.training.optim import param_groups

LR, DECAY = 1e-4, 0.01
LR_MULT = {"objectives.itm": 10.0}


def pretrain_task():
    torch.manual_seed(0)
    return build_task_module(create_backbone("tiny", vocab_size=100), ["itm", "mlm", "mpp"])


def named_groups(model: torch.nn.Module, groups: list[dict]) -> list[tuple[float, float, list[str]]]:
    """Each group as (weight decay, lr, its parameters' names in order)."""
    names = {id(param): name for name, param in model.named_parameters()}
    return [(g["weight_decay"], g["lr"], [names[id(p)] for p in g["params"]]) for g in groups]


def test_groups_are_the_ndim_rule_while_the_backbone_exempts_nothing():
    """The backbone's `no_weight_decay()` is empty, as the official code decays pos_embed and
    cls_token: the groups are today's, decay for every matrix and none for vectors, in order."""
    task = pretrain_task()
    assert task.backbone.no_weight_decay() == set()
    expected: dict[tuple[bool, float], list[str]] = {}
    for name, param in task.named_parameters():
        mult = 10.0 if name.startswith("objectives.itm") else 1.0
        expected.setdefault((param.ndim > 1, mult), []).append(name)
    want = [(DECAY if decay else 0.0, LR * mult, names) for (decay, mult), names in expected.items()]
    assert named_groups(task, param_groups(task, LR, DECAY, LR_MULT)) == want
    assert "backbone.pos_embed" in want[0][2] and want[0][0] == DECAY


def test_a_name_from_no_weight_decay_lands_in_the_no_decay_group(monkeypatch):
    monkeypatch.setattr(ViltBackbone, "no_weight_decay", lambda self: {"pos_embed", "cls_token"})
    task = pretrain_task()
    groups = named_groups(task, param_groups(task, LR, DECAY, LR_MULT))
    decayed = {name for decay, _, names in groups if decay for name in names}
    exempt = {name for decay, _, names in groups if not decay for name in names}
    assert {"backbone.pos_embed", "backbone.cls_token"} <= exempt
    # Only those two move: every other matrix still decays.
    matrices = {name for name, param in task.named_parameters() if param.ndim > 1}
    assert decayed == matrices - {"backbone.pos_embed", "backbone.cls_token"}


def test_a_name_that_is_no_parameter_is_refused(monkeypatch):
    monkeypatch.setattr(ViltBackbone, "no_weight_decay", lambda self: {"pos_embedding"})
    task = pretrain_task()
    with pytest.raises(KeyError, match="backbone.pos_embedding"):
        param_groups(task, LR, DECAY)
