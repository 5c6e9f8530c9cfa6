"""ViLT-L/32: its ImageNet starts (`original:` and `timm:` vit_large_patch32_384) map onto
model=large32, and the pretrain_large32_14m experiment composes and validates on the 14M mix.

The weights are checked twice, without a network: at their real sizes without allocating them
(timm's ViT-L/32 384 and our backbone on the meta device: shapes and names only), and through
`model.init_from` on files the tests write, of a ViT-L/32 two blocks deep (every other size real)
so that a file stays ~100 MB.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import get_pretrained_cfg

from helpers.configs import compose_config
from helpers.images import encode_image
from vilt_lab.config.validation import ConfigError, validate_train_config
from vilt_lab.data.pipeline import Source, mix_weights
from vilt_lab.data.shards import ShardWriter, expand_shards
from vilt_lab.model import ITMHead, MLMHead, ViltBackbone
from vilt_lab.model.config import get_config
from vilt_lab.weights import original_vit as ov
from vilt_lab.weights.checkpoint_io import BACKBONE_PREFIX
from vilt_lab.weights.init_from import init_model
from vilt_lab.weights.timm_vit import vit_backbone_state

LARGE = "vit_large_patch32_384"
RELEASE_URL = (
    "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/"
    "jx_vit_large_p32_384-9b920ba8.pth"
)
# What ViLT adds to the ViT and so starts fresh (the paper's text embedder, modality types, pooler).
NOT_FROM_VIT = {
    "text_embeddings.word_embeddings.weight",
    "text_embeddings.position_embeddings.weight",
    "text_embeddings.token_type_embeddings.weight",
    "text_embeddings.LayerNorm.weight",
    "text_embeddings.LayerNorm.bias",
    "token_type_embeddings.weight",
    "pooler.dense.weight",
    "pooler.dense.bias",
}


def meta_vit(name: str):
    """timm's architecture `name` without its classifier, shapes only."""
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, num_classes=0)


def meta_backbone_shapes(size: str) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in ViltBackbone(get_config(size)).state_dict().items()}


def test_the_registry_names_googles_vit_l32_release_file() -> None:
    weights = ov.original_weights(LARGE)
    assert weights.url == RELEASE_URL
    assert weights.filename == f"jx_vit_large_p32_384-{weights.sha256}.pth"  # the published prefix
    assert weights.architecture == LARGE


def test_timm_serves_the_same_release_under_the_name() -> None:
    """timm: and original: give the same weights for ViT-L/32 384 (unlike ViT-B/32's AugReg)."""
    cfg = get_pretrained_cfg(LARGE)
    assert cfg.hf_hub_id == f"timm/{LARGE}.orig_in21k_ft_in1k"
    assert cfg.url == ov.original_weights(LARGE).url
    assert timm.list_pretrained(f"{LARGE}*") == [f"{LARGE}.orig_in21k_ft_in1k"]


def test_every_vit_l32_tensor_has_its_place_in_model_large32() -> None:
    vit = meta_vit(LARGE)
    state = vit_backbone_state(vit, LARGE, get_config("large32"))
    ours = meta_backbone_shapes("large32")
    vit_names = set(vit.state_dict())
    assert len(vit_names) == 4 + 24 * 12 + 2  # cls, pos, patch w/b; 12 per block; final norm
    assert set(state) == {BACKBONE_PREFIX + k for k in vit_names}
    for name, tensor in state.items():
        assert tensor.shape == ours[name.removeprefix(BACKBONE_PREFIX)], name
    assert set(ours) - vit_names == NOT_FROM_VIT  # everything else comes from the ViT
    assert state[BACKBONE_PREFIX + "pos_embed"].shape == (1, 1 + 12 * 12, 1024)
    assert state[BACKBONE_PREFIX + "patch_embed.proj.weight"].shape == (1024, 3, 32, 32)


@pytest.mark.parametrize(
    ("vit", "size", "wrong"),
    [
        (LARGE, "base32", "model.hidden_size: timm 1024, config 768, model.num_layers: timm 24, config 12"),
        ("vit_base_patch32_384", "large32", "model.hidden_size: timm 768, config 1024"),
        (LARGE, "base16", "model.patch_size: timm 32, config 16"),
    ],
)
def test_a_vit_of_another_size_is_refused_naming_the_keys(vit: str, size: str, wrong: str) -> None:
    with pytest.raises(ValueError, match=rf"timm model {vit} does not fit the model config \(.*{wrong}"):
        vit_backbone_state(meta_vit(vit), vit, get_config(size))


REDUCED_DEPTH = 2


@pytest.fixture
def two_block_vit_l32(monkeypatch) -> None:
    """timm builds vit_large_patch32_384 REDUCED_DEPTH blocks deep wherever vilt_lab asks for it."""
    create_model = timm.create_model

    def create_reduced(name: str, *args, **kwargs):
        if name == LARGE:
            kwargs.setdefault("depth", REDUCED_DEPTH)
        return create_model(name, *args, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_reduced)


def random_vit_l32_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random ViT-L/32 384 (REDUCED_DEPTH blocks) with its ImageNet classifier, as released."""
    torch.manual_seed(seed)
    model = timm.create_model(LARGE, pretrained=False, depth=REDUCED_DEPTH)
    with torch.no_grad():  # LayerNorms start at 1/0 and the [CLS] at 0: randomise everything
        for p in model.parameters():
            p.normal_(0, 0.02)
    return {k: v.clone() for k, v in model.state_dict().items()}


def reduced_large32() -> ViltBackbone:
    return ViltBackbone(get_config("large32", num_layers=REDUCED_DEPTH))


def assert_every_vit_tensor_loaded(model: ViltBackbone, state: dict[str, torch.Tensor], report) -> None:
    from_vit = [k for k in state if not k.startswith("head.")]
    assert len(from_vit) == 4 + REDUCED_DEPTH * 12 + 2  # cls, pos, patch w/b; 12 per block; norm
    ours = model.state_dict()
    for key in from_vit:
        assert torch.equal(ours[key], state[key]), key
    assert sorted(report.loaded) == sorted(BACKBONE_PREFIX + k for k in from_vit)
    assert set(report.new) == {BACKBONE_PREFIX + k for k in NOT_FROM_VIT}
    assert report.adapted == {} and report.unused == []  # the 12 x 12 grid of 384 / 32 as it is


def test_original_vit_l32_release_file_loads_into_model_large32(
    two_block_vit_l32, tmp_path, monkeypatch
) -> None:
    state = random_vit_l32_state()
    path = tmp_path / "jx_vit_large_p32_384-test.pth"
    torch.save(state, path)  # a plain state dict with the classifier, as the release file is
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(ov.ORIGINAL_WEIGHTS, LARGE, ov.OriginalWeights(RELEASE_URL, digest, LARGE))
    model = reduced_large32()
    report = init_model(model, {}, f"original:{LARGE}", str(path))
    assert_every_vit_tensor_loaded(model, state, report)
    assert report.source == f"original {LARGE} ({path})"


def test_timm_vit_l32_weights_load_into_model_large32(two_block_vit_l32, tmp_path) -> None:
    state = random_vit_l32_state(seed=1)
    path = tmp_path / f"{LARGE}.safetensors"
    save_file(state, str(path))  # as the Hub serves timm/vit_large_patch32_384.orig_in21k_ft_in1k
    model = reduced_large32()
    report = init_model(model, {}, f"timm:{LARGE}", str(path))
    assert_every_vit_tensor_loaded(model, state, report)

    base = ViltBackbone(get_config("base32", num_layers=REDUCED_DEPTH))
    with pytest.raises(
        ValueError,
        match=r"timm model vit_large_patch32_384 does not fit .*hidden_size: timm 1024, config 768",
    ):
        init_model(base, {}, f"timm:{LARGE}", str(path))


# pretrain_large32_14m's memory plan: bytes one block keeps for the backward, a sample, in units
# of tokens x width, and the bf16 weight copies autocast keeps beside them, in bytes a parameter.
PLAN_ACTIVATION_BYTES = 44
PLAN_WEIGHT_COPY_BYTES = 2
PLAN_TOKENS = 40 + 1 + 200  # text, image [CLS], sampled patches


def saved_for_backward(block: torch.nn.Module, batch: int, width: int) -> int:
    """Bytes of the tensors one training forward of `block` under bf16 autocast keeps for its
    backward (its parameters and input excluded: they exist anyway)."""
    x = torch.randn(batch, PLAN_TOKENS, width, requires_grad=True)
    key_mask = torch.ones(batch, PLAN_TOKENS, dtype=torch.bool)
    key_mask[:, 30:40] = False  # padded text
    kept = {p.untyped_storage().data_ptr() for p in (*block.parameters(), x)}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in kept:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
        torch.autocast("cpu", torch.bfloat16),
    ):
        block(x, key_mask)
    return sum(saved.values())


def test_the_memory_plan_counts_every_trained_parameter() -> None:
    """370.3M: the backbone, MLM's own decoder and ITM (WPA has no parameters)."""
    config = get_config("large32")
    with torch.device("meta"):
        modules = [
            ViltBackbone(config),
            MLMHead(config.hidden_size, config.vocab_size),
            ITMHead(config.hidden_size),
        ]
    backbone, mlm, itm = (sum(p.numel() for p in m.parameters()) for m in modules)
    assert (round(backbone / 1e6, 1), round(mlm / 1e6, 1), itm) == (338.0, 32.3, 2050)
    assert round((backbone + mlm + itm) / 1e6, 1) == 370.3


def test_the_memory_plan_counts_what_a_large32_block_keeps_for_its_backward() -> None:
    """The experiment file's activation arithmetic against the tensors autograd really keeps
    (on the CPU's bf16 autocast: the same casts as CUDA's; SDPA's fused kernel keeps no S x S)."""
    torch.manual_seed(0)
    block = ViltBackbone(get_config("large32", num_layers=1)).blocks[0].train()
    width = block.norm1.normalized_shape[0]
    one, two = saved_for_backward(block, 1, width), saved_for_backward(block, 2, width)
    per_sample = two - one
    assert per_sample / (PLAN_TOKENS * width) == pytest.approx(PLAN_ACTIVATION_BYTES, rel=0.05)
    weight_copies = one - per_sample
    matrices = sum(p.numel() for p in block.parameters() if p.dim() == 2)
    assert weight_copies == PLAN_WEIGHT_COPY_BYTES * matrices


# The 14M mix on disk, tiny: source -> (split dirs the converters write, captions per image).
MIX_14M = {
    "coco": (["pretrain/train", "retrieval/val"], 5),
    "vg": (["pretrain/train"], 10),
    "gcc": (["pretrain/train", "pretrain/val"], 1),
    "sbu": (["pretrain/train"], 1),
    "cc12m": (["pretrain/train"], 1),
}
PROCESSES = 8  # one node of 80 GB GPUs
IMAGES = PROCESSES  # a shard of one image each: every process gets an evaluation shard


def write_14m_roots(base: Path) -> dict[str, Path]:
    roots = {}
    for source, (splits, captions) in MIX_14M.items():
        roots[source] = base / source
        for split in splits:
            with ShardWriter(roots[source] / split, source=source, split=split, maxcount=1) as writer:
                for i in range(IMAGES):
                    texts = [f"a {source} picture {i} caption {c}" for c in range(captions)]
                    writer.write(f"{source}{i}", [encode_image((40, 32))], {"id": str(i), "captions": texts})
    return roots


def large32_14m(roots: dict[str, Path], tokenizer: Path, runs: Path, *extra: str):
    return compose_config(
        [
            "experiment=pretrain_large32_14m",
            *(f"data.roots.{source}={root}" for source, root in roots.items()),
            f"data.tokenizer={tokenizer}",
            f"paths.runs_dir={runs}",
            *extra,
        ]
    )


def test_the_experiment_is_vilt_l32_on_14m_with_the_papers_recipe() -> None:
    cfg = compose_config(["experiment=pretrain_large32_14m"])
    paper = compose_config(["experiment=pretrain_paper"])
    assert (cfg.model.size, cfg.model.init_from) == ("large32", f"original:{LARGE}")
    assert cfg.data.name == "14m" and list(cfg.data.sources) == [*paper.data.sources, "cc12m"]
    assert (cfg.trainer.global_batch_size, cfg.trainer.micro_batch_size) == (4096, 64)
    assert (cfg.trainer.precision, cfg.trainer.grad_checkpointing) == ("bf16", False)
    for group in ("objective", "schedule", "optim", "augment", "task"):  # the paper's recipe
        assert cfg[group] == paper[group], group
    assert cfg.data.caption_sampling == paper.data.caption_sampling == "per_caption"


def test_the_experiment_validates_on_one_node_of_eight(shapes_world: Path, tmp_path: Path) -> None:
    roots = write_14m_roots(tmp_path / "shards")
    cfg = large32_14m(roots, shapes_world / "tokenizer", tmp_path / "runs")
    settings = validate_train_config(cfg, world_size=PROCESSES)  # 64 x 8 accumulation steps x 8
    sources = [Source(s.urls, s.weight, name) for name, s in settings.data.sources.items()]
    weights = mix_weights(sources, [expand_shards(s.shards) for s in sources])
    captions = [IMAGES * per_image for _, per_image in MIX_14M.values()]
    assert weights == pytest.approx(tuple(c / sum(captions) for c in captions))  # uniform over captions

    odd = large32_14m(roots, shapes_world / "tokenizer", tmp_path / "runs", "trainer.micro_batch_size=48")
    with pytest.raises(ConfigError, match="global_batch_size"):
        validate_train_config(odd, world_size=PROCESSES)
    with pytest.raises(ConfigError, match=r"data.roots.cc12m"):
        validate_train_config(
            large32_14m({**roots, "cc12m": tmp_path / "none"}, shapes_world / "tokenizer", tmp_path / "runs"),
            world_size=PROCESSES,
        )
