"""`model.init_from=original:<name>`: the ImageNet ViT weights the official ViLT started from.

The official pre-training loads timm's `vit_base_patch32_384` as timm released it in late 2020,
`jx_vit_base_p32_384-830016f5.pth`: Google's original ViT-B/32 (ImageNet-21k, fine-tuned on 1k
at 384) ported from JAX (timm commit 736f209e; reference Sec. 1.7). In June 2021 (commit
b319eb5b, after 0.4.9) timm gave that name the AugReg weights, another training of the same
architecture; timm 1.0 knows only those (`augreg_in21k_ft_in1k`, its default, and `augreg_in1k`),
so `timm:vit_base_patch32_384` no longer gives the paper's start.

ViLT-L/32 (`model=large32`) starts from the same release's ViT-L/32 384,
`jx_vit_large_p32_384-9b920ba8.pth` (24 blocks of 1024, 16 heads). timm never retrained that
one: timm 1.0 serves it from the Hub as `vit_large_patch32_384.orig_in21k_ft_in1k` (the name's
only tag, its pretrained config still naming this file), so there `timm:` and `original:` give the
same weights, from the Hub or from the GitHub release.

Each name below is a release file. It is downloaded once into torch hub's cache
(`torch.hub.get_dir()/checkpoints`, i.e. `$TORCH_HOME/hub/checkpoints`, where timm 0.3/0.4 and
so the official code kept it: a machine that ran them has it already), its SHA-256 is checked on
every use, it is read as tensors only (`safe_torch_load`) and loaded into its timm architecture,
then into the backbone as timm weights are (`vit_backbone_state`). Offline, `model.init_file`
names a local copy, checked the same way.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

from ..model.config import ViltConfig
from .checkpoint_io import safe_torch_load
from .timm_vit import vit_backbone_state


@dataclass(frozen=True)
class OriginalWeights:
    """A release file: where it is, its SHA-256 and the timm architecture it loads into.

    ``sha256``: the file's hex digest, or only its leading digits where that is all that was
    published; the check is then a prefix match.
    """

    url: str
    sha256: str
    architecture: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


ORIGINAL_WEIGHTS = {
    "vit_base_patch32_384": OriginalWeights(
        url="https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/"
        "jx_vit_base_p32_384-830016f5.pth",
        # Only 8 hex digits are published, in the file name: timm names release files
        # <name>-<first 8 digits of the SHA-256> (its clean_checkpoint.py; torch hub's check_hash
        # convention). The full digest is unknown to us, so this is a 32-bit check of the file.
        sha256="830016f5",
        architecture="vit_base_patch32_384",
    ),
    "vit_large_patch32_384": OriginalWeights(
        url="https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/"
        "jx_vit_large_p32_384-9b920ba8.pth",
        sha256="9b920ba8",  # the published prefix, as for ViT-B/32 above
        architecture="vit_large_patch32_384",
    ),
}


def cache_dir() -> Path:
    """torch hub's checkpoint cache, where release files are downloaded to."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: str | os.PathLike, weights: OriginalWeights) -> None:
    """Raise, naming the file and both hashes, unless `path` is `weights`' release file."""
    actual = sha256_of(path)
    if not actual.startswith(weights.sha256):
        raise ValueError(
            f"{path}: SHA-256 {actual} does not match {weights.sha256}"
            f"{' (a prefix: all that is published)' if len(weights.sha256) < 64 else ''} of "
            f"{weights.filename} ({weights.url}): a different or damaged file"
        )


def download(weights: OriginalWeights, directory: Path) -> Path:
    """`weights`' file in `directory`, downloaded first if it is not there; one process of a
    machine downloads while the others wait (torch hub writes a temporary file, then renames)."""
    path = directory / weights.filename
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock"):
            if not path.is_file():
                torch.hub.download_url_to_file(weights.url, str(path))
    return path


def original_weights(name: str) -> OriginalWeights:
    if name not in ORIGINAL_WEIGHTS:
        raise ValueError(f"model.init_from=original:{name}: unknown name; known: {sorted(ORIGINAL_WEIGHTS)}")
    return ORIGINAL_WEIGHTS[name]


def original_file(name: str, file: str | os.PathLike | None = None) -> Path:
    """The checked file of `name`: `file` if given (`model.init_file`), else the cached download."""
    weights = original_weights(name)
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"model.init_file={file} not found")
    else:
        path = download(weights, cache_dir())
    check_sha256(path, weights)
    return path


def original_vit(name: str, file: str | os.PathLike | None = None):
    """The timm ViT of `name`'s architecture holding its original weights, without classifier."""
    import timm

    weights = original_weights(name)
    model = timm.create_model(weights.architecture, pretrained=False, num_classes=0)
    state = safe_torch_load(original_file(name, file))
    classifier = model.pretrained_cfg.get("classifier", "head")
    # ImageNet's classifier has no place in ViLT (reference Sec. 1.7); everything else must fit.
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith(f"{classifier}.")})
    return model


def original_backbone_state(
    name: str, config: ViltConfig, file: str | os.PathLike | None = None
) -> dict[str, torch.Tensor]:
    """The original weights of `name` under our checkpoint names, as timm weights are mapped."""
    return vit_backbone_state(original_vit(name, file), original_weights(name).architecture, config)
