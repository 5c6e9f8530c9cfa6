"""`python -m vilt_lab.bench canvas`: its counts on batches worked out by hand, and a tiny run end
to end."""

from __future__ import annotations

import json

import pytest

from vilt_lab.bench.__main__ import main
from vilt_lab.bench.canvas import (
    batch_sizes,
    image_shapes_of,
    padding_per_useful,
    sequence_shapes_of,
    step_shapes,
)

# Patch 16: (32, 48) and (48, 32) have 6 patches each, (32, 32) 4; their canvas is (48, 48), 9 each.
MIXED = [(32, 48), (48, 32), (32, 32)]


def test_padding_and_shape_counts_by_hand() -> None:
    batches = [MIXED, [(32, 32)] * 3]
    # Sequence: every image up to 6 positions: 0 + 0 + 2 padded over 16 + 12 useful.
    assert padding_per_useful(batches, 16, canvas=False) == pytest.approx(2 / 28)
    # Pixels: every image of the first batch on a 48 x 48 canvas: 3 + 3 + 5 padded patches.
    assert padding_per_useful(batches, 16, canvas=True) == pytest.approx(11 / 28)
    assert image_shapes_of(batches) == 2 and sequence_shapes_of(batches, 16) == 2
    assert image_shapes_of([MIXED, MIXED[:2]]) == 1  # one canvas ...
    assert sequence_shapes_of([MIXED, MIXED[:2]], 16) == 2  # ... but two batch sizes


def test_batches_are_the_streams_full_batches() -> None:
    stream = MIXED * 4  # 12 items: 4 of each shape
    assert batch_sizes(stream, 3, image_buckets=False) == [MIXED] * 4
    assert batch_sizes(stream, 3, image_buckets=True) == [[size] * 3 for size in MIXED]  # one left each
    # Step shapes: (48, 48) canvas with 6 positions twice, the (32, 32) batch once.
    shapes = step_shapes([MIXED, [(32, 32)] * 3, MIXED[::-1]], 16)
    assert shapes == [(MIXED, 2), ([(32, 32)] * 3, 1)]


@pytest.mark.slow
def test_canvas_benchmark_tiny_runs_both_image_sets(capsys: pytest.CaptureFixture[str]) -> None:
    main(["canvas", "--tiny", "--json"])
    lines = capsys.readouterr().out.strip().splitlines()
    results = json.loads(lines[-1])
    assert [r["name"] for r in results] == ["shapes world", "COCO-like"]
    for r in results:
        assert r["bucketed_sequence_padding"] == 0 == r["bucketed_canvas_padding"]
        assert r["canvas_padding"] >= r["sequence_padding"] > 0
        assert min(r["ms_per_item"], r["bucketed_ms_per_item"], r["bucketed_masked_ms_per_item"]) > 0
    assert sum(line.startswith("  step ") for line in lines) == 2
