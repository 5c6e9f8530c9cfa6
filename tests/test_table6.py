"""Table 6: the FLOP count against a hand count, ViLT-B/32's parameters against the paper, the
latency benchmark end to end on the tiny model, and result.md's rows from given numbers."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
import torch

from vilt_lab.bench.latency import LatencyResult, measure_latency
from vilt_lab.bench.table6 import Table6Measurement, load_paper_row, write_result
from vilt_lab.measure.flops import FlopCount, count_flops
from vilt_lab.measure.param_count import TABLE6_GROUP, count_parameters
from vilt_lab.model.backbone import ViltBackbone
from vilt_lab.model.config import get_config

PAPER_ROW = Path(__file__).resolve().parents[1] / "experiments" / "table6" / "paper.json"


@pytest.mark.parametrize(("max_image_len", "image_patches"), [(20, 20), (-1, 24)])
def test_flop_count_of_tiny_equals_a_hand_count_of_its_matmuls(
    max_image_len: int, image_patches: int
) -> None:
    config = get_config("tiny")
    D, F, P, layers = config.hidden_size, config.mlp_dim, config.patch_size, config.num_layers
    text_len, image_hw = 8, (64, 96)  # a 4x6 grid of 16-pixel patches
    count = count_flops(ViltBackbone(config), image_hw, max_image_len, text_len)

    tokens = text_len + 1 + image_patches  # text, image [CLS], patches
    conv_macs = 24 * (3 * P * P) * D  # the projection runs over the whole grid, before sampling
    linear_macs = layers * tokens * (D * 3 * D + D * D + D * F + F * D)  # qkv, proj, fc1, fc2
    attention_macs = layers * 2 * tokens * tokens * D  # QK^T and AV, all heads together
    assert (count.patch_projection, count.linear, count.attention) == (
        2 * conv_macs,
        2 * linear_macs,
        2 * attention_macs,
    )
    assert count.macs == conv_macs + linear_macs + attention_macs
    assert (count.sequence_length, count.patches_projected) == (tokens, 24)


def test_base32_table6_parameters_match_the_paper_within_one_percent() -> None:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        backbone = ViltBackbone(get_config("base32"))
    params = count_parameters(backbone)[TABLE6_GROUP]
    assert params / 1e6 == pytest.approx(load_paper_row(PAPER_ROW)["params_m"], rel=0.01)


def test_latency_benchmark_runs_on_the_tiny_model() -> None:
    result = measure_latency(
        ViltBackbone(get_config("tiny")), torch.device("cpu"), warmup=1, repeats=2, image_hw=(64, 96)
    )
    assert 0 < result.min_ms <= result.median_ms
    assert (result.repeats, result.image_patches, result.text_tokens) == (2, 24, 40)
    assert result.hardware["device"] == "cpu" and result.hardware["torch_threads"] >= 1
    json.dumps(result.to_dict())  # what --json prints


def test_compiled_latency_benchmark_runs_the_compiled_backbone(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--compile`: the timed calls run the graphs `compile_backbone` made during the warm-up
    (dynamo's eager backend here: the structure, not inductor's code), and the result says so."""
    from torch._dynamo.utils import counters

    from vilt_lab.bench.__main__ import build_parser
    from vilt_lab.bench.latency import COMPILED_WARMUP, compile_options_from_args

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", torch._dynamo.config.recompile_limit)
    torch._dynamo.reset()
    counters.clear()
    graph_calls = []

    def backend(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):
        def run(*args: torch.Tensor):
            graph_calls.append(graph)
            return graph.forward(*args)

        return run

    backbone = ViltBackbone(get_config("tiny"))
    result = measure_latency(
        backbone, torch.device("cpu"), repeats=2, image_hw=(64, 96), compile_options={"backend": backend}
    )
    torch._dynamo.reset()
    # Every call (warm-up and timed): the visual embedding's one graph and each block's.
    assert len(graph_calls) == (COMPILED_WARMUP + 2) * (1 + len(backbone.blocks))
    assert counters["stats"]["unique_graphs"] <= 1 + len(backbone.blocks)  # compiled in the first call
    assert (result.compiled, result.compile_mode, result.warmup) == (True, None, COMPILED_WARMUP)
    assert json.loads(json.dumps(result.to_dict()))["compiled"] is True
    assert "the compile among them" in result.line()
    with pytest.raises(ValueError, match=f"warmup >= {COMPILED_WARMUP}"):
        measure_latency(
            backbone, torch.device("cpu"), warmup=1, repeats=1, compile_options={"backend": backend}
        )

    def options(*argv: str):
        return compile_options_from_args(build_parser().parse_args(["latency", *argv]))

    assert options() is None
    assert options("--compile") == {"mode": None}
    assert options("--compile", "--compile-mode", "reduce-overhead") == {"mode": "reduce-overhead"}
    with pytest.raises(ValueError, match="needs --compile"):
        options("--compile-mode", "reduce-overhead")
    # --json prints the JSON; --json PATH writes it there (as bench/gpu_check.sh asks).
    assert [
        build_parser().parse_args(["latency", *argv]).json for argv in ([], ["--json"], ["--json", "x.json"])
    ] == [
        None,
        "-",
        "x.json",
    ]


def test_table6_writes_result_md_with_every_row(tmp_path: Path) -> None:
    ours = Table6Measurement(
        params=87_528_192,
        flops=FlopCount(
            patch_projection=1_132_462_080,
            linear=40_938_504_192,
            attention=2_141_097_984,
            text_tokens=40,
            image_patches=200,
            patches_projected=240,
            image_hw=(384, 640),
        ),
        latency=LatencyResult(
            median_ms=30.0,
            mean_ms=31.0,
            min_ms=29.0,
            repeats=10,
            warmup=2,
            dtype="float32",
            image_hw=(384, 640),
            text_tokens=40,
            image_patches=240,
            hardware={
                "device": "cpu",
                "cpu": "AMD Test CPU",
                "cpu_cores": 2,
                "torch_threads": 2,
                "load_average": 0.5,
                "torch": "2.x",
            },
        ),
    )
    out = tmp_path / "table6" / "result.md"
    text = write_result(out, load_paper_row(PAPER_ROW), ours, datetime.date(2026, 1, 2))
    assert out.read_text() == text
    header, *rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert header == "| ViLT-B/32 | paper | ours | difference |"
    assert len(rows) == 4
    params, flops, macs, time = rows
    assert params.startswith("| #Params (M)") and "| 87.4 | 87.53 | +0.13 (+0.1%) |" in params
    assert "200 image + 40 text tokens" in flops and "| 55.9 | 44.21 | -11.69 (-20.9%) |" in flops
    assert "multiply-adds" in macs and "| 22.11 |" in macs
    assert "384x640 image (240 patches)" in time and "~15 on NVIDIA P40" in time and "2.0x" in time
    assert "2026-01-02" in text and "AMD Test CPU" in text
