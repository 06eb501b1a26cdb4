"""What every config section shares: unknown keys refused, and pydantic's errors told as `dotted.field: problem`."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration problem, with the dotted path of the offending field in its message."""


class Refusal(ValueError):
    """Raised by a validator: `field` (relative to the model that checks it) and why it is refused."""

    def __init__(self, field: str, why: str):
        super().__init__(f"{field}: {why}")
        self.field, self.why = field, why


def refuse(field: str, why: str):
    raise Refusal(field, why)


class Range(str):
    """The interval a number must lie in, as text (kept in the field's metadata for docs/config.md)."""


def within(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Any:
    """A float that must lie between low and high, refused with one message naming the interval."""
    text = Range(f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")

    def check(value: float) -> float:
        if value < low or value > high or (low_open and value == low) or (high_open and value == high):
            raise ValueError(f"must be in {text}")
        return value

    return Annotated[float, AfterValidator(check), text]


class Section(BaseModel):
    """A config section: a key it does not know is an error, as is a value of the wrong type."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    @model_validator(mode="after")
    def _checked(self):
        self.check()
        return self

    def check(self) -> None:
        """Cross-field checks next to the fields: `refuse(field, why)` on a problem."""


# filled by config_train: the union's tags (they stand in pydantic's error locations, not in the config) and, for
# each algorithm-specific option, the algorithms that have it
UNION_TAGS: set[str] = set()
OPTION_OWNERS: dict[str, list[str]] = {}


def dotted(loc: tuple) -> str:
    parts: list[str] = []
    for i, p in enumerate(loc):
        if isinstance(p, int):
            parts[-1] = f"{parts[-1]}[{p}]"
        elif not (i == 1 and p in UNION_TAGS):
            parts.append(p)
    return ".".join(parts)


TYPE_WORDS = {"int": "int", "float": "a number", "bool": "bool", "string": "str"}


def describe(err: dict) -> tuple[str, str]:
    """(extra path, problem) for one pydantic error."""
    kind, ctx, value = err["type"], err.get("ctx", {}), err.get("input")
    if kind in ("value_error", "assertion_error"):
        cause = ctx.get("error")
        if isinstance(cause, Refusal):
            return cause.field, cause.why
        return "", str(cause)
    if kind == "union_tag_invalid":
        return "algorithm", f"unknown algorithm {ctx['tag']!r}; choose from {ctx['expected_tags']}"
    if kind == "literal_error":
        return "", f"unknown {value!r}; choose from {ctx['expected']}"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return "", "unknown field"
    if kind == "missing":
        return "", "missing required field"
    if kind in ("too_long", "too_short") and "actual_length" in ctx:
        want = ctx.get("max_length", ctx.get("min_length"))
        if kind == "too_short" and ctx.get("field_type") == "List":
            return "", "needs at least one item" if want == 1 else f"needs at least {want} items"
        return "", f"expected {want} items, got {ctx['actual_length']}"
    for bound, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if bound in ctx and kind.startswith(("greater", "less")):
            return "", f"must be {word} {ctx[bound]}"
    head = kind.split("_")[0]
    if head in TYPE_WORDS and kind.endswith(("_type", "_parsing", "_from_float")):
        return "", f"expected {TYPE_WORDS[head]}, got {value!r}"
    if kind in ("list_type", "tuple_type"):
        return "", f"expected a list, got {type(value).__name__}"
    if kind in ("dict_type", "model_type", "model_attributes_type", "dataclass_type", "dataclass_args_type"):
        return "", f"expected a mapping, got {type(value).__name__}"
    return "", err["msg"]


def message(exc: ValidationError) -> str:
    """The first error of `exc` as `dotted.field: problem`."""
    err = exc.errors()[0]
    extra, problem = describe(err)
    loc = err["loc"]
    if err["type"] == "extra_forbidden" and len(loc) == 3 and loc[1] in UNION_TAGS and loc[2] in OPTION_OWNERS:
        problem = f"an option of {' and '.join(OPTION_OWNERS[loc[2]])}, not of train.algorithm {loc[1]}"
    path = dotted((*loc, *extra.split(".")) if extra else loc)
    return f"{path}: {problem}" if path else problem
