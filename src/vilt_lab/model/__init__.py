"""ViLT backbone, heads, sizes and weight conversion."""

from .backbone import BackboneOutput, ViltBackbone
from .config import SIZES, ViltConfig, get_config
from .heads import ITMHead, MIMDecoder, MLMHead, MPPHead, NLVR2Head, RetrievalHead, VQAHead, build_head


def create_backbone(name: str, **overrides) -> ViltBackbone:
    """A freshly initialised backbone of preset size `name` (see `SIZES`)."""
    return ViltBackbone(get_config(name, **overrides))


__all__ = [
    "SIZES",
    "BackboneOutput",
    "ITMHead",
    "MIMDecoder",
    "MLMHead",
    "MPPHead",
    "NLVR2Head",
    "RetrievalHead",
    "VQAHead",
    "ViltBackbone",
    "ViltConfig",
    "build_head",
    "create_backbone",
    "get_config",
]
