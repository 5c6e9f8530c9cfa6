"""The config key reference, generated from the schema's declarations (docs/config-keys.md).

    python -m vilt_lab.config.reference > docs/config-keys.md

A test compares the page with this output, so a key declared in vilt_lab.config.schema is on the
page, with its doc, type and default, as soon as it exists.
"""

from __future__ import annotations

import json
from typing import Any

from .keys import REQUIRED, DeclaredKey, declared_keys
from .schema import EvalSchema, TrainSchema

HEADER = """# Config keys

Every key of `vilt-train` (conf/train.yaml composed) and `vilt-eval` (conf/eval.yaml), generated
from their declarations in `src/vilt_lab/config/schema.py` by
`python -m vilt_lab.config.reference > docs/config-keys.md` (a test keeps this page current).
Set any of them on the command line: `vilt-train trainer.keep_last=5`. *Resume* marks the keys a
resume may change (`resume=latest trainer.micro_batch_size=16`); the others define the run: they
make up its directory's hash, and a resume with another value is refused.
"""


def render(train_schema: type = TrainSchema, eval_schema: type = EvalSchema) -> str:
    """The page for the keys of ``train_schema`` (every one) and ``eval_schema`` (its own)."""
    train = declared_keys(train_schema)
    train_keys = {row.key for row in train}
    eval_only = [row for row in declared_keys(eval_schema) if row.key not in train_keys]
    return "\n".join(
        [
            HEADER,
            "## vilt-train\n",
            _table(train, resume_column=True),
            "\n## vilt-eval\n",
            "`vilt-eval` reads the keys of `objective`, `task`, `data`, `augment`, `trainer`, `paths` and",
            "`seed` above (the checkpoint gives the model), and these of its own:\n",
            _table(eval_only, resume_column=False),
            "",
        ]
    )


def _table(rows: list[DeclaredKey], resume_column: bool) -> str:
    head = ["key", "allowed", "default", *(["resume"] if resume_column else []), "what it is"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        doc = row.doc + (f" ({row.only} only)" if row.only else "")
        cells = [f"`{row.key}`", row.allowed, _default(row.default)]
        cells += ["yes" if row.may_change else ""] if resume_column else []
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in [*cells, doc]) + " |")
    return "\n".join(lines)


def _default(value: Any) -> str:
    if value is REQUIRED:
        return "required"
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else f"`{value}`"


if __name__ == "__main__":
    print(render(), end="")
