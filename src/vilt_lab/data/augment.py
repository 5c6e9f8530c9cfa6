"""RandAugment for fine-tuning, as ViLT uses it (paper §4.1; official ``pixelbert_randaug``).

The paper: N = 2, M = 9, every usual RandAugment op except colour inversion ("texts often
contain color information") and cutout ("may clear out small but important objects"). The
official code, whose behaviour this reproduces with timm's ops:

* 14 ops (:data:`OPS`); the N ops are drawn with replacement and always applied (no per-op
  probability, no identity op);
* magnitude on a 0-30 scale, ``value = min + M / 30 * (max - min)``: at M = 9 rotate +-9 deg,
  shear +-0.09, translate +-30 px (absolute), colour/contrast/brightness/sharpness x0.64,
  posterize to 1 bit, solarize at 76.8, solarize-add +33 (timm's ``level / 10`` scale, so
  timm's level is M / 3);
* affine ops fill with black and resample nearest (PIL's defaults, which the official ops use).

Two places where timm's ops differ from the official ones: timm's SolarizeAdd adds only to pixels
below the threshold, the official one adds to every pixel and then solarizes at 128, so that op
is :class:`SolarizeAfterAdd` here; and timm floors the Solarize threshold to an integer (76, not
76.8: pixels of exactly 76 are inverted too), and below M = 7.5 timm posterizes to 0 bits where
the official code keeps 1. Both are left as timm has them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image

# The official op list, in its order (timm's names: TranslateX/Y are timm's absolute translations).
OPS = (
    "AutoContrast",
    "Equalize",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
)
EXCLUDED_OPS = ("Invert", "Cutout")  # the paper's two exclusions
MAX_MAGNITUDE = 30  # the official scale of M
TIMM_MAX_LEVEL = 10  # timm's scale of its magnitude level
TRANSLATE_MAX_PX = 100  # official TranslateX/Yabs range 0-100 px
SOLARIZE_ADD_MAX = 110  # official SolarizeAdd range 0-110
SOLARIZE_ADD_THRESHOLD = 128

# timm hyper-parameters that make its ops the official ones: absolute translation range, black
# fill and nearest resampling (timm's defaults are 250 px, grey and a random bilinear/bicubic).
TIMM_HPARAMS = {
    "translate_const": TRANSLATE_MAX_PX,
    "img_mean": (0, 0, 0),
    "interpolation": Image.Resampling.NEAREST,
}


class SolarizeAfterAdd:
    """The official SolarizeAdd: add ``magnitude / 30 * 110`` to every pixel (clipped to 255,
    truncated to an integer), then invert the pixels at or above 128. A timm-style op (``name``,
    ``magnitude``, called on a PIL image) so it sits in timm's op list."""

    name = "SolarizeAdd"

    def __init__(self, magnitude: float) -> None:
        self.magnitude = magnitude
        addition = magnitude / MAX_MAGNITUDE * SOLARIZE_ADD_MAX
        added = [int(min(255.0, value + addition)) for value in range(256)]
        self.lut = [v if v < SOLARIZE_ADD_THRESHOLD else 255 - v for v in added]

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.point(self.lut * len(image.getbands()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(m={self.magnitude})"


@contextmanager
def _seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed ``random`` and ``np.random`` (timm draws from both) for one call, then restore them,
    so augmentation follows the loader's per-worker seed without touching anyone else's state."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class RandAugment:
    """ViLT's RandAugment: ``num_ops`` ops of :data:`OPS` at ``magnitude`` (0-30 scale).

    Call it with a PIL RGB image and the worker's ``random.Random``; the result keeps the
    image's size and mode.
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 9) -> None:
        if num_ops < 1:
            raise ValueError(
                f"RandAugment needs at least one op per image (augment.randaugment.n), got {num_ops}"
            )
        if not 0 <= magnitude <= MAX_MAGNITUDE:
            raise ValueError(
                f"RandAugment magnitude (augment.randaugment.m) must be in [0, {MAX_MAGNITUDE}], got {magnitude}"
            )
        # Imported here, not at the top: importing timm pulls in torchvision.models and
        # torch._dynamo, about 4 s of every process start (every training, evaluation and
        # data-loader worker process), and only RandAugment runs need it.
        from timm.data.auto_augment import RandAugment as TimmRandAugment
        from timm.data.auto_augment import rand_augment_ops

        self.num_ops, self.magnitude = num_ops, magnitude
        level = magnitude * TIMM_MAX_LEVEL / MAX_MAGNITUDE
        timm_ops = iter(
            rand_augment_ops(
                magnitude=level,
                prob=1.0,
                hparams=TIMM_HPARAMS,
                transforms=[name for name in OPS if name != SolarizeAfterAdd.name],
            )
        )
        self.ops = [
            SolarizeAfterAdd(magnitude) if name == SolarizeAfterAdd.name else next(timm_ops) for name in OPS
        ]
        # timm draws the ops with replacement when no choice weights are given, as the official code.
        self._transform = TimmRandAugment(self.ops, num_layers=num_ops)

    @property
    def op_names(self) -> list[str]:
        """The names of the ops it draws from."""
        return [op.name for op in self.ops]

    def __call__(self, image: Image.Image, rng: random.Random) -> Image.Image:
        with _seeded_global_rngs(rng.getrandbits(32)):
            return self._transform(image)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_ops={self.num_ops}, magnitude={self.magnitude}, ops={self.op_names})"
        )
