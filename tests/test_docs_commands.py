"""Every training and evaluation command the README and docs/ show still composes.

A shell line in a fenced or indented code block that runs `vilt-train`, `python -m
vilt_lab.train`, `vilt-eval` or `python -m vilt_lab.eval` (also behind `accelerate launch` or
torchrun, also a `-m` sweep) is composed with Hydra's compose API as the entry point composes it,
then read into the typed settings, so a documented key, group option or value type that stops
existing fails here instead of in a reader's terminal. Nothing trains and no data is read.
"""

from __future__ import annotations

import functools
import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from helpers.configs import compose_config, compose_eval_config, eval_settings, train_settings
from vilt_lab.config.paths import CONF_DIR
from vilt_lab.config.schema import EvalSchema, TrainSchema
from vilt_lab.config.typed_check import check

REPO = Path(__file__).resolve().parent.parent
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

ENTRY_POINTS = {"vilt-train": "train", "vilt-eval": "eval"}
MODULES = {"vilt_lab.train": "train", "vilt_lab.eval": "eval"}
# Hydra flags that only print or change what is printed: they leave the overrides as they are.
PRINT_FLAGS = {"--help", "-h", "--hydra-help", "--info", "--resolve"}
PRINT_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p"}
# A config dir of the reader's own (`--config-dir my_conf experiment=mine`) is not in the
# repository, so such a command cannot be composed here.
CONFIG_DIR_FLAGS = {"--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn"}
FENCE = re.compile(r"^\s*```\s*(\w*)")


@dataclass(frozen=True)
class DocCommand:
    """One documented command: where it is, which entry point, its overrides."""

    where: str
    entry: str  # "train" or "eval"
    overrides: tuple[str, ...]
    sweep: bool
    skip_reason: str | None = None


def shell_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every shell line in fenced (not Python) or 4-space indented code
    blocks, `\\`-continued lines joined onto their first."""
    lines: list[tuple[int, str]] = []
    fence_lang: str | None = None
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        fence = FENCE.match(raw)
        if fence:
            fence_lang = None if fence_lang is not None else fence.group(1)
            continue
        in_code = (fence_lang is not None and fence_lang not in {"python", "yaml", "json"}) or (
            fence_lang is None and raw.startswith("    ")
        )
        if not in_code:
            continue
        if pending is not None:
            pending = (pending[0], pending[1] + " " + raw.strip())
        else:
            pending = (number, raw.strip())
        if pending[1].endswith("\\"):
            pending = (pending[0], pending[1][:-1].rstrip())
            continue
        lines.append(pending)
        pending = None
    return lines


def entry_and_arguments(tokens: list[str]) -> tuple[str, list[str]] | None:
    """The entry point a command line runs and the arguments after it, or None for other tools."""
    for i, token in enumerate(tokens):
        if token in ENTRY_POINTS:
            return ENTRY_POINTS[token], tokens[i + 1 :]
        if token == "-m" and i + 1 < len(tokens) and tokens[i + 1] in MODULES:
            return MODULES[tokens[i + 1]], tokens[i + 2 :]
    return None


def is_placeholder(value: str) -> bool:
    """A value the reader fills in: `...`, `<run dir>`, `$NODE_RANK`."""
    return value == "..." or bool(re.search(r"<[^>]*>", value)) or value.startswith("$")


@functools.cache
def config_groups() -> frozenset[str]:
    """The config groups under conf/ (the keys whose values name a file there)."""
    return frozenset(p.relative_to(CONF_DIR).as_posix() for p in CONF_DIR.rglob("*") if p.is_dir())


def doc_command(where: str, line: str) -> DocCommand | None:
    """The documented command on `line`, or None when it runs neither entry point."""
    tokens = shlex.split(line.removeprefix("$ "), comments=True)
    found = entry_and_arguments(tokens)
    if found is None:
        return None
    entry, arguments = found
    overrides: list[str] = []
    sweep = False
    skip_reason = None
    groups = config_groups()
    arguments_left = iter(arguments)
    for argument in arguments_left:
        if argument in {"-m", "--multirun"}:
            sweep = True
        elif argument in CONFIG_DIR_FLAGS:
            skip_reason = (
                f"composes against the reader's own config dir ({argument} {next(arguments_left, '')})"
            )
        elif argument in PRINT_FLAGS:
            continue
        elif argument in PRINT_FLAGS_WITH_VALUE:
            next(arguments_left, None)
        elif argument.startswith("-"):
            raise AssertionError(f"{where}: {argument} is no flag of {entry}'s command line")
        elif argument == "...":
            continue  # "and the rest of your overrides"
        else:
            key, _, value = argument.partition("=")
            if not is_placeholder(value):
                overrides.append(argument)
            elif key.lstrip("+~") not in groups:
                # The key is checked all the same: only the value is the reader's.
                overrides.append(f"{key}=placeholder")
            # A group option left to the reader (`experiment=...`) is dropped: no file names it.
    return DocCommand(where, entry, tuple(overrides), sweep, skip_reason)


def documented_commands() -> list[DocCommand]:
    commands = []
    for path in DOC_FILES:
        for number, line in shell_lines(path.read_text()):
            command = doc_command(f"{path.relative_to(REPO)}:{number}", line)
            if command is not None:
                commands.append(command)
    return commands


def sweep_jobs(command: DocCommand) -> list[list[str]]:
    """The override lists of the jobs a command runs: every combination of a `-m` sweep's
    values, or the one job."""
    if not command.sweep:
        return [list(command.overrides)]
    choices = []
    for override in OverridesParser.create().parse_overrides(list(command.overrides)):
        if override.is_sweep_override():
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line])
    return [list(job) for job in itertools.product(*choices)]


def assert_fits_schema(cfg: DictConfig, schema: type, where: str) -> None:
    """The entry points' first check of a composed config: every key and value type (not the
    data on disk, which a reader's command names and this machine lacks)."""
    problems = check(OmegaConf.to_container(cfg, resolve=True), schema)
    assert not problems, f"{where}: " + "; ".join(problems)


def compose_command(command: DocCommand) -> int:
    """Compose every job of `command` as its entry point would, check it against the schema and
    read it into the typed settings; returns how many jobs were composed. Raises when one does
    not compose."""
    jobs = sweep_jobs(command)
    for overrides in jobs:
        if command.entry == "train":
            cfg = compose_config(overrides)
            assert_fits_schema(cfg, TrainSchema, command.where)
            train_settings(cfg)
        else:
            cfg = compose_eval_config(overrides)
            assert_fits_schema(cfg, EvalSchema, command.where)
            eval_settings(cfg)
    return len(jobs)


COMMANDS = documented_commands()


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_documented_command_composes(command: DocCommand) -> None:
    if command.skip_reason is not None:
        pytest.skip(command.skip_reason)
    assert compose_command(command) >= 1


def test_every_kind_of_documented_command_is_found() -> None:
    """The extraction itself: a change that found no commands would pass every case above."""
    assert len(COMMANDS) >= 20
    assert {c.entry for c in COMMANDS} == {"train", "eval"}
    assert any(c.sweep for c in COMMANDS)
    assert any(c.where.startswith("README.md") for c in COMMANDS)
    text = "\n".join(line for path in DOC_FILES for _, line in shell_lines(path.read_text()))
    assert "accelerate launch" in text and "python -m vilt_lab.train" in text


PLANTED = """
Prose that mentions vilt-train trainer.not_a_key=1 outside code is not a command.

    vilt-train experiment=demo trainer.micro_bach_size=16
    accelerate launch --num_processes 2 -m vilt_lab.train model=huge32
    python -m vilt_lab.train -m experiment=demo objective='[itm,mlm],[itm,nope]'
    vilt-eval checkpoint=runs/demo task=irtr data=shapes_retrieval daat.root=/x

```bash
vilt-train experiment=demo \\
    trainer.global_batch_size=lots
```
"""


def test_a_planted_bad_command_fails() -> None:
    """Each planted command names a key, a group option, a swept value or a value type that does
    not exist; every one must fail to compose, the second job of the sweep included."""
    planted = [doc_command(f"planted:{n}", line) for n, line in shell_lines(PLANTED)]
    assert len(planted) == 5 and None not in planted
    for command in planted:
        with pytest.raises((HydraException, OmegaConfBaseException, AssertionError)):
            compose_command(command)


def test_placeholders_and_prefixes_are_read_as_the_reader_would() -> None:
    command = doc_command(
        "planted",
        "accelerate launch --num_machines N --machine_rank $NODE_RANK -m vilt_lab.train "
        "experiment=... model.init_from=<run_dir> trainer.micro_batch_size=8 ...  # comment",
    )
    assert command is not None and not command.sweep
    assert command.overrides == ("model.init_from=placeholder", "trainer.micro_batch_size=8")
    own_dir = doc_command("planted", "vilt-train --config-dir my_conf experiment=mine")
    assert own_dir is not None and own_dir.skip_reason is not None
    assert doc_command("planted", "python -m vilt_lab.bench model --tiny") is None
