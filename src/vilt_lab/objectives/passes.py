"""A per-step cache of backbone passes, so objectives that read the same pass share it.

ITM and WPA both read the pass on unmasked text and mixed images; whichever runs first computes
it, the other reuses it, and WPA still works when ITM is not selected. Build one `Passes` per
training step: the cache assumes every call sees the same batch and backbone.

A pass computes only what its readers read: each objective names the pass it reads
(`Objective.reads_pass`) and how much of it (`Objective.reads_rows`: the pooled text [CLS], the
text positions or every position), `pass_rows` takes the widest need per pass, and the pass's last
block computes that many rows (`ViltBackbone.encode`'s `rows`), exactly the values a full pass
would give.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

import torch

from vilt_lab.data.collate import UNPADDED, WHOLE_CANVAS
from vilt_lab.data.normalize import normalize_images
from vilt_lab.model import BackboneOutput, ViltBackbone
from vilt_lab.model.embeddings import most_valid_patches

T = TypeVar("T")

# Cache keys of the passes more than one module computes or reads.
ITM_PASS, MLM_PASS = "itm", "mlm"

# What a reader reads of a pass (`Objective.reads_rows`), narrowest first.
POOLED, TEXT, ALL = "pooled", "text", "all"
ROW_NEEDS = (POOLED, TEXT, ALL)


def widest(needs: Iterable[str]) -> str:
    """The widest of some `ROW_NEEDS` (what serves every one of them)."""
    return max(needs, key=ROW_NEEDS.index)


def halves(output: BackboneOutput) -> tuple[BackboneOutput, BackboneOutput]:
    """A pass over 2B pairs as the passes over its first and its last B pairs."""

    def half(value, part: int):
        if dataclasses.is_dataclass(value):  # the patch selection; its grid is the batch's
            return dataclasses.replace(
                value, **{f.name: half(getattr(value, f.name), part) for f in dataclasses.fields(value)}
            )
        return value.chunk(2)[part] if torch.is_tensor(value) else value

    return half(output, 0), half(output, 1)


def unpadded(batch: dict[str, torch.Tensor]) -> bool:
    """The collate's host-side flag (`UNPADDED`): no position of a pass over the batch's texts and
    images is padding, so the pass may skip the attention mask. False for a batch without it."""
    return bool(batch.get(UNPADDED, False))


class Passes:
    """Cache of one step's backbone passes, with the step's `max_image_len` and generator.

    Args:
        max_image_len: patches kept per image in every pass (-1: all valid patches).
        generator: drives every random draw of the step (ITM negatives, patch sampling, MPP
            masks), so a seeded generator makes the step reproducible. Draws whose values the
            host reads (the ITM negatives) come from `host_generator`: the generator itself on
            a CPU, else a CPU generator of its seed, so reading them never waits for the device.
        rows: pass key -> what its readers need (`pass_rows`); a pass not named computes every
            position.
    """

    def __init__(
        self,
        max_image_len: int = -1,
        generator: torch.Generator | None = None,
        rows: Mapping[str, str] | None = None,
    ) -> None:
        self.max_image_len = max_image_len
        self.generator = generator
        self.host_generator = (
            generator
            if generator is None or generator.device.type == "cpu"
            else torch.Generator().manual_seed(generator.initial_seed())
        )
        self.rows = dict(rows or {})
        self._cache: dict[str, object] = {}

    def get(self, key: str, compute: Callable[[], T]) -> T:
        """The value cached under `key`, computed by `compute()` on first use."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]  # type: ignore[return-value]

    def put(self, key: str, value: object) -> None:
        """Cache `value` under `key` (a pass computed together with another one)."""
        self._cache[key] = value

    def pixel_values(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's normalised images, computed once per step."""
        return self.get("pixel_values", lambda: normalize_images(batch["image"], batch["pixel_mask"]))

    def max_patches(
        self, backbone: ViltBackbone, batch: dict[str, torch.Tensor], images: Sequence[int] | None = None
    ) -> int | None:
        """How many image positions a pass that keeps every patch spans, known on the host: on a
        fixed canvas (the collate's `WHOLE_CANVAS`) its whole grid, so every batch of the canvas
        has one sequence length; else the most valid patches among the batch's images (those
        numbered `images`; None: all), from the collate's ``image_sizes``. None for a batch with
        neither (then the backbone counts on the device)."""
        height, width = batch["image"].shape[-2:]
        patch = backbone.config.patch_size
        if batch.get(WHOLE_CANVAS):
            return (height // patch) * (width // patch)
        sizes = batch.get("image_sizes")
        if sizes is None:
            return None
        if images is not None:
            sizes = [sizes[i] for i in images]
        return most_valid_patches(sizes, (height, width), patch)

    def run(
        self,
        backbone: ViltBackbone,
        batch: dict[str, torch.Tensor],
        input_ids: torch.Tensor,
        image_index: torch.Tensor | None = None,
        masked_patches: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
        serves: tuple[str, ...] = (),
        max_patches: int | None = None,
    ) -> BackboneOutput:
        """One backbone pass on `input_ids` (with the batch's attention mask) and the batch's images,
        without an attention mask when the collate found nothing padded (`unpadded`).

        image_index: optional (B,) long; pair i then sees the image of pair image_index[i] (each
            image is projected to patches once, however many pairs show it).
        masked_patches, mask_token: see `ViltBackbone.image_tokens`.
        serves: the pass keys whose readers will read this output; its last block computes the
            widest rows they need (every position when none is given or one is not in `rows`).
        max_patches: see `ViltBackbone.forward`; without `image_index`, every image is in the
            pass and `max_patches` of the whole batch is taken.
        """
        if image_index is None and max_patches is None:
            max_patches = self.max_patches(backbone, batch)
        return backbone(
            input_ids,
            batch["attention_mask"],
            self.pixel_values(batch),
            batch["pixel_mask"],
            max_image_len=self.max_image_len,
            generator=self.generator,
            masked_patches=masked_patches,
            mask_token=mask_token,
            rows=self.rows_for(serves, input_ids.shape[1]),
            image_index=image_index,
            max_patches=max_patches,
            unpadded=unpadded(batch),
        )

    def rows_for(self, serves: tuple[str, ...], text_len: int) -> int | None:
        """`ViltBackbone.encode`'s `rows` for a pass serving the readers of `serves`."""
        if not serves:
            return None
        need = widest(self.rows.get(key, ALL) for key in serves)
        return {POOLED: 1, TEXT: text_len, ALL: None}[need]
