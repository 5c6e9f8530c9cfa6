"""vilt_lab outside a clone: the wheel carries the configs and every console script runs anywhere.

The wheel is built from this checkout and installed without dependencies into a fresh virtual
environment that sees the already-installed packages (`--system-site-packages`), so nothing is
downloaded; every command then runs from a temporary directory that holds no vilt_lab file.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers.run_dirs import only_run_dir

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

# A user's own config directory on top of vilt_lab's: an experiment of theirs that starts from
# one of ours. Hydra's --config-dir puts it first on the search path.
USER_EXPERIMENT = """\
# @package _global_
defaults:
  - demo
name: mine
model:
  num_layers: 1
"""


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, (
        f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: setuptools is already here, and a registry may not be reachable.
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(REPO),
        ],
        out,
    )
    (wheel,) = out.glob("vilt_lab-*.whl")
    return wheel


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(root)], root)
    _run([str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], root)
    return root


@pytest.mark.parametrize("tree", ["conf", "experiments"])  # the configs and the paper's tables
def test_the_wheel_holds_every_config(wheel: Path, tree: str) -> None:
    in_repo = sorted(str(p.relative_to(REPO)) for p in (REPO / tree).rglob("*.yaml"))
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = sorted(
            n.removeprefix("vilt_lab/") for n in archive.namelist() if n.startswith(f"vilt_lab/{tree}/")
        )
    assert in_wheel == in_repo


def test_the_installed_package_is_the_wheels(venv: Path, tmp_path: Path) -> None:
    # The system site-packages holds this checkout as an editable install; the venv's copy must
    # come first, or every later test would be testing the checkout.
    where = "import importlib.util; print(importlib.util.find_spec('vilt_lab').origin)"
    package = Path(_run([str(venv / "bin" / "python"), "-c", where], tmp_path).stdout.strip()).parent
    assert package.is_relative_to(venv) and (package / "conf" / "train.yaml").is_file()


def wheel_scripts(wheel: Path) -> list[str]:
    """The console scripts the wheel declares (its entry_points.txt)."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        entry_points = configparser.ConfigParser()
        entry_points.read_string(archive.read(name).decode())
    return sorted(entry_points["console_scripts"])


def test_every_console_script_answers_help(wheel: Path, venv: Path, tmp_path: Path) -> None:
    scripts = wheel_scripts(wheel)
    assert {"vilt-train", "vilt-eval", "vilt-report", "vilt-convert", "vilt-shards", "vilt-params"} <= set(
        scripts
    )
    for script in scripts:
        help_text = _run([str(venv / "bin" / script), "--help"], tmp_path).stdout
        assert help_text.strip(), script
        if script in ("vilt-train", "vilt-eval"):  # Hydra's help: our header, then the config groups
            assert help_text.startswith(f"{script}:")
            for group in ("data:", "model:", "task:", "trainer:"):
                assert group in help_text, (script, group)


def test_train_and_evaluate_from_an_empty_directory(venv: Path, shapes_world: Path, tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    work = tmp_path / "work"
    work.mkdir()
    # The session's small shapes world instead of the demo's 4000 scenes: same files, less time.
    data = [f"data.root={shapes_world}"]
    _run([str(venv / "bin" / "vilt-train"), "experiment=demo", "debug=fast", *data], work, env)
    run_dir = only_run_dir(work / "runs")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4
    # Outside a checkout the run records the installed version instead of a commit.
    git = json.loads((run_dir / "git.json").read_text())
    assert git["version"] and git["commit"] is None

    _run(
        [str(venv / "bin" / "vilt-eval"), f"checkpoint={run_dir}", "task=pretrain", "out_dir=eval", *data],
        work,
        env,
    )
    assert json.loads((work / "eval" / "summary.json").read_text())

    user_conf = tmp_path / "my_conf"
    (user_conf / "experiment").mkdir(parents=True)
    (user_conf / "experiment" / "mine.yaml").write_text(USER_EXPERIMENT)
    command = [
        str(venv / "bin" / "vilt-train"),
        "--config-dir",
        str(user_conf),
        "experiment=mine",
        "debug=fast",
    ]
    _run([*command, *data], work, env)
    recorded = OmegaConf.load(only_run_dir(work / "runs" / "mine") / "config.yaml")
    assert recorded.model.num_layers == 1 and recorded.model.size == "tiny"  # theirs on top of demo


def test_the_paper_tables_plan_from_an_empty_directory(venv: Path, tmp_path: Path) -> None:
    """vilt-report finds the shipped tables by name, outside any checkout."""
    planned = _run([str(venv / "bin" / "vilt-report"), "plan", "table5", "--runs", "runs"], tmp_path).stdout
    assert "todo  pt25k_nowwm" in planned and "python -m vilt_lab.train experiment=pretrain_paper" in planned
