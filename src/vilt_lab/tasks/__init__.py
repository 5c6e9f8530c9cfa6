"""Tasks: pre-training and the downstream tasks, chosen by `task.name` (the one dispatch).

TASKS["vqa"]  ->  objectives, items, evaluator, epoch size, selection metric of VQA
"""

from __future__ import annotations

from .base import Task
from .irtr import IRTRTask
from .module import TaskModule, build_task_module
from .nlvr2 import NLVR2Task
from .pretrain import PretrainTask
from .vqa import VQATask

TASKS: dict[str, Task] = {task.name: task for task in (PretrainTask(), VQATask(), NLVR2Task(), IRTRTask())}


def get_task(name: str) -> Task:
    """The task registered as ``name`` (``task.name`` in the config)."""
    if name not in TASKS:
        raise KeyError(f"task.name={name!r} is not a task; known tasks: {sorted(TASKS)}")
    return TASKS[name]


__all__ = ["TASKS", "Task", "TaskModule", "build_task_module", "get_task"]
