"""FLOPs of one ViLT forward, counted by PyTorch's FlopCounterMode rather than taken from a formula.

Convention (PyTorch's): a multiply-add is 2 FLOPs. Counted: matrix products (mm, addmm: the
linear layers), convolutions (the patch projection) and scaled-dot-product attention (its QK^T
and AV products). Not counted: LayerNorm, softmax, GELU, additions and bias adds, the attention
scale, embedding lookups (so the text embedder costs nothing) and the position-table
interpolation. Multiply-adds (MACs, the unit fvcore, thop and ptflops call "FLOPs") are half.

The forward counted is `forward_features` (text and visual embedding, transformer, final norm)
at batch 1 in eval mode, on random inputs and weights (counts depend on shapes alone).

    python -m vilt_lab.measure.flops base32                       # 384x640, 200 sampled patches, 40 text
    python -m vilt_lab.measure.flops base32 --max-image-len -1    # all 240 patches
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..model.backbone import ViltBackbone
from ..model.config import SIZES, get_config
from .dummy_inputs import (
    TABLE6_IMAGE_HW,
    TABLE6_IMAGE_TOKENS,
    TABLE6_TEXT_LEN,
    dummy_inputs,
    parse_image_size,
)

aten = torch.ops.aten


def cpu_fused_attention_flops(
    query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args: Any, **kwargs: Any
) -> int:
    """PyTorch's own SDPA formula (QK^T plus AV), for the CPU fused kernel its registry lacks."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# FlopCounterMode knows the CUDA attention kernels but not the CPU one SDPA dispatches to (still
# missing in torch 2.14), so on a CPU attention would silently count 0 FLOPs without this entry.
MISSING_FORMULAS: dict[Any, Callable[..., int]] = {
    aten._scaled_dot_product_flash_attention_for_cpu: cpu_fused_attention_flops
}
CONVOLUTION_OPS = {aten.convolution, aten._convolution, aten.convolution_overrideable}
LINEAR_OPS = {aten.mm, aten.addmm}


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one forward by what they were spent on, and the shapes they were counted at.

    patch_projection: the patch conv, over every patch of the image (sampling comes after it).
    linear: qkv, attention output and MLP layers of every block.
    attention: the QK^T and AV products (an SDPA kernel, or bmm when SDPA takes its math path).
    image_patches: patch tokens in the joint sequence; patches_projected: the image's whole grid.
    """

    patch_projection: int
    linear: int
    attention: int
    text_tokens: int
    image_patches: int
    patches_projected: int
    image_hw: tuple[int, int]

    @property
    def flops(self) -> int:
        return self.patch_projection + self.linear + self.attention

    @property
    def macs(self) -> int:
        """Multiply-adds: every counted FLOP is half of one."""
        return self.flops // 2

    @property
    def sequence_length(self) -> int:
        """Tokens through the transformer: text, the image [CLS], the image patches."""
        return self.text_tokens + 1 + self.image_patches

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "flops": self.flops,
            "macs": self.macs,
            "sequence_length": self.sequence_length,
        }


def count_flops(
    backbone: ViltBackbone,
    image_hw: tuple[int, int] = TABLE6_IMAGE_HW,
    max_image_len: int = TABLE6_IMAGE_TOKENS,
    text_len: int = TABLE6_TEXT_LEN,
) -> FlopCount:
    """Count one batch-1 `forward_features` of `backbone` on an `image_hw` image and `text_len` text.

    max_image_len: patches the transformer sees, sampled as in pre-training (-1: all of them).
    """
    param = next(backbone.parameters())
    inputs = dummy_inputs(backbone.config, image_hw, text_len).to(param.device, param.dtype)
    counter = FlopCounterMode(display=False, custom_mapping=MISSING_FORMULAS)
    was_training = backbone.training
    backbone.eval()
    with torch.inference_mode(), counter:
        *_, selection = backbone.forward_features(
            inputs.input_ids,
            inputs.attention_mask,
            inputs.pixel_values,
            inputs.pixel_mask,
            max_image_len=max_image_len,
        )
    backbone.train(was_training)
    by_op = counter.get_flop_counts()["Global"]
    conv = sum(n for op, n in by_op.items() if op in CONVOLUTION_OPS)
    linear = sum(n for op, n in by_op.items() if op in LINEAR_OPS)
    grid_h, grid_w = selection.grid
    return FlopCount(
        patch_projection=conv,
        linear=linear,
        # The model has no other products: whatever is neither conv nor linear is attention.
        attention=sum(by_op.values()) - conv - linear,
        text_tokens=text_len,
        image_patches=selection.index.shape[1],
        patches_projected=grid_h * grid_w,
        image_hw=image_hw,
    )


def format_flop_count(size: str, count: FlopCount) -> str:
    """The count as printed by the command: shapes, groups, total in FLOPs and MACs, convention."""
    height, width = count.image_hw
    lines = [
        f"ViLT {size}: one forward at batch 1, counted by torch.utils.flop_counter.FlopCounterMode",
        f"  tokens: {count.text_tokens} text + 1 image [CLS] + {count.image_patches} image patches "
        f"(of {count.patches_projected} in a {height}x{width} image) = {count.sequence_length}",
    ]
    groups = {
        f"patch projection (conv, {count.patches_projected} patches)": count.patch_projection,
        "linear layers (qkv, proj, MLP)": count.linear,
        "attention (QK^T, AV)": count.attention,
    }
    lines += [f"  {label:<38} {flops / 1e9:8.3f} GFLOPs" for label, flops in groups.items()]
    lines += [
        f"  total {count.flops / 1e9:.2f} GFLOPs = {count.macs / 1e9:.2f} GMACs (multiply-adds)",
        "  convention: 2 FLOPs per multiply-add of matmuls, convs and SDPA; LayerNorm, softmax, GELU,",
        "  additions and embedding lookups count 0",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("size", nargs="?", default="base32", choices=sorted(SIZES))
    parser.add_argument("--image", type=parse_image_size, default=TABLE6_IMAGE_HW, help="HxW pixels")
    parser.add_argument("--max-image-len", type=int, default=TABLE6_IMAGE_TOKENS)
    parser.add_argument("--text-len", type=int, default=TABLE6_TEXT_LEN)
    parser.add_argument("--json", action="store_true", help="print the count as JSON")
    args = parser.parse_args(argv)
    count = count_flops(ViltBackbone(get_config(args.size)), args.image, args.max_image_len, args.text_len)
    print(json.dumps(count.to_dict(), indent=2) if args.json else format_flop_count(args.size, count))


if __name__ == "__main__":
    main()
