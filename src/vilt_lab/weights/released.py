"""The official ViLT release (github.com/dandelin/ViLT, tag 200k): what `vilt-convert fetch` knows.

Each entry names one `.ckpt` of the release, what it was trained for, and its SHA-256. The
authors never published checksums, and this registry was written on a machine that cannot reach
GitHub, so no hash is pinned yet (`sha256=None`): `fetch` then prints the hash it computed and
records it beside the converted weights, and `--sha256` pins it on the command line. Whoever
downloads a file on a trusted network can fill its hash in here, and every later fetch is then
verified against it. Reading is safe either way: the `.ckpt` is unpickled with
`torch.load(weights_only=True)`, so a tampered file cannot run code, only fail to load.
"""

from __future__ import annotations

from dataclasses import dataclass

RELEASE_URL = "https://github.com/dandelin/ViLT/releases/download/200k"


@dataclass(frozen=True)
class ReleasedFile:
    """One file of the release: its name, what it holds and, when known, its SHA-256."""

    name: str
    filename: str
    task: str
    description: str
    sha256: str | None = None
    # Another file of the release that the conversion needs (the VQA answer list).
    companion: ReleasedFile | None = None

    @property
    def url(self) -> str:
        return f"{RELEASE_URL}/{self.filename}"


VQA_ANSWERS = ReleasedFile(
    "vqa_dict", "vqa_dict.json", "vqa", "the VQA head's answer names (index -> answer, 3,129 answers)"
)

RELEASED = {
    entry.name: entry
    for entry in (
        ReleasedFile(
            "vilt_200k_mlm_itm",
            "vilt_200k_mlm_itm.ckpt",
            "pretrain",
            "ViLT-B/32 pre-trained 200K steps on the 4M mix with ITM + whole-word MLM (ITM and MLM heads)",
        ),
        ReleasedFile(
            "vilt_vqa",
            "vilt_vqa.ckpt",
            "vqa",
            "fine-tuned on VQAv2 train+val (VQA head; answers from vqa_dict.json)",
            companion=VQA_ANSWERS,
        ),
        ReleasedFile("vilt_nlvr2", "vilt_nlvr2.ckpt", "nlvr2", "fine-tuned on NLVR2 (three modality types)"),
        ReleasedFile(
            "vilt_irtr_coco",
            "vilt_irtr_coco.ckpt",
            "irtr",
            "fine-tuned for COCO retrieval (ITM + rank_output)",
        ),
        ReleasedFile(
            "vilt_irtr_f30k",
            "vilt_irtr_f30k.ckpt",
            "irtr",
            "fine-tuned for Flickr30K retrieval (ITM + rank_output)",
        ),
    )
}


def released(name: str) -> ReleasedFile:
    """The registry entry called `name`, or a KeyError listing the names there are."""
    try:
        return RELEASED[name]
    except KeyError:
        raise KeyError(f"no released checkpoint {name!r}; the release has: {', '.join(RELEASED)}") from None
