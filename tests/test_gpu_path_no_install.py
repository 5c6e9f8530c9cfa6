"""The model benchmark runs from a checkout without `pip install` (a GPU node without a network):
`PYTHONPATH=src`, the dependencies importable, no install of vilt_lab and no pip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The interpreter without its site hooks (.pth files: an editable install of vilt_lab is one), the
# site-packages directories put back as plain paths: the dependencies importable, vilt_lab only
# from PYTHONPATH.
WITHOUT_INSTALLED_VILT_LAB = """
import runpy, sys, sysconfig
paths = sysconfig.get_paths()
sys.path += [paths["purelib"], paths["platlib"]]
sys.argv = ["python -m vilt_lab.bench", "model", "--help"]
runpy.run_module("vilt_lab.bench", run_name="__main__")
"""


def run_without_install(tmp_path: Path, pythonpath: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run(
        [sys.executable, "-S", "-c", WITHOUT_INSTALLED_VILT_LAB],
        cwd=tmp_path,  # not the checkout: nothing found relative to it by chance
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_the_benchmark_starts_from_the_checkout_alone(tmp_path: Path) -> None:
    # Without PYTHONPATH there is no vilt_lab: whatever is installed is out of the picture.
    assert "No module named 'vilt_lab'" in run_without_install(tmp_path, None).stderr
    done = run_without_install(tmp_path, str(ROOT / "src"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--json PATH" in done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_bench_model_no_install_runs_without_pip() -> None:
    planned = subprocess.run(
        ["make", "--no-print-directory", "-n", "bench-model", "NO_INSTALL=1", "ARGS=--tiny"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(planned) == 1, planned
    assert planned[0].startswith("PYTHONPATH=src ") and planned[0].endswith(" -m vilt_lab.bench model --tiny")
    assert not any("pip" in line for line in planned), planned
