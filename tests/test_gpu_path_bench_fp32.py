"""The model benchmark's retrieval check compares in IEEE fp32 although the benchmark turns TF32
on for the whole process (the baseline's setting): TF32 keeps 10 mantissa bits, enough for two
fp32 paths that sum in another order to differ by more than the check's 1e-4 on base32."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from vilt_lab.bench import model_retrieval


@pytest.fixture
def tf32_on() -> Iterator[None]:
    """TF32 on as `bench.model.run` sets it on a GPU; the process's settings restored after."""
    matmul_precision, cudnn_tf32 = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    yield
    torch.set_float32_matmul_precision(matmul_precision)
    torch.backends.cudnn.allow_tf32 = cudnn_tf32


def precision_now() -> tuple[str, bool]:
    return torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32


def test_scores_are_compared_without_tf32_and_the_setting_comes_back(
    tf32_on: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, bool]] = []

    def scores(*args: object, **kwargs: object) -> torch.Tensor:
        seen.append(precision_now())
        return torch.zeros(2, 3)

    monkeypatch.setattr(model_retrieval, "ours_scores", scores)
    monkeypatch.setattr(model_retrieval, "hf_scores", scores)
    assert precision_now() == ("high", True)
    difference = model_retrieval.fp32_score_difference(None, None, None, None)  # type: ignore[arg-type]
    assert difference == 0.0
    assert seen == [("highest", False), ("highest", False)]
    assert precision_now() == ("high", True)  # the timed runs after it keep the baseline's TF32


def test_tf32_comes_back_when_scoring_fails(tf32_on: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(*args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model_retrieval, "ours_scores", fails)
    with pytest.raises(RuntimeError, match="out of memory"):
        model_retrieval.fp32_score_difference(None, None, None, None)  # type: ignore[arg-type]
    assert precision_now() == ("high", True)
