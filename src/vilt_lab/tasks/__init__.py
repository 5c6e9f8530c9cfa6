"""Task modules: the backbone plus the objectives of one training stage (what DDP wraps)."""

from .pretrain import PretrainTask, build_pretrain_task

__all__ = ["PretrainTask", "build_pretrain_task"]
