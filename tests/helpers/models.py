"""Small models built the same way by several tests."""

from __future__ import annotations

import torch

from vilt_lab.model import ViltBackbone, ViltConfig, create_backbone


def tiny_backbone(seed: int = 0) -> ViltBackbone:
    """The `tiny` preset backbone, its weights drawn from the global RNG seeded with `seed`."""
    torch.manual_seed(seed)
    return create_backbone("tiny")


def small_vit_config(image_size: int, num_layers: int = 6) -> ViltConfig:
    """A backbone config whose ViT half is timm's `test_vit` (64 wide, 2 heads, MLP ratio 3, 16 px
    patches), so a random `test_vit` can initialise it."""
    return ViltConfig(
        hidden_size=64,
        num_layers=num_layers,
        num_heads=2,
        mlp_ratio=3.0,
        patch_size=16,
        image_size=image_size,
        vocab_size=50,
    )
