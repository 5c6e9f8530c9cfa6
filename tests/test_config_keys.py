"""A config key is declared once (vilt_lab.config.schema): validation, the typed settings, the
resume and run-dir hash rules and the key reference all follow the declaration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers.configs import compose_config
from vilt_lab.config.keys import may_change_keys
from vilt_lab.config.reference import render
from vilt_lab.config.schema import PositiveInt, TrainerSchema, TrainSchema, key
from vilt_lab.config.typed import typed
from vilt_lab.config.typed_check import check
from vilt_lab.training import run_dir
from vilt_lab.training.run_name import single_run_name

DOCS = Path(__file__).resolve().parents[1] / "docs" / "config-keys.md"


def test_the_key_reference_is_current() -> None:
    assert DOCS.read_text() == render(), (
        "regenerate: python -m vilt_lab.config.reference > docs/config-keys.md"
    )


def test_may_change_is_derived_from_the_declarations() -> None:
    assert run_dir.MAY_CHANGE == may_change_keys(TrainSchema)
    assert {"trainer.micro_batch_size", "data.num_workers", "logger", "paths"} <= set(run_dir.MAY_CHANGE)
    assert not {"trainer.global_batch_size", "trainer.precision", "trainer.fp8", "seed"} & set(
        run_dir.MAY_CHANGE
    )


@dataclasses.dataclass(frozen=True)
class TrainerWithDummies(TrainerSchema):
    # One key a resume may change, one that defines the run: nothing else is written for them.
    dummy_every: PositiveInt = key("a dummy interval", 7, may_change=True)
    dummy_size: PositiveInt = key("a dummy size", 3)


TrainWithDummies = dataclasses.make_dataclass(
    "TrainWithDummies",
    [("trainer", TrainerWithDummies, key("the loop's settings"))],
    bases=(TrainSchema,),
    frozen=True,
)


def demo_values(**trainer: int) -> dict:
    values = OmegaConf.to_container(compose_config(["experiment=demo"]), resolve=True)
    values["trainer"].update(trainer)
    return values


def test_a_declared_key_is_validated_typed_and_documented() -> None:
    # Validation: the declaration allows the key, with its range; without it the key is unknown.
    assert check(demo_values(dummy_every=5), TrainWithDummies) == []
    assert check(demo_values(dummy_every=0), TrainWithDummies) == [
        "trainer.dummy_every=0: expected an integer >= 1"
    ]
    assert "trainer.dummy_every=5: unknown key" in check(demo_values(dummy_every=5), TrainSchema)[0]
    # The typed settings the trainer reads: the declared default where the config is silent.
    assert typed(demo_values(), TrainWithDummies).trainer.dummy_every == 7
    assert typed(demo_values(dummy_every=5), TrainWithDummies).trainer.dummy_every == 5
    # The key reference: a row with its type, default, resume mark and doc.
    assert "| `trainer.dummy_every` | an integer >= 1 | `7` | yes | a dummy interval |" in render(
        TrainWithDummies
    )
    assert "| `trainer.dummy_size` | an integer >= 1 | `3` |  | a dummy size |" in render(TrainWithDummies)


def test_a_declared_key_follows_the_resume_and_naming_rules(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(run_dir, "MAY_CHANGE", may_change_keys(TrainWithDummies))
    assert "trainer.dummy_every" in run_dir.MAY_CHANGE and "trainer.dummy_size" not in run_dir.MAY_CHANGE
    recorded = OmegaConf.create(demo_values(dummy_every=5, dummy_size=3))
    recorded_dir = run_dir.RunDir(tmp_path)
    recorded_dir.config.write_text(OmegaConf.to_yaml(recorded))

    # A key a resume may change: the same run name, and the resume records the change.
    changed = OmegaConf.create(demo_values(dummy_every=9, dummy_size=3))
    assert single_run_name("demo", ["trainer.dummy_every=9"]) == "demo"
    assert run_dir.check_resume(recorded_dir, changed) == {"trainer.dummy_every": (5, 9)}

    # A key that defines the run: another run name, and a resume with another value is refused.
    other = OmegaConf.create(demo_values(dummy_every=5, dummy_size=4))
    assert single_run_name("demo", ["trainer.dummy_size=4"]) == "demo/trainer.dummy_size:4"
    with pytest.raises(run_dir.ResumeRefused, match=r"trainer.dummy_size: 3 \(recorded\) -> 4 \(now\)"):
        run_dir.check_resume(recorded_dir, other)


def test_a_run_recorded_before_a_key_existed_resumes_at_its_default(monkeypatch, tmp_path) -> None:
    """A key declared after a run was recorded counts as recorded at its declared default (the
    code's behaviour before the key): the same value resumes, another is refused."""
    monkeypatch.setattr(run_dir, "MAY_CHANGE", may_change_keys(TrainWithDummies))
    monkeypatch.setattr(
        run_dir,
        "DECLARED_DEFAULTS",
        {**run_dir.DECLARED_DEFAULTS, "trainer.dummy_every": 7, "trainer.dummy_size": 3},
    )
    before = OmegaConf.create(demo_values())  # written before the dummies were declared
    recorded_dir = run_dir.RunDir(tmp_path)
    recorded_dir.config.write_text(OmegaConf.to_yaml(before))
    assert (
        run_dir.check_resume(recorded_dir, OmegaConf.create(demo_values(dummy_every=7, dummy_size=3))) == {}
    )
    with pytest.raises(run_dir.ResumeRefused, match=r"trainer.dummy_size: 3 \(recorded\) -> 4 \(now\)"):
        run_dir.check_resume(recorded_dir, OmegaConf.create(demo_values(dummy_every=7, dummy_size=4)))
    # The real declarations: a run recorded without a key added since resumes on today's config.
    today = compose_config(["experiment=demo"])
    older = OmegaConf.to_container(today, resolve=True)
    del older["trainer"]["float32_matmul_precision"]
    recorded_dir.config.write_text(OmegaConf.to_yaml(OmegaConf.create(older)))
    assert run_dir.check_resume(recorded_dir, today) == {}
