"""The Python API: a checkpoint by name or path -> the model, its image preprocessing, its tokenizer.

    import vilt_lab

    model, preprocess, tokenizer = vilt_lab.create_model_and_transforms("runs/demo")
    pixels = preprocess("scene.png")              # {"pixel_values", "pixel_mask"}, a batch of one
    max_len = model.backbone.config.max_text_len  # the text positions the model has
    text = tokenizer(["two red squares"], truncation=True, max_length=max_len, return_tensors="pt")
    logits = model("itm", text["input_ids"], text["attention_mask"], **pixels)
    match = logits.softmax(-1)[:, 1]              # ITM: class 1 is "the caption matches"

`create_model_and_transforms` says what it takes and gives; `ViltWithHeads.from_pretrained`
(through `vilt_lab.ViltWithHeads`, which imports this module) reads the same local checkpoints.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from .build.task import read_checkpoint
from .predict.predictor import Predictor
from .predict.preprocess import Preprocess, input_settings
from .weights.checkpoint_io import is_checkpoint_dir
from .weights.download import DownloadError, default_cache_dir
from .weights.fetch import fetch_released
from .weights.released import RELEASED
from .weights.with_heads import ViltWithHeads, use_checkpoint_reader

# `ViltWithHeads.from_pretrained` reads what this API reads: a run's checkpoints are rebuilt by the
# task builders, a room above the model class's (see `weights.with_heads`).
use_checkpoint_reader(read_checkpoint)


class PretrainedUnavailableError(OSError):
    """A released checkpoint that is neither cached nor downloadable; the message says what to do."""


def list_pretrained() -> list[str]:
    """The released checkpoints' names, each one `create_model_and_transforms` takes."""
    return list(RELEASED)


def released_checkpoint(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The converted checkpoint directory of the released checkpoint `name`, fetched on first use."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "released"
    entry, out = RELEASED[name], cache / name
    if is_checkpoint_dir(out):  # converted by an earlier call (its config.json is written last)
        return out
    try:
        fetch_released(entry, out, cache, progress=True, note=lambda _: None)
    except DownloadError as err:
        raise PretrainedUnavailableError(
            f"released checkpoint {name!r} could not be downloaded from {entry.url} ({err}). "
            f"Offline, download {entry.filename} elsewhere and pass the file instead: "
            f"create_model_and_transforms('path/to/{entry.filename}')"
        ) from err
    return out


def create_model_and_transforms(
    name_or_path: str | os.PathLike,
    tokenizer: str | None = None,
    shorter: int | None = None,
    longer: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[ViltWithHeads, Preprocess, PreTrainedTokenizerBase]:
    """(model, preprocess, tokenizer) of a checkpoint, ready to predict (`vilt_lab.api` shows one).

    name_or_path: anything vilt_lab reads:
      - a training run dir: its selected checkpoint (the best one when the run selected on a
        metric, else its newest complete one), with the run's tokenizer and resize;
      - a run's `checkpoints/step_N`: that checkpoint, with its run's tokenizer and resize;
      - a vilt_lab checkpoint directory (`model.safetensors` + `config.json`: `vilt-convert`'s,
        `save_pretrained`'s), with the tokenizer and resize it records (`vilt-convert run`
        copies the run's), else the released checkpoints' (bert-base-uncased, 384 / 639);
      - an official ViLT `.ckpt` file (read weights-only), with the released checkpoints' inputs;
      - a released checkpoint's name (`list_pretrained()`), downloaded and converted once into
        `cache_dir` (default `$XDG_CACHE_HOME/vilt_lab/released`).
    tokenizer, shorter, longer: a tokenizer name or directory and the resize's shorter and longer
      side, overriding what the checkpoint records (as `vilt-predict`'s flags do).

    Returns the model, a `ViltWithHeads` in eval mode (its heads: `sorted(model.heads)`;
    `model(head, ...)` documents each head's logits); `preprocess`, which decodes, resizes and
    normalises an image (a path or a PIL image) into `pixel_values` and `pixel_mask` exactly as
    `vilt-eval` and `vilt-predict` do; and the tokenizer.
    """
    path = Path(name_or_path)
    if not path.exists() and str(name_or_path) in RELEASED:
        path = released_checkpoint(str(name_or_path), cache_dir)
    predictor = Predictor.load(
        read_checkpoint(path), str(name_or_path), input_settings(path, tokenizer, shorter, longer)
    )
    return predictor.model, predictor.preprocess, predictor.tokenizer
