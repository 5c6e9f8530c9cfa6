"""Image canvases (``data.image_buckets``, ``data.canvas_step``): padded image tokens, batch
shapes, step time (on the CPU, or with ``--device cuda --dtype bfloat16`` on a GPU, where a batch
without padding can run flash attention).

Two image-size distributions, each at its own MinMaxResize setting:

* the shapes world's scenes (``sample_scene``'s sizes) at 96 / 160 / 16, the demo's;
* a synthetic set with COCO's image sizes at the paper's 384 / 639 / 32: mostly 640x480 and
  480x640, the rest with a 640 (now and then 500) longer side and any shorter side from 320 up
  (a stand-in written from COCO's well-known sizes, not its measured histogram).

A stream of items of those sizes is batched as a training `BatchStream` batches it (full
batches), in three ways: in stream order, each batch padded to its largest image (the default);
one image shape per batch (`vilt_lab.data.canvas`, what ``data.image_buckets=true`` does); and one
canvas per batch for each of ``--canvas-steps`` (``data.image_buckets=true data.canvas_step=S``:
each image's sides in patches rounded up to a multiple of S, items of one canvas batched
together, every batch padded to its canvas). For each way:

* padding per useful image patch, twice: of the transformer's image positions (each image is
  filled up to the batch's most patches, `select_patches`, or on canvases to the canvas's whole
  grid, `Passes.max_patches`; where the compute goes) and of the
  pixels (each image padded to the batch's canvas: what the patch projection and the
  normalisation go over). Text is left out: its padding is ``data.text_padding``'s;
* batch shapes, twice: distinct padded (H, W), the graphs a static compile of the whole model
  would build, and distinct (batch size, image positions), the graphs of the compiled blocks
  (``trainer.compile`` with ``trainer.compile_dynamic=false``), each per text length (5 with
  ``data.text_padding=bucket``);
* step time: forward and backward of a small backbone through `Passes.run` (the path training
  takes), per item over the run: one batch per step shape (`step_shapes`) timed, weighted by how
  many of the run's batches have that shape. Every text is 40 word pieces, so a bucket runs
  without an attention mask (the collate's ``unpadded`` flag) and a padded batch with one; the
  buckets are timed once more with the mask kept, which parts the two savings. The ways alternate
  in rounds, so load from other processes falls on all alike, and each batch's best round counts.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from vilt_lab.bench.hardware import describe_hardware, hardware_line
from vilt_lab.bench.latency import DTYPES, default_device
from vilt_lab.bench.model_timing import synchronize
from vilt_lab.data.canvas import Size, batcher, canvas_shape, whole_canvas
from vilt_lab.data.collate import UNPADDED, WHOLE_CANVAS, fill_the_canvas, pad_images
from vilt_lab.data.sources.shapes import sample_scene
from vilt_lab.data.transforms import PAPER_LONGER, PAPER_SHORTER, MinMaxResize
from vilt_lab.evaluation.loop import to_device
from vilt_lab.model import ViltBackbone, ViltConfig, get_config
from vilt_lab.objectives.passes import Passes

TEXT_LEN = 40
PADDED, BUCKETED, BUCKETED_MASKED = "padded", "bucketed", "bucketed with the mask"
CANVAS_STEPS = (2, 4)
CPU = torch.device("cpu")


def coco_like_size(rng: random.Random) -> tuple[int, int]:
    """An original (width, height) drawn from a COCO-like mix of image sizes."""
    fixed = ((640, 480), (480, 640), (640, 427), (427, 640))
    pick = rng.choices(range(len(fixed) + 1), weights=(45, 15, 15, 5, 20))[0]
    if pick < len(fixed):
        return fixed[pick]
    longer = 640 if rng.random() < 0.9 else 500
    shorter = rng.randint(min(320, longer), longer)
    return (longer, shorter) if rng.random() < 0.75 else (shorter, longer)


def shapes_world_size(rng: random.Random) -> tuple[int, int]:
    """A shapes-world scene's (width, height)."""
    scene = sample_scene(rng)
    return scene.width, scene.height


@dataclass(frozen=True)
class ImageSet:
    """A distribution of original image sizes, the resize it is trained at and the small model."""

    name: str
    draw: Callable[[random.Random], tuple[int, int]]
    resize: MinMaxResize
    model: ViltConfig

    def sizes(self, n: int, seed: int) -> list[Size]:
        rng = random.Random(seed)
        return [self.resize.size(*self.draw(rng))[::-1] for _ in range(n)]


IMAGE_SETS = (
    ImageSet("shapes world", shapes_world_size, MinMaxResize(96, 160, 16), get_config("tiny")),
    ImageSet(
        "COCO-like",
        coco_like_size,
        MinMaxResize(PAPER_SHORTER, PAPER_LONGER, 32),
        ViltConfig(hidden_size=192, num_layers=4, num_heads=3, patch_size=32, vocab_size=1000),
    ),
)


def batch_sizes(
    sizes: list[Size], batch_size: int, image_buckets: bool, canvas_multiple: int = 1
) -> list[list[Size]]:
    """The image sizes of each full batch a training `BatchStream` makes of items of ``sizes``:
    its `Batcher` (buckets of canvases with sides in units of ``canvas_multiple`` pixels), fed
    items whose images are shape-only (meta) tensors."""
    batches = batcher(batch_size, image_buckets, canvas_multiple)
    full = (batches.add({"image": torch.empty(3, h, w, device="meta")}) for h, w in sizes)
    return [[tuple(item["image"].shape[-2:]) for item in batch] for batch in full if batch is not None]


def batch_canvas(sizes: list[Size], canvas_multiple: int = 1) -> Size:
    """The (H, W) a batch of images of ``sizes`` is padded to (`pad_images`)."""
    return canvas_shape((max(h for h, _ in sizes), max(w for _, w in sizes)), canvas_multiple)


def step_shapes(
    batches: list[list[Size]], patch: int, canvas_multiple: int = 1
) -> list[tuple[list[Size], int]]:
    """One batch per distinct step shape among ``batches`` (padded height and width, image
    positions: what a step's cost depends on besides the batch size) and how many batches it
    stands for: timing those and weighting by the counts gives the run's mean step cost."""
    groups: dict[tuple[int, int, int], list[list[Size]]] = {}
    for sizes in batches:
        key = (*batch_canvas(sizes, canvas_multiple), image_positions(sizes, patch, canvas_multiple))
        groups.setdefault(key, []).append(sizes)
    return [(group[0], len(group)) for group in groups.values()]


def image_positions(sizes: list[Size], patch: int, canvas_multiple: int = 1) -> int:
    """A batch's image positions in a pass that keeps every patch (`Passes.max_patches`): its
    canvas's grid on fixed canvases, else its largest image's patches."""
    if whole_canvas(canvas_multiple, patch):
        return patches(batch_canvas(sizes, canvas_multiple), patch)
    return max(patches(size, patch) for size in sizes)


def patches(size: Size, patch: int) -> int:
    """An image's patch count (MinMaxResize makes both sides multiples of the patch)."""
    return size[0] // patch * (size[1] // patch)


def padding_per_useful(
    batches: list[list[Size]], patch: int, *, canvas: bool, canvas_multiple: int = 1
) -> float:
    """Padding per image patch over ``batches``: of the sequence (each image filled up to the
    batch's image positions, the transformer's: `image_positions`) or, ``canvas``, of the pixels
    (each image padded to the batch's canvas, what the patch projection computes)."""
    useful = padded = 0
    for sizes in batches:
        own = [patches(size, patch) for size in sizes]
        canvas_patches = patches(batch_canvas(sizes, canvas_multiple), patch)
        widest = canvas_patches if canvas else image_positions(sizes, patch, canvas_multiple)
        useful += sum(own)
        padded += widest * len(sizes) - sum(own)
    return padded / useful


def image_shapes_of(batches: list[list[Size]], canvas_multiple: int = 1) -> int:
    """Distinct padded (H, W) among the batches: the graphs of a whole-model static compile."""
    return len({batch_canvas(sizes, canvas_multiple) for sizes in batches})


def sequence_shapes_of(batches: list[list[Size]], patch: int, canvas_multiple: int = 1) -> int:
    """Distinct (batch size, image positions) among the batches: the graphs of the compiled
    blocks (``trainer.compile``) per text length."""
    return len({(len(sizes), image_positions(sizes, patch, canvas_multiple)) for sizes in batches})


def model_batch(
    sizes: list[Size], generator: torch.Generator, config: ViltConfig, canvas_multiple: int = 1
) -> dict:
    """A loader-like batch of random images of ``sizes`` on their canvas and 40-piece texts (none
    padded)."""
    images = [torch.randint(0, 256, (3, h, w), generator=generator, dtype=torch.uint8) for h, w in sizes]
    image, pixel_mask = pad_images(images, canvas_multiple)
    input_ids = torch.randint(5, config.vocab_size, (len(sizes), TEXT_LEN), generator=generator)
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "image": image,
        "pixel_mask": pixel_mask,
        "image_sizes": list(sizes),
        UNPADDED: fill_the_canvas(images, image.shape[-2:]),
    }
    if whole_canvas(canvas_multiple, config.patch_size):
        batch[WHOLE_CANVAS] = True
    return batch


def step_seconds(backbone: ViltBackbone, batch: dict, dtype: torch.dtype = torch.float32) -> float:
    """One forward and backward through `Passes.run` on the backbone's device (under autocast
    to ``dtype`` when it is not float32: flash attention on CUDA needs 16-bit inputs), timed."""
    device = next(backbone.parameters()).device
    synchronize(device)
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        output = Passes().run(backbone, batch, batch["input_ids"])
    output.pooled.float().square().sum().backward()
    backbone.zero_grad(set_to_none=True)
    synchronize(device)
    return time.perf_counter() - start


@dataclass
class CanvasStepResult:
    """One canvas step's figures: buckets of canvases (``data.canvas_step=step``)."""

    step: int
    sequence_padding: float
    canvas_padding: float
    image_shapes: int
    sequence_shapes: int
    ms_per_item: float

    def line(self, padded_ms_per_item: float) -> str:
        return (
            f"  canvases of {self.step} patches, bucketed: padded image positions per useful one "
            f"{self.sequence_padding:.3f}, padded pixels' patches per useful one {self.canvas_padding:.3f}, "
            f"batch image shapes {self.image_shapes}, (batch size, image positions) {self.sequence_shapes}, "
            f"step {self.ms_per_item:.2f} ms/item ({padded_ms_per_item / self.ms_per_item:.2f}x)"
        )


@dataclass
class CanvasResult:
    """One image set's figures: padded batches (first of each pair) against one image shape per
    batch (``bucketed_``), and buckets of canvases per step (``canvases``)."""

    name: str
    setting: str
    items: int
    batch_size: int
    sequence_padding: float
    bucketed_sequence_padding: float
    canvas_padding: float
    bucketed_canvas_padding: float
    image_shapes: int
    bucketed_image_shapes: int
    sequence_shapes: int
    bucketed_sequence_shapes: int
    ms_per_item: float
    bucketed_ms_per_item: float
    bucketed_masked_ms_per_item: float
    canvases: list[CanvasStepResult] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"{self.name} ({self.setting}, {self.items} items, batches of {self.batch_size}), padded -> bucketed:",
            f"  padded image positions per useful one (transformer) {self.sequence_padding:.3f} -> "
            f"{self.bucketed_sequence_padding:.3f}; padded pixels' patches per useful one (patch projection) "
            f"{self.canvas_padding:.3f} -> {self.bucketed_canvas_padding:.3f}",
            f"  batch image shapes (whole-model static compile) {self.image_shapes} -> {self.bucketed_image_shapes}; "
            f"(batch size, image positions) (compiled blocks, per text length) {self.sequence_shapes} -> "
            f"{self.bucketed_sequence_shapes}",
            f"  step {self.ms_per_item:.2f} -> {self.bucketed_ms_per_item:.2f} ms/item "
            f"({self.ms_per_item / self.bucketed_ms_per_item:.2f}x; the buckets with the mask kept "
            f"{self.bucketed_masked_ms_per_item:.2f})",
            *(canvas.line(self.ms_per_item) for canvas in self.canvases),
        ]


def counts(batches: list[list[Size]], canvas_multiple: int, patch: int) -> dict[str, float]:
    """A way's padding and shape figures (see the module docstring)."""
    return {
        "sequence_padding": padding_per_useful(batches, patch, canvas=False, canvas_multiple=canvas_multiple),
        "canvas_padding": padding_per_useful(batches, patch, canvas=True, canvas_multiple=canvas_multiple),
        "image_shapes": image_shapes_of(batches, canvas_multiple),
        "sequence_shapes": sequence_shapes_of(batches, patch, canvas_multiple),
    }


def benchmark_set(
    image_set: ImageSet,
    items: int,
    batch_size: int,
    rounds: int,
    seed: int,
    canvas_steps: tuple[int, ...] = CANVAS_STEPS,
    device: torch.device = CPU,
    dtype: torch.dtype = torch.float32,
) -> CanvasResult:
    """The figures of one image set (see the module docstring), timed on ``device`` at ``dtype``."""
    sizes = image_set.sizes(items, seed)
    patch = image_set.resize.patch
    # way -> its batches and its canvas unit in pixels (1: the batch's largest image).
    batchings = {
        PADDED: (batch_sizes(sizes, batch_size, False), 1),
        BUCKETED: (batch_sizes(sizes, batch_size, True), 1),
    }
    for step in canvas_steps:
        batchings[step] = (batch_sizes(sizes, batch_size, True, step * patch), step * patch)
    torch.manual_seed(seed)
    backbone = ViltBackbone(image_set.model).train().to(device)
    generator = torch.Generator().manual_seed(seed)
    ways = {
        way: [
            (to_device(model_batch(b, generator, image_set.model, multiple), device), n)
            for b, n in step_shapes(batches, patch, multiple)
        ]
        for way, (batches, multiple) in batchings.items()
    }
    # The buckets again with the mask kept: what dropping it is worth, apart from the padding.
    ways[BUCKETED_MASKED] = [({**batch, UNPADDED: False}, n) for batch, n in ways[BUCKETED]]
    # Each batch's best of the rounds: on a shared machine the least disturbed run is the one
    # that measures the work (a median still carried twofold swings from other processes).
    best = {way: [float("inf")] * len(timed) for way, timed in ways.items()}
    for _ in range(rounds):
        for way, timed in ways.items():
            for i, (batch, _count) in enumerate(timed):
                best[way][i] = min(best[way][i], step_seconds(backbone, batch, dtype))
    per_item = {
        way: 1000
        * sum(t * n for t, (_b, n) in zip(best[way], timed, strict=True))
        / (batch_size * sum(n for _b, n in timed))
        for way, timed in ways.items()
    }
    padded, bucketed = counts(*batchings[PADDED], patch=patch), counts(*batchings[BUCKETED], patch=patch)
    r = image_set.resize
    return CanvasResult(
        name=image_set.name,
        setting=f"MinMaxResize {r.shorter}/{r.longer}/{r.patch}",
        items=items,
        batch_size=batch_size,
        **padded,
        **{f"bucketed_{name}": value for name, value in bucketed.items()},
        ms_per_item=per_item[PADDED],
        bucketed_ms_per_item=per_item[BUCKETED],
        bucketed_masked_ms_per_item=per_item[BUCKETED_MASKED],
        canvases=[
            CanvasStepResult(step, **counts(*batchings[step], patch=patch), ms_per_item=per_item[step])
            for step in canvas_steps
        ],
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument(
        "--items", type=int, default=4096, help="items per image set (token and shape counts)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="items per batch")
    parser.add_argument(
        "--canvas-steps",
        type=int,
        nargs="*",
        default=list(CANVAS_STEPS),
        help="data.canvas_step values to batch by canvas (patches; none: padded and bucketed only)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (each batch's best counts)")
    parser.add_argument(
        "--device",
        type=torch.device,
        default=None,
        help="where to time (default: cuda if available, else cpu)",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=sorted(DTYPES),
        help="autocast dtype of the timed steps (bfloat16 lets CUDA pick flash attention where nothing is masked)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line last")
    parser.add_argument("--tiny", action="store_true", help="64 items, batches of 4, one round (for tests)")


def run(args: argparse.Namespace) -> list[CanvasResult]:
    """Run the benchmark from parsed options; one line per image set."""
    items, batch_size, rounds = (64, 4, 1) if args.tiny else (args.items, args.batch_size, args.rounds)
    steps = tuple(args.canvas_steps)
    if any(step < 1 for step in steps):
        raise SystemExit(f"--canvas-steps {' '.join(map(str, steps))}: every step must be an integer >= 1")
    device = args.device or default_device()
    print(f"{hardware_line(describe_hardware(device))}, {args.dtype}", flush=True)
    results = []
    for image_set in IMAGE_SETS:
        result = benchmark_set(
            image_set, items, batch_size, rounds, args.seed, steps, device, DTYPES[args.dtype]
        )
        print("\n".join(result.lines()), flush=True)
        results.append(result)
    if args.json:
        print(json.dumps([asdict(r) for r in results]), flush=True)
    return results
