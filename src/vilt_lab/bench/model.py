"""Model speed against HF transformers' ViLT, in one process, on the same weights.

Our ViLT-B/32 (random weights, built as `vilt-train` builds it) is converted to HF `ViltModel`
with `weights.hf.to_hf`, so both sides run the same numbers. Each workload times ours and HF
in interleaved rounds (`model_timing.interleaved_rounds`) and reports the medians:

1. pretrain: one optimizer step of ITM + MLM (forward, backward, AdamW), 200 patches sampled
   from a 384x640 image, 40-token text. Ours: our trainer's step on the task module
   (`model_pretrain`); HF: ViltModel + ITM Linear + MLM head, two passes, as a
   user of HF writes it (`model_hf.HFPretrain`). Samples/s, FLOPs counted by FlopCounterMode (each side
   its own), MFU against this device's measured dense matmul rate, memory (parameters and
   optimizer state plus the step's peak). WPA (ours, weight 0.1, IPOT 50 iterations) is a row of
   its own: HF has no WPA.
2. latency: B=1, 384x640 image (240 patches) + 40-token text, visual embedding + transformer
   (the paper's Table 6 timing; ours through `bench.latency`, HF through its own modules).
3. throughput: pairs/s of a full forward plus a score head at B=256 (GPU).
4. retrieval: exact image x text scoring, our evaluation engine against the official algorithm
   on HF (`model_retrieval`); both must give the same scores (fp32 with TF32 off: within 1e-4); projected
   wall time of exact F30K (1K x 5K) and COCO (5K x 25K) here.

It also prints how many loader cores one device needs at our step rate (from the loader
benchmark's images/s/core), so `data.num_workers` can be sized.

On a GPU everything runs under bf16 autocast, as the baseline (TF32 for what stays fp32), at
the issue's sizes (`GPU_SIZES`: pre-training B=128, throughput B=256, retrieval 8 images x 1024
captions). On a CPU (fp32) the sizes are cut to finish in under 10 minutes of 2 cores
(`CPU_SIZES`): pre-training at B=2 (3 rounds of 1 step), latency at its real B=1 size,
throughput at B=8 instead of 256, retrieval 1 image x 64 captions (one text batch; each pair is
a full ~40 GFLOP forward). `--tiny` runs every row on the tiny model in seconds (the test
suite; the figures mean nothing there).

    python -m vilt_lab.bench model                      # make bench-model
    python -m vilt_lab.bench model --tiny --json out.json
    python -m vilt_lab.bench model --set trainer.compile=true    # a lever switched on, our side
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import transformers
from accelerate import Accelerator
from torch import nn

from vilt_lab.bench import model_retrieval as retrieval
from vilt_lab.bench.hardware import describe_hardware, hardware_line
from vilt_lab.bench.latency import time_visual_embedding_and_transformer
from vilt_lab.bench.model_hf import (
    hf_pretrain_batch,
    hf_pretrain_from_ours,
    hf_text_embeds,
    hf_visual_embedding_and_transformer,
)
from vilt_lab.bench.model_pretrain import (
    OurStep,
    build_ours,
    compose_pretrain_config,
    count_step_flops,
    pretrain_batch,
)
from vilt_lab.bench.model_timing import (
    interleaved_rounds,
    matmul_peak_flops,
    state_bytes,
    step_memory_growth,
)
from vilt_lab.measure.dummy_inputs import TABLE6_IMAGE_HW, TABLE6_IMAGE_TOKENS, TABLE6_TEXT_LEN, dummy_inputs
from vilt_lab.model import RetrievalHead, get_config
from vilt_lab.weights.hf import to_hf

# The fp32 tolerance on retrieval scores: both sides compute the same function in a different
# order (fused qkv vs three Linears, SDPA vs HF's attention, texts padded to 40 vs to their
# batch's longest: padded keys get exactly zero weight either way), so they differ by float32
# rounding, ~1e-6 on scores of order 1; 1e-4 leaves two orders of margin and still catches any
# real difference (a wrong mask or a missing embedding moves scores by 1e-2 or more). It holds
# for IEEE fp32 only: `model_retrieval.fp32_score_difference` turns TF32 off around the check.
FP32_SCORE_TOLERANCE = 1e-4
# bf16 rounds each activation to 8 bits of mantissa (~4e-3 relative), so a GPU run compares its
# scores on a small set in fp32 (the tolerance above) and only reports the bf16 difference.


@dataclass(frozen=True)
class Sizes:
    """What each workload runs at; one preset per device type, `TINY` for the test suite."""

    model: str
    image_hw: tuple[int, int]
    text_len: int
    max_image_len: int
    pretrain_batch: int
    pretrain_rounds: int
    pretrain_steps_per_round: int
    pretrain_warmup: int
    latency_rounds: int
    latency_calls_per_round: int
    latency_warmup: int
    throughput_batch: int
    throughput_rounds: int
    throughput_calls_per_round: int
    retrieval_images: int
    retrieval_texts: int
    retrieval_image_hw: tuple[int, int]
    retrieval_rounds: int
    retrieval_warmup: int
    matmul_size: int


GPU_SIZES = Sizes(
    model="base32",
    image_hw=TABLE6_IMAGE_HW,
    text_len=TABLE6_TEXT_LEN,
    max_image_len=TABLE6_IMAGE_TOKENS,
    pretrain_batch=128,
    pretrain_rounds=5,
    pretrain_steps_per_round=5,
    pretrain_warmup=3,
    latency_rounds=5,
    latency_calls_per_round=100,
    latency_warmup=30,
    throughput_batch=256,
    throughput_rounds=5,
    throughput_calls_per_round=5,
    retrieval_images=8,
    retrieval_texts=1024,
    retrieval_image_hw=retrieval.RETRIEVAL_IMAGE_HW,
    retrieval_rounds=3,
    retrieval_warmup=1,
    matmul_size=8192,
)
CPU_SIZES = replace(
    GPU_SIZES,
    pretrain_batch=2,
    pretrain_rounds=3,
    pretrain_steps_per_round=1,
    pretrain_warmup=0,  # the FLOP-counted step already warmed each side up
    latency_rounds=3,
    latency_calls_per_round=2,
    latency_warmup=1,
    throughput_batch=8,
    throughput_rounds=3,
    throughput_calls_per_round=1,
    # A pair is a full ~40 GFLOP forward: 64 pairs take about a minute a side on 2 cores.
    retrieval_images=1,
    retrieval_texts=64,
    retrieval_rounds=3,
    retrieval_warmup=0,
    matmul_size=2048,
)
TINY_SIZES = Sizes(
    model="tiny",
    image_hw=(64, 96),
    text_len=TABLE6_TEXT_LEN,
    max_image_len=16,
    pretrain_batch=4,
    pretrain_rounds=1,
    pretrain_steps_per_round=1,
    pretrain_warmup=1,
    latency_rounds=1,
    latency_calls_per_round=1,
    latency_warmup=1,
    throughput_batch=4,
    throughput_rounds=1,
    throughput_calls_per_round=1,
    retrieval_images=2,
    retrieval_texts=70,  # more than one text batch of 64
    retrieval_image_hw=(64, 96),
    retrieval_rounds=1,
    retrieval_warmup=0,
    matmul_size=256,
)
WORKLOAD_ORDER = ("latency", "throughput", "retrieval", "pretrain")  # the pre-training line last
UNITS = {"pretrain": "samples/s", "latency": "ms", "throughput": "pairs/s", "retrieval": "pairs/s"}


@dataclass
class Row:
    """One line of the table: a figure for ours and HF and how many times better ours is."""

    name: str
    ours: float | str | None
    hf: float | str | None
    unit: str
    ratio: float | None = None
    note: str = ""


def fmt(value: float | str | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if unit == "ms" or abs(value) < 10:
        return f"{value:.3g}" if abs(value) < 0.1 else f"{value:.2f}"
    return f"{value:,.1f}"


def speedup(ours_rate: float, hf_rate: float) -> float:
    """Ours over HF for a rate (higher is better)."""
    return ours_rate / hf_rate


class Bench:
    """Builds both sides once and runs each workload; results go into ``self.results``."""

    def __init__(
        self,
        sizes: Sizes,
        device: torch.device,
        overrides: Sequence[str] = (),
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.sizes, self.device, self.overrides = sizes, device, list(overrides)
        self.log = log or (lambda line: print(line, flush=True))
        self.cuda = device.type == "cuda"
        self.dtype_note = "bf16 autocast" if self.cuda else "fp32"
        self.results: dict[str, Any] = {}
        self.rows: list[Row] = []

    def autocast(self) -> AbstractContextManager[Any]:
        """bf16 autocast on a GPU, as the baseline; nothing on a CPU (fp32)."""
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else nullcontext()

    # ----------------------------------------------------------------------- pre-training
    def pretrain(self, peak_flops: float) -> None:
        """ITM + MLM steps, ours vs HF, then the WPA row (ours only)."""
        s, device = self.sizes, self.device
        accelerator = Accelerator(cpu=not self.cuda, mixed_precision="bf16" if self.cuda else "no")
        cfg = compose_pretrain_config(s.model, ["itm", "mlm"], s.pretrain_batch, self.overrides)
        vocab = get_config(s.model).vocab_size
        ours = build_ours(cfg, vocab)
        hf = hf_pretrain_from_ours(
            ours.backbone,
            ours.objectives["itm"].head,
            ours.objectives["mlm"].head,
            s.max_image_len,
            s.text_len,
        ).to(device)
        # WPA on the same weights: the task module of objective=[itm,mlm,wpa] (WPA holds none).
        cfg_wpa = compose_pretrain_config(s.model, ["itm", "mlm", "wpa"], s.pretrain_batch, self.overrides)
        ours_wpa = build_ours(cfg_wpa, vocab)
        ours_wpa.load_state_dict(ours.state_dict())
        our_step = OurStep(cfg, ours, accelerator)
        wpa_step = OurStep(cfg_wpa, ours_wpa, accelerator)
        # The baseline's optimizer: one AdamW group, fused on CUDA.
        hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=self.cuda)
        batch, itm_labels = pretrain_batch(vocab, s.pretrain_batch, s.image_hw, s.text_len, device)
        hf_args = hf_pretrain_batch(batch, itm_labels)

        def hf_step() -> None:
            with self.autocast():
                loss = hf(*hf_args)
            loss.backward()
            hf_opt.step()
            hf_opt.zero_grad(set_to_none=True)

        def ours_call() -> None:
            our_step(batch)

        def wpa_call() -> None:
            wpa_step(batch)

        self.log(
            f"pretrain: B={s.pretrain_batch}, {s.max_image_len} patches of a {s.image_hw[0]}x{s.image_hw[1]} "
            f"image + {s.text_len} text tokens, {self.dtype_note}; {s.pretrain_rounds} rounds x "
            f"{s.pretrain_steps_per_round} steps after a FLOP-counted step and {s.pretrain_warmup} warm-up"
        )
        # First steps counted (they also warm up and create the optimizer state).
        flops = {"ours": count_step_flops(ours_call), "hf": count_step_flops(hf_step)}
        flops_wpa = count_step_flops(wpa_call)
        timings = interleaved_rounds(
            {"ours": ours_call, "hf": hf_step, "ours_wpa": wpa_call},
            device,
            s.pretrain_rounds,
            s.pretrain_steps_per_round,
            s.pretrain_warmup,
        )
        memory = {}
        for name, fn, module, opt in (
            ("ours", ours_call, our_step.trainer.model, our_step.trainer.optimizer),
            ("hf", hf_step, hf, hf_opt),
            ("ours_wpa", wpa_call, wpa_step.trainer.model, wpa_step.trainer.optimizer),
        ):
            growth, how = step_memory_growth(fn, device)
            held = state_bytes(module, opt)
            memory[name] = {
                "state_gib": held / 2**30,
                "step_peak_gib": None if growth is None else growth / 2**30,
                "total_gib": None if growth is None else (held + growth) / 2**30,
                "how": how,
            }
        rate = {name: s.pretrain_batch / t.median_s for name, t in timings.items()}
        per_sample = {name: n / s.pretrain_batch for name, n in {**flops, "ours_wpa": flops_wpa}.items()}
        mfu = {name: per_sample[name] * rate[name] / peak_flops for name in rate}
        self.results["pretrain"] = {
            "batch_size": s.pretrain_batch,
            "samples_per_s": rate,
            "step_seconds": {name: t.seconds for name, t in timings.items()},
            "flops_per_sample": per_sample,
            "mfu": mfu,
            "memory": memory,
            "optimizer_ours": type(our_step.trainer.optimizer).__name__,
        }
        self.rows += [
            Row(
                "pretrain ITM+MLM step",
                rate["ours"],
                rate["hf"],
                "samples/s",
                speedup(rate["ours"], rate["hf"]),
            ),
            Row(
                "  FLOPs per sample (counted, fwd+bwd)",
                per_sample["ours"] / 1e9,
                per_sample["hf"] / 1e9,
                "GFLOP",
                note="each side's own count",
            ),
            Row("  MFU", f"{mfu['ours']:.1%}", f"{mfu['hf']:.1%}", "", mfu["ours"] / mfu["hf"]),
            Row(
                f"  memory: params + optimizer + step peak ({memory['ours']['how']})",
                memory["ours"]["total_gib"],
                memory["hf"]["total_gib"],
                "GiB",
                None
                if memory["ours"]["total_gib"] is None
                else memory["hf"]["total_gib"] / memory["ours"]["total_gib"],
                note="ratio: HF / ours",
            ),
            Row(
                "pretrain ITM+MLM+WPA step",
                rate["ours_wpa"],
                "n/a (HF has no WPA)",
                "samples/s",
                note=f"MFU {mfu['ours_wpa']:.1%}, {per_sample['ours_wpa'] / 1e9:.1f} GFLOP/sample",
            ),
        ]
        self._line_values["pretrain"] = (rate["ours"], rate["hf"], speedup(rate["ours"], rate["hf"]))
        self.log(
            f"  done: ours {rate['ours']:.3g} samples/s, HF {rate['hf']:.3g}, ours with WPA {rate['ours_wpa']:.3g}"
        )
        # The eval workloads reuse this backbone (its weights), in eval mode, without optimizers:
        # the trainers, optimizers and the HF copy go with this frame.
        self.backbone = ours.backbone
        self.itm_head = ours.objectives["itm"].head

    # ----------------------------------------------------------------------- inference
    def inference(self) -> None:
        """Latency at B=1 and throughput at the preset batch, ours vs HF, same weights."""
        s, device = self.sizes, self.device
        backbone = self.backbone.to(device).eval()
        hf = to_hf(backbone).to(device).eval()
        score = nn.Linear(backbone.config.hidden_size, 1).to(device)
        inputs = dummy_inputs(backbone.config, s.image_hw, s.text_len).to(device, torch.float32)
        with torch.inference_mode():
            with self.autocast():
                our_text = backbone.embed_text(inputs.input_ids)
                hf_text = hf_text_embeds(hf, inputs.input_ids)

            def ours_latency() -> None:
                with self.autocast():
                    time_visual_embedding_and_transformer(
                        backbone,
                        our_text,
                        inputs.attention_mask,
                        inputs.pixel_values,
                        inputs.pixel_mask,
                        0,
                        1,
                    )

            def hf_latency() -> None:
                with self.autocast():
                    hf_visual_embedding_and_transformer(
                        hf, hf_text, inputs.attention_mask, inputs.pixel_values, inputs.pixel_mask
                    )

            latency = interleaved_rounds(
                {"ours": ours_latency, "hf": hf_latency},
                device,
                s.latency_rounds,
                s.latency_calls_per_round,
                s.latency_warmup,
            )
            many = dummy_inputs(backbone.config, s.image_hw, s.text_len, batch_size=s.throughput_batch).to(
                device, torch.float32
            )

            def ours_forward() -> None:
                with self.autocast():
                    score(
                        backbone(
                            many.input_ids,
                            many.attention_mask,
                            many.pixel_values,
                            many.pixel_mask,
                            rows=1,  # a pair score reads the pooled [CLS] only
                        ).pooled
                    )

            def hf_forward() -> None:
                with self.autocast():
                    score(
                        hf(
                            input_ids=many.input_ids,
                            attention_mask=many.attention_mask,
                            pixel_values=many.pixel_values,
                            pixel_mask=many.pixel_mask,
                        ).pooler_output
                    )

            throughput = interleaved_rounds(
                {"ours": ours_forward, "hf": hf_forward},
                device,
                s.throughput_rounds,
                s.throughput_calls_per_round,
                1,
            )
        ms = {name: t.median_s * 1e3 for name, t in latency.items()}
        pairs = {name: s.throughput_batch / t.median_s for name, t in throughput.items()}
        self.results["latency"] = {"median_ms": ms, "seconds": {n: t.seconds for n, t in latency.items()}}
        self.results["throughput"] = {
            "batch_size": s.throughput_batch,
            "pairs_per_s": pairs,
            "seconds": {n: t.seconds for n, t in throughput.items()},
        }
        h, w = s.image_hw
        patches = (h // backbone.config.patch_size) * (w // backbone.config.patch_size)
        self.rows += [
            Row(
                f"latency B=1, {h}x{w} ({patches} patches) + {s.text_len} text, visual emb. + transformer",
                ms["ours"],
                ms["hf"],
                "ms",
                ms["hf"] / ms["ours"],
            ),
            Row(
                f"throughput B={s.throughput_batch}",
                pairs["ours"],
                pairs["hf"],
                "pairs/s",
                speedup(pairs["ours"], pairs["hf"]),
            ),
        ]
        self._line_values["latency"] = (ms["ours"], ms["hf"], ms["hf"] / ms["ours"])
        self.log(
            f"inference ({self.dtype_note}): latency ours {ms['ours']:.3g} ms, HF {ms['hf']:.3g}; "
            f"throughput B={s.throughput_batch} ours {pairs['ours']:.3g} pairs/s, HF {pairs['hf']:.3g}"
        )
        self._line_values["throughput"] = (pairs["ours"], pairs["hf"], speedup(pairs["ours"], pairs["hf"]))
        self.hf = hf

    # ----------------------------------------------------------------------- retrieval
    def retrieval(self) -> None:
        """Exact scoring, our engine vs the official algorithm on HF; same scores checked."""
        s, device = self.sizes, self.device
        backbone, hf = self.backbone, self.hf
        head = RetrievalHead(backbone.config.hidden_size).to(device)
        head.copy_itm_match_row(self.itm_head.fc.weight, self.itm_head.fc.bias)  # zero-shot retrieval
        data = retrieval.retrieval_data(
            s.retrieval_images,
            s.retrieval_texts,
            backbone.config.vocab_size,
            s.text_len,
            device,
            s.retrieval_image_hw,
        )
        scores: dict[str, torch.Tensor] = {}

        def ours() -> None:
            scores["ours"] = retrieval.ours_scores(backbone, head, data, self.autocast)

        def theirs() -> None:
            scores["hf"] = retrieval.hf_scores(hf, head, data, self.autocast)

        timings = interleaved_rounds(
            {"ours": ours, "hf": theirs}, device, s.retrieval_rounds, 1, s.retrieval_warmup
        )
        difference = retrieval.score_difference(scores["ours"], scores["hf"])
        if self.cuda:
            # The check in fp32 (TF32 off) on a few pairs; the timed bf16 difference is reported
            # beside it.
            check = retrieval.retrieval_data(
                2, 128, backbone.config.vocab_size, s.text_len, device, s.retrieval_image_hw
            )
            fp32_difference = retrieval.fp32_score_difference(backbone, hf, head, check)
        else:  # the timed run was the fp32 check: a CPU run leaves matmuls at torch's IEEE default
            fp32_difference = difference
        agree = fp32_difference <= FP32_SCORE_TOLERANCE
        pairs = {name: data.pairs / t.median_s for name, t in timings.items()}
        projected = {name: retrieval.projected_seconds(rate) for name, rate in pairs.items()}
        self.results["retrieval"] = {
            "images": s.retrieval_images,
            "texts": s.retrieval_texts,
            "image_hw": s.retrieval_image_hw,
            "mean_text_tokens": data.mean_text_len,
            "pairs_per_s": pairs,
            "seconds": {n: t.seconds for n, t in timings.items()},
            "max_abs_score_difference": difference,
            "fp32_max_abs_score_difference": fp32_difference,
            "tolerance_fp32": FP32_SCORE_TOLERANCE,
            "scores_agree": agree,
            "projected_seconds": projected,
        }
        h, w = s.retrieval_image_hw
        self.rows.append(
            Row(
                f"retrieval {s.retrieval_images} x {s.retrieval_texts} ({h}x{w}, captions {data.mean_text_len:.1f} tokens)",
                pairs["ours"],
                pairs["hf"],
                "pairs/s",
                speedup(pairs["ours"], pairs["hf"]),
            )
        )
        self.rows.append(
            Row(
                "  same scores: max |ours - HF| (fp32)",
                f"{fp32_difference:.2e}",
                f"<= {FP32_SCORE_TOLERANCE:g}: {'yes' if agree else 'NO'}",
                "",
                note="" if not self.cuda else f"bf16 timed run: {difference:.2e}",
            )
        )
        for split in retrieval.EXACT_SPLITS:
            self.rows.append(
                Row(
                    f"  projected exact {split}",
                    hours(projected["ours"][split]),
                    hours(projected["hf"][split]),
                    "",
                    projected["hf"][split] / projected["ours"][split],
                )
            )
        self._line_values["retrieval"] = (pairs["ours"], pairs["hf"], speedup(pairs["ours"], pairs["hf"]))
        self.log(
            f"retrieval ({self.dtype_note}): ours {pairs['ours']:.3g} pairs/s, HF {pairs['hf']:.3g}; "
            f"max |ours - HF| {fp32_difference:.2e} in fp32"
        )

    def run(self, peak_flops: float) -> None:
        self._line_values: dict[str, tuple[float, float, float]] = {}
        self.pretrain(peak_flops)
        self.inference()
        self.retrieval()
        if not self.results["retrieval"]["scores_agree"]:
            raise RuntimeError(
                f"retrieval scores differ: max |ours - HF| = "
                f"{self.results['retrieval']['fp32_max_abs_score_difference']:.3g} > {FP32_SCORE_TOLERANCE}"
            )

    def lines(self) -> list[str]:
        """`<workload>: ours X <unit>, HF Y, ratio R.RRx`, the pre-training line last."""
        out = []
        for name in WORKLOAD_ORDER:
            ours, hf, ratio = self._line_values[name]
            out.append(
                f"{name}: ours {fmt(ours, UNITS[name])} {UNITS[name]}, HF {fmt(hf, UNITS[name])}, ratio {ratio:.2f}x"
            )
        return out


def hours(seconds: float) -> str:
    """'3.2 h' / '41 min' / '12 s'."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def render_table(rows: list[Row]) -> str:
    """The rows as a Markdown table: workload | ours | HF | ours vs HF."""
    lines = ["| workload | ours | HF | ours vs HF |", "|---|---|---|---|"]
    for row in rows:
        unit = f" {row.unit}" if row.unit and not isinstance(row.ours, str) else ""
        hf_unit = f" {row.unit}" if row.unit and not isinstance(row.hf, str) and row.hf is not None else ""
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        if row.note:
            ratio = f"{ratio} ({row.note})" if ratio else row.note
        lines.append(
            f"| {row.name} | {fmt(row.ours, row.unit)}{unit} | {fmt(row.hf, row.unit)}{hf_unit} | {ratio} |"
        )
    return "\n".join(lines)


def loader_rate(args: argparse.Namespace, tiny: bool) -> tuple[float, str]:
    """Loader images/s/core: given, or measured by the loader benchmark (its --tiny run when
    ``tiny``, else ``--loader-seconds`` of it). Its thread setting is restored afterwards."""
    if args.loader_images_per_s_per_core is not None:
        return args.loader_images_per_s_per_core, "given (--loader-images-per-s-per-core)"
    import tempfile

    from vilt_lab.bench.loader import benchmark_loader

    threads = torch.get_num_threads()
    try:
        with tempfile.TemporaryDirectory(prefix="vilt-bench-loader-") as tmp:
            num_images, batch_size, seconds = (8, 4, 0.0) if tiny else (128, 32, args.loader_seconds)
            result = benchmark_loader(num_images, batch_size, seconds, Path(tmp), log=lambda line: None)
    finally:
        torch.set_num_threads(threads)  # the loader benchmark times one core
    return (
        result.ours,
        f"measured by the loader benchmark ({'--tiny' if tiny else f'{args.loader_seconds:g} s'})",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument("--tiny", action="store_true", help="every row on the tiny model in seconds (tests)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write every figure to PATH")
    parser.add_argument(
        "--device", type=torch.device, default=None, help="default: cuda if available, else cpu"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--loader-images-per-s-per-core",
        type=float,
        default=None,
        help="the loader benchmark's figure (default: measure it here)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override for our pre-training side (repeatable), e.g. trainer.compile=true",
    )
    parser.add_argument("--loader-seconds", type=float, default=10.0, help="measuring time of the loader run")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every workload, print the table and the lines, write the JSON."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tiny = bool(args.tiny)
    sizes = TINY_SIZES if tiny else GPU_SIZES if device.type == "cuda" else CPU_SIZES
    if device.type == "cuda":
        # The baseline's setting for whatever stays in fp32 under autocast.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    hardware = describe_hardware(device)
    started = datetime.datetime.now(datetime.timezone.utc)
    print(
        f"model benchmark, {started:%Y-%m-%d %H:%M} UTC, {'tiny sizes (figures mean nothing)' if tiny else sizes.model}",
        flush=True,
    )
    print(f"hardware: {hardware_line(hardware)}; {platform.machine()}", flush=True)
    print(
        f"versions: torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}",
        flush=True,
    )
    print(f"sizes: {json.dumps(asdict(sizes))}", flush=True)
    images_per_core, loader_note = loader_rate(args, tiny)
    peak_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_peak_flops(device, peak_dtype, sizes.matmul_size)
    print(
        f"dense matmul rate here ({sizes.matmul_size}^3, {str(peak_dtype).removeprefix('torch.')}): "
        f"{peak / 1e12:.3g} TFLOP/s (MFU's denominator)",
        flush=True,
    )
    if args.set:
        print(f"our training config overrides: {' '.join(args.set)}", flush=True)
    bench = Bench(sizes, device, args.set)
    bench.run(peak)
    step_rate = bench.results["pretrain"]["samples_per_s"]["ours"]
    cores = step_rate / images_per_core
    load_after = round(os.getloadavg()[0], 2)
    print("", flush=True)
    print(render_table(bench.rows), flush=True)
    print("", flush=True)
    print(
        f"loader: {images_per_core:.0f} images/s/core ({loader_note}); one {device.type} training at "
        f"{step_rate:.1f} samples/s needs {cores:.2f} loader cores: data.num_workers >= {max(1, math.ceil(cores))}",
        flush=True,
    )
    print(
        f"load average before {hardware['load_average']}, after {load_after} (other processes share these cores)",
        flush=True,
    )
    for line in bench.lines():
        print(line, flush=True)
    result = {
        "date": started.isoformat(),
        "tiny": tiny,
        "hardware": hardware,
        "load_average_after": load_after,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "sizes": asdict(sizes),
        "precision": bench.dtype_note,
        "ours_overrides": args.set,
        "matmul_peak_flops": peak,
        "loader": {"images_per_s_per_core": images_per_core, "source": loader_note, "cores_needed": cores},
        "workloads": bench.results,
        "table": [asdict(row) for row in bench.rows],
        "lines": bench.lines(),
        "median_of": "per-call seconds over every round",
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return result
