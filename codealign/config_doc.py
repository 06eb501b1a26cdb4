"""docs/config.md from the config models: every option with its type, default and description.

    python -m codealign.config_doc            # rewrite docs/config.md
    python -m codealign.config_doc --check    # exit 1 if docs/config.md is not what the models say
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from pathlib import Path

import annotated_types
from pydantic import BaseModel

from codealign.config import RunConfig
from codealign.config_base import Range
from codealign.config_train import MODELS, TrainConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"
HEADER = """# Configuration reference

Generated from the config models (codealign/config.py, config_train.py, config_oracle.py) by
`python -m codealign.config_doc`; a test fails when this file is stale, so edit the models, not this file.

A run is one YAML recipe (`configs/*.yaml`). A recipe may extend another with `base: local.yaml` (a path relative
to it) and state only what differs: mappings merge key by key, a list or a value replaces the base's. A layer that
picks another `train.algorithm` leaves the base's options of the old algorithm behind. `--set a.b=value` (value
parsed as YAML) is one more layer on top. `launch.py check-config --config FILE [--set ...]` validates a recipe and
prints it resolved. An unknown key, a value of the wrong type or a failed check is refused at load with the dotted
field in the message; an option of another algorithm than `train.algorithm` is refused too.
"""
BOUNDS = {annotated_types.Ge: ">=", annotated_types.Gt: ">", annotated_types.Le: "<=", annotated_types.Lt: "<"}
BOUND_ATTRS = {annotated_types.Ge: "ge", annotated_types.Gt: "gt", annotated_types.Le: "le", annotated_types.Lt: "lt"}


def type_text(tp, metadata=()) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return type_text(args[0], args[1:])
    if origin is typing.Literal:
        text = "one of " + ", ".join(f"`{a}`" for a in args)
    elif origin is tuple:
        text = "[" + ", ".join(type_text(a) for a in args) + "]"
    elif origin is list:
        text = f"list of {type_text(args[0])}"
    elif origin is dict:
        text = f"mapping {type_text(args[0])} → {type_text(args[1])}"
    else:
        text = getattr(tp, "__name__", str(tp))
    for m in metadata:
        if isinstance(m, Range):
            text += f" in {m}"
        for kind, word in BOUNDS.items():
            if isinstance(m, kind):
                text += f" {word} {getattr(m, BOUND_ATTRS[kind])}"
        if isinstance(m, annotated_types.MinLen):
            text += f", at least {m.min_length}"
    return text


def default_text(value) -> str:
    return "`" + json.dumps(value.model_dump(mode="json") if isinstance(value, BaseModel) else value) + "`"


def one_line(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    if not rows:
        return []
    return ["| option | type | default | description |", "|---|---|---|---|",
            *(f"| `{n}` | {t} | {d} | {one_line(w)} |" for n, t, d, w in rows), ""]


def section(path: str, model: type, skip: set[str] = frozenset(), title: str = "", intro: str = "") -> list[str]:
    """The table of `model`'s own options, then one section per nested model."""
    lines = [f"## {title or f'`{path}`'}", ""]
    doc = intro or (model.__doc__ if model.__doc__ and model.__doc__ != BaseModel.__doc__ else "")
    if doc and not doc.startswith(model.__name__ + "("):  # a dataclass's generated signature is no description
        lines += [one_line(doc), ""]
    nested, rows = [], []
    if dataclasses.is_dataclass(model):
        hints = typing.get_type_hints(model)
        rows = [(f.name, type_text(hints[f.name]), default_text(f.default), "") for f in dataclasses.fields(model)]
    else:
        for name, f in model.model_fields.items():
            if name in skip:
                continue
            tp = f.annotation
            if name == "train" or isinstance(tp, type) and (issubclass(tp, BaseModel) or dataclasses.is_dataclass(tp)):
                nested.append((f"{path}.{name}" if path else name, tp, f.description))
                continue
            rows.append((name, type_text(tp, f.metadata), default_text(f.get_default(call_default_factory=True)),
                         f.description))
    lines += table(rows)
    for sub, tp, description in nested:
        if sub == "train":
            lines += train_sections()
        else:
            lines += section(sub, tp, intro=description or "")
    return lines


def train_sections() -> list[str]:
    shared = set(TrainConfig.model_fields)
    lines = section("train", TrainConfig, skip={"algorithm"}, intro=(
        "`algorithm` (one of " + ", ".join(f"`{a}`" for a in MODELS) + ", default `dpo`) picks the trainer; the "
        "options below are shared by every algorithm, each algorithm's own follow."))
    for name, model in MODELS.items():
        lines += section("train", model, skip=shared, title=f"`train` with `algorithm: {name}`")
    return lines


def render() -> str:
    lines = section("", RunConfig, title="top level", intro="The run's name, where it writes, and the Ray cluster.")
    return HEADER + "\n" + "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        if not DOC.is_file() or DOC.read_text() != text:
            print(f"{DOC} is stale: run python -m codealign.config_doc", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
