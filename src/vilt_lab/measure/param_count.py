"""Parameter counts in the paper's Table 6 accounting.

Table 6 counts the visual embedder plus the transformer (87.4M for ViLT-B/32; from the
architecture it is 87.53M with the 384-pixel position table) and leaves out the text embedder
(23.47M, footnote 9). The modality-type table and the pooler complete the backbone (111.6M).

    python -m vilt_lab.measure.param_count base32      (or: vilt-params base32)
"""

from __future__ import annotations

import argparse

from torch import nn

from ..model.backbone import ViltBackbone
from ..model.config import SIZES, get_config

# The group Table 6's #Params column counts (87.4M for ViLT-B/32).
TABLE6_GROUP = "transformer + visual embedder"
# Which top-level modules of the backbone fall in which Table 6 group.
GROUPS: dict[str, tuple[str, ...]] = {
    TABLE6_GROUP: ("blocks", "norm", "patch_embed", "pos_embed", "cls_token"),
    "text embedder": ("text_embeddings",),
    "modality-type embedding": ("token_type_embeddings",),
    "pooler": ("pooler",),
}


def count_parameters(backbone: nn.Module) -> dict[str, int]:
    """Parameter counts per Table 6 group, plus "backbone" (their sum, which is every parameter)."""
    counts = dict.fromkeys(GROUPS, 0)
    for name, param in backbone.named_parameters():
        top = name.split(".", 1)[0]
        group = next((g for g, tops in GROUPS.items() if top in tops), None)
        if group is None:
            raise KeyError(f"parameter {name!r} belongs to no Table 6 group; add it to GROUPS")
        counts[group] += param.numel()
    counts["backbone"] = sum(counts.values())
    return counts


def format_counts(size: str, counts: dict[str, int]) -> str:
    lines = [f"ViLT {size} parameters (paper Table 6 accounting)"]
    lines += [f"  {name:<32} {n:>12,}  ({n / 1e6:.2f}M)" for name, n in counts.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("size", nargs="?", default="base32", choices=sorted(SIZES))
    args = parser.parse_args(argv)
    print(format_counts(args.size, count_parameters(ViltBackbone(get_config(args.size)))))


if __name__ == "__main__":
    main()
