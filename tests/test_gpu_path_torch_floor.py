"""pyproject's torch floor admits no release that lacks a torch API the package calls: a user with
the oldest torch pip accepts must not meet an AttributeError in the middle of a run."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Each torch API the package calls that torch 2.4 lacked -> the release that brought it.
NEWER_TORCH_APIS = {
    "torch.nn.utils.get_total_norm": (2, 6),
    "torch._dynamo.config.recompile_limit": (2, 7),
}


def torch_floor() -> tuple[int, int]:
    found = re.search(r'"torch>=(\d+)\.(\d+)', (ROOT / "pyproject.toml").read_text())
    assert found, "pyproject.toml declares no torch floor"
    return int(found[1]), int(found[2])


def package_source() -> str:
    return "\n".join(path.read_text() for path in sorted((ROOT / "src" / "vilt_lab").rglob("*.py")))


@pytest.mark.parametrize("api", sorted(NEWER_TORCH_APIS))
def test_the_floor_has_every_newer_api_the_package_calls(api: str) -> None:
    module, name = api.rsplit(".", 1)
    assert f"{module.removeprefix('torch.')}.{name}" in package_source(), f"{api} is no longer called"
    assert hasattr(importlib.import_module(module), name)  # the name is right (in this torch)
    assert torch_floor() >= NEWER_TORCH_APIS[api], f"{api} needs torch>={NEWER_TORCH_APIS[api]}"
