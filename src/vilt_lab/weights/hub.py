"""The Hugging Face Hub with every head: a vilt_lab checkpoint directory plus a model card.

HF transformers' ViLT classes hold one head each and none of them is ITM, so a pre-trained ViLT
(ITM + MLM) cannot travel through them whole. vilt_lab's own checkpoint layout (`config.json`
with the backbone's config and every head's build record, VQA's answer list included, and
`model.safetensors`) goes to the Hub as is, with a README.md model card; `load_pretrained` takes
a local directory or a repo id and downloads only those files. Nothing read runs code.

This module deals in checkpoints (`ViltCheckpoint`) and directories; `ViltWithHeads`'s
`from_pretrained`, `save_pretrained` and `push_to_hub` build on it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .checkpoint_io import CONFIG_NAME, WEIGHTS_NAME, ViltCheckpoint, load_checkpoint, save_checkpoint

CARD_NAME = "README.md"


def model_card(checkpoint: ViltCheckpoint, repo_id: str | None = None) -> str:
    """A model card: what the checkpoint holds and how to load it."""
    config = checkpoint.config
    heads = []
    for name, spec in sorted(checkpoint.heads.items()):
        labels = spec.get("labels")
        sizes = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "labels")
        heads.append(
            f"- `{name}`"
            + (f" ({sizes})" if sizes else "")
            + (f", {len(labels)} label names" if labels else "")
        )
    load_from = repo_id or "<this directory>"
    return "\n".join(
        [
            "---",
            "library_name: vilt_lab",
            "tags: [vision-language, vilt]",
            "---",
            "",
            "# ViLT checkpoint (vilt_lab)",
            "",
            f"Backbone: {config.num_layers} layers, width {config.hidden_size}, {config.num_heads} heads, "
            f"{config.patch_size}x{config.patch_size} patches, vocabulary {config.vocab_size}.",
            "",
            "Heads:",
            *(heads or ["- none (backbone only)"]),
            "",
            "```python",
            "from vilt_lab.weights.with_heads import ViltWithHeads",
            f'model = ViltWithHeads.from_pretrained("{load_from}")',
            "```",
            "",
        ]
    )


def save_pretrained(
    checkpoint: ViltCheckpoint, directory: str | os.PathLike, repo_id: str | None = None
) -> Path:
    """Write `checkpoint` (backbone and every head) and its model card into `directory`."""
    directory = save_checkpoint(checkpoint, directory)
    (directory / CARD_NAME).write_text(model_card(checkpoint, repo_id))
    return directory


def load_pretrained(
    name_or_path: str | os.PathLike, revision: str | None = None, cache_dir: str | os.PathLike | None = None
) -> ViltCheckpoint:
    """The checkpoint in a local directory, or in a Hub repo id whose config.json and
    model.safetensors are downloaded (into the HF cache) first."""
    path = Path(name_or_path)
    if not path.is_dir():
        from huggingface_hub import snapshot_download

        path = Path(
            snapshot_download(
                str(name_or_path),
                revision=revision,
                cache_dir=cache_dir,
                allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME],
            )
        )
    return load_checkpoint(path)


def push_to_hub(
    checkpoint: ViltCheckpoint,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "vilt_lab checkpoint",
) -> str:
    """Create `repo_id` if needed and upload `checkpoint` and its card; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        save_pretrained(checkpoint, Path(staging) / "checkpoint", repo_id=repo_id)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(Path(staging) / "checkpoint"), commit_message=commit_message
        )
    return str(commit)
