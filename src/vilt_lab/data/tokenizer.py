"""The text tokenizer: load ``bert-base-uncased`` (paper data) or a local directory; train a small one."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerBase

_TRUE = {"1", "true", "yes", "on"}


def missing_directory(name: str) -> str | None:
    """Why ``name`` cannot be the local tokenizer directory it must mean, or None.

    A name means a directory when no Hub id could look like it: an absolute path, one starting
    with ``./``, ``../`` or ``~``, or more parts than a Hub id's ``namespace/name``. Such a name
    that is not a directory is reported as a missing path, not as a model the Hub lacks.
    """
    if Path(name).is_dir():
        return None
    means_path = (
        os.path.isabs(name)
        or name.startswith(("./", "../", "~", f".{os.sep}", f"..{os.sep}"))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
    )
    if not means_path:
        return None
    return f"tokenizer directory {name} {'is not a directory' if Path(name).exists() else 'does not exist'}"


def load_tokenizer(name_or_path: str | os.PathLike[str], key: str | None = None) -> PreTrainedTokenizerBase:
    """A fast tokenizer (whole-word masking needs its word ids) from a local directory or the Hub.

    A directory (e.g. the shapes world's ``OUT/tokenizer``) is loaded as is. A name such as
    ``bert-base-uncased`` (the paper's tokenizer) is resolved through the Hugging Face cache,
    and downloaded only when ``HF_HUB_OFFLINE`` is unset. ``key``: the config key the name came
    from (e.g. ``data.tokenizer``), for the messages.

    Raises:
        FileNotFoundError: when a name that can only be a path is not a directory.
        OSError: naming the tokenizer and the fix, when it is neither cached nor reachable.
        ValueError: when only a slow (pure Python) tokenizer exists for it.
    """
    name = os.fspath(name_or_path)
    setting = f"{key}={name!r}: " if key else ""
    if (problem := missing_directory(name)) is not None:
        raise FileNotFoundError(setting + problem)
    local = Path(name).is_dir()
    # Read at call time rather than relying on huggingface_hub's import-time constant, so a job
    # that sets HF_HUB_OFFLINE late (or a test) still gets a fast, network-free failure.
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, use_fast=True, local_files_only=local or offline)
    except OSError as err:
        if local:
            raise
        mode = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face Hub is not reachable"
        raise OSError(
            f"{setting}Tokenizer {name!r} is neither in the local Hugging Face cache nor reachable ({mode}). "
            f"Fix: pre-download it on a machine with internet (`hf download {name}`, "
            f"then copy the cache, see HF_HOME), or point the tokenizer setting to a local directory "
            f"holding tokenizer.json (e.g. `AutoTokenizer.from_pretrained({name!r}).save_pretrained(DIR)`)."
        ) from err
    if not tokenizer.is_fast:
        raise ValueError(f"Tokenizer {name!r} has no fast (Rust) version; whole-word masking needs word ids")
    return tokenizer


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONTINUATION = "##"


def learn_wordpieces(word_counts: Counter[str], vocab_size: int) -> list[str]:
    """A WordPiece vocabulary (specials, alphabet, then merged pieces) learned from word counts.

    The same procedure as ``tokenizers``' WordPieceTrainer (repeatedly merge the most frequent
    adjacent pair of pieces; non-initial pieces carry ``##``), but deterministic: ties are broken
    by the pieces themselves. The Rust trainer breaks them by ids it assigns in hash-map order, so
    the same corpus can give different vocabularies run to run (huggingface/tokenizers#1794).
    Plain Python, meant for small corpora such as the shapes world's.
    """
    words = {word: [word[0], *(CONTINUATION + c for c in word[1:])] for word in word_counts}
    vocab = [*SPECIAL_TOKENS, *sorted({piece for pieces in words.values() for piece in pieces})]
    while len(vocab) < vocab_size:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, pieces in words.items():
            for pair in zip(pieces[:-1], pieces[1:], strict=True):
                pairs[pair] += word_counts[word]
        if not pairs:
            break
        left, right = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merged = left + right.removeprefix(CONTINUATION)
        vocab.append(merged)
        for pieces in words.values():
            i = 0
            while i < len(pieces) - 1:
                if pieces[i] == left and pieces[i + 1] == right:
                    pieces[i : i + 2] = [merged]
                i += 1
    return vocab


def train_wordpiece(
    texts: Iterable[str], out_dir: str | os.PathLike[str], vocab_size: int, max_length: int = 40
) -> None:
    """Train a lower-casing BERT-style WordPiece tokenizer on ``texts`` and save it to ``out_dir``.

    The directory holds ``tokenizer.json`` and ``tokenizer_config.json`` and loads with
    :func:`load_tokenizer` or ``transformers.AutoTokenizer.from_pretrained``. Special ids are
    [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4; encodings are ``[CLS] text [SEP]`` like BERT's.
    The vocabulary comes from :func:`learn_wordpieces`, so the same texts give the same file.
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    word_counts = Counter(
        word for text in texts for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    )
    vocab = learn_wordpieces(word_counts, vocab_size)
    tokenizer = Tokenizer(models.WordPiece({piece: i for i, piece in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    # Written by hand rather than by save_pretrained: transformers 5 records its own class name
    # ("TokenizersBackend"), which transformers 4 cannot load; "PreTrainedTokenizerFast" loads in both.
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "do_lower_case": True,
        **{f"{name}_token": f"[{name.upper()}]" for name in ("pad", "unk", "cls", "sep", "mask")},
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
