"""conf/data: every data config composes with train.yaml; the 4M mix follows caption counts."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import ListConfig

from helpers.configs import compose_config, train_settings
from helpers.images import encode_image
from vilt_lab.build.data import build_streams, build_tokenizer, loader_config
from vilt_lab.build.task import build_task
from vilt_lab.config.paths import CONF_DIR
from vilt_lab.data.pipeline import ResampledMix
from vilt_lab.data.shards import ShardWriter

DATA_CONFIGS = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))
PAPER_SOURCES = {"coco", "vg", "gcc", "sbu", "f30k", "vqav2", "nlvr2"}
CPU_PROCESS = SimpleNamespace(process_index=0, num_processes=1, device=torch.device("cpu"))

# source -> (split dirs the converters write and the 4m config reads, images, captions per image)
MIX_LAYOUT = {
    "coco": (["pretrain/train", "retrieval/val"], 4, 5),
    "vg": (["pretrain/train"], 3, 10),
    "gcc": (["pretrain/train", "pretrain/val"], 6, 1),
    "sbu": (["pretrain/train"], 4, 1),
}


def _as_list(urls: str | ListConfig) -> list[str]:
    return [urls] if isinstance(urls, str) else list(urls)


def test_every_source_and_the_mix_has_a_config() -> None:
    assert {*PAPER_SOURCES, "4m", "shapes"} <= set(DATA_CONFIGS)


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_data_config_composes_with_train(name: str, tmp_path: Path) -> None:
    cfg = compose_config([f"data={name}", f"paths.runs_dir={tmp_path}", f"paths.data_dir={tmp_path}/data"])
    data = cfg.data
    assert data.name == name and data.sources
    for source in data.sources.values():
        assert source.urls and "weight" in source
        assert all(url.startswith(f"{tmp_path}/data/") for url in _as_list(source.urls))
    config = loader_config(cfg, patch_size=32, rank=0, world_size=1, pin_memory=False)
    assert config.max_text_len == 40
    if not name.startswith("shapes"):  # the paper's settings
        assert (data.tokenizer, data.image_shorter, data.image_longer) == ("bert-base-uncased", 384, 639)
        assert (config.image_shorter, config.image_longer) == (384, 639)
        assert data.resampled == (len(data.sources) > 1)


@pytest.mark.parametrize("name", sorted(PAPER_SOURCES))
def test_a_source_root_moves_all_its_splits(name: str, tmp_path: Path) -> None:
    cfg = compose_config([f"data={name}", f"paths.runs_dir={tmp_path}", "data.root=/shards/x"])
    splits = _as_list(cfg.data.sources[name].urls)
    splits += [
        url for key in ("val_urls", "test_urls") if cfg.data.get(key) for url in _as_list(cfg.data[key])
    ]
    assert splits and all(url.startswith("/shards/x/") for url in splits)


def _write_mix_roots(base: Path) -> dict[str, Path]:
    roots = {}
    for source, (splits, images, captions) in MIX_LAYOUT.items():
        roots[source] = base / source
        for split in splits:
            with ShardWriter(roots[source] / split, source=source, split=split, maxcount=2) as writer:
                for i in range(images):
                    texts = [f"a red square number {i} caption {c}" for c in range(captions)]
                    writer.write(f"{source}{i}", [encode_image((40, 32))], {"id": str(i), "captions": texts})
    return roots


def _mix_config(roots: dict[str, Path], tokenizer: Path, runs: Path, *extra: str):
    """The 4M mix over ``roots``, as the typed settings the builders take."""
    return train_settings(
        compose_config(
            [
                "data=4m",
                *(f"data.roots.{source}={root}" for source, root in roots.items()),
                f"data.tokenizer={tokenizer}",
                f"paths.runs_dir={runs}",
                "model=tiny",
                "data.num_workers=0",
                "data.shuffle_buffer=8",
                "data.image_shorter=32",
                "data.image_longer=64",
                "trainer.micro_batch_size=4",
                *extra,
            ]
        )
    )


def test_4m_mix_follows_caption_counts_and_overrides(shapes_world: Path, tmp_path: Path) -> None:
    roots = _write_mix_roots(tmp_path / "shards")
    cfg = _mix_config(roots, shapes_world / "tokenizer", tmp_path)
    tokenizer = build_tokenizer(cfg)
    module = build_task(cfg, tokenizer)
    train_stream, evaluators = build_streams(cfg, tokenizer, CPU_PROCESS, module)
    loader = train_stream(0)
    assert isinstance(loader.stream.shards, ResampledMix)
    captions = {s: images * per_image for s, (_, images, per_image) in MIX_LAYOUT.items()}
    total = sum(captions.values())
    assert loader.stream.shards.weights == pytest.approx(tuple(c / total for c in captions.values()))
    batch = next(iter(loader))
    assert batch["image"].shape[:2] == (4, 3) and batch["input_ids"].shape[0] == 4
    assert batch["input_ids"].shape[1] <= 40
    # Held out: COCO val and GCC val, every sample once.
    assert (
        sum(len(b["input_ids"]) for b in evaluators["eval"].batches())
        == MIX_LAYOUT["coco"][1] + MIX_LAYOUT["gcc"][1]
    )

    weights = {"coco": 1, "vg": 1, "gcc": 2, "sbu": 4}
    cfg = _mix_config(
        roots,
        shapes_world / "tokenizer",
        tmp_path,
        *(f"data.sources.{s}.weight={w}" for s, w in weights.items()),
    )
    loader = build_streams(cfg, tokenizer, CPU_PROCESS, module)[0](0)
    assert loader.stream.shards.weights == pytest.approx((0.125, 0.125, 0.25, 0.5))

    cfg = _mix_config(roots, shapes_world / "tokenizer", tmp_path, "data.sources.gcc.weight=2")
    with pytest.raises(ValueError, match=r"not for \['coco', 'vg', 'sbu'\]"):
        build_streams(cfg, tokenizer, CPU_PROCESS, module)[0](0)
