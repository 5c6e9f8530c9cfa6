"""`python -m vilt_lab.bench loader` at a tiny size: it runs end to end and prints the ratio last."""

from __future__ import annotations

import re

import pytest

from vilt_lab.bench.__main__ import main
from vilt_lab.bench.loader import LoaderBenchResult

RESULT_LINE = re.compile(r"^ours (\d+) images/s/core, HF (\d+), ratio (\d+\.\d\d)x$")


def test_loader_benchmark_tiny_prints_the_ratio_last(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    main(["loader", "--tiny", "--work-dir", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    match = RESULT_LINE.match(lines[-1])
    assert match, lines[-1]
    ours, hf, ratio = int(match[1]), int(match[2]), float(match[3])
    assert ours > 0 and hf > 0 and ratio == pytest.approx(ours / hf, rel=0.02, abs=0.01)
    # Both pipelines turned the same JPEG into the same (3, 384, 512) normalised image.
    parity = next(line for line in lines if line.startswith("same image through both"))
    difference = float(parity.rsplit(" ", 1)[-1])
    assert "(3, 384, 512)" in parity and difference < 0.05
    assert (tmp_path / "shards" / "sizes.json").is_file()  # read from real shards
    assert any(line.startswith("HF ViltImageProcessorPil (PIL/NumPy backend): ") for line in lines)
    # Normalising on the CPU is reported apart from the result: training does it on the device.
    assert any(line.startswith("ours normalising on the CPU too ") for line in lines)
    # What pre-resizing at conversion buys, apart from the result too.
    assert any(line.startswith("ours on shards pre-resized at conversion ") for line in lines)
    assert (tmp_path / "shards_preresized" / "sizes.json").is_file()


def test_result_line_format() -> None:
    assert (
        LoaderBenchResult(
            ours=412.4, ours_cpu_normalised=300.0, hf=157.0, hf_pil=120.0, ours_preresized=600.0
        ).line()
        == "ours 412 images/s/core, HF 157, ratio 2.63x"
    )


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="--batch-size"):
        main(["loader", "--batch-size", "0"])
