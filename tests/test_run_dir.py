"""The run dir's git record: the commit of the checkout vilt_lab runs from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import vilt_lab
from vilt_lab.training.run_dir import git_info

SOURCE_ROOT = Path(vilt_lab.__file__).resolve().parents[2]  # src/vilt_lab -> the checkout


@pytest.mark.skipif(
    not (SOURCE_ROOT / ".git").exists(), reason="vilt_lab is not imported from a git checkout"
)
def test_git_info_records_the_commit_of_the_checkout():
    info = git_info()
    assert re.fullmatch(r"[0-9a-f]{40}", info["commit"] or ""), info
    assert isinstance(info["dirty"], bool)
