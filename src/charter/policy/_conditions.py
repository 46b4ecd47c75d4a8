"""CEL conditions: compiling them, and checking before any request that they can make sense.

The CEL bindings expose no syntax tree, so the static checks read the expression's text
with string literals blanked out. They are deliberately conservative: they flag a name
only when it can never exist (an unknown variable, an `agent` or `context` field Charter
never sets, an argument the action's contract forbids).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cel

from charter.model import AGENT_FIELDS, CONTEXT_FIELDS

__all__ = [
    "VARIABLES",
    "CelProgram",
    "compile_condition",
    "field_references",
    "flat_name",
    "flatten",
    "impossible_fields",
    "read_fields",
    "unknown_variables",
]

#: The variables every condition may read.
VARIABLES = ("agent", "action", "args", "context", "now")

_STRING = re.compile(
    r"""(?:[rR]?'''.*?'''|[rR]?\"\"\".*?\"\"\"|[rR]?'(?:\\.|[^'\\])*'|[rR]?"(?:\\.|[^"\\])*")""",
    re.S,
)
_MACRO_VAR = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
# A name followed by `(` is a macro or method on the variable itself (`args.exists(k, ...)`).
_FIELD_REF = re.compile(r"(?<![\w.])(agent|args|context)\s*\.\s*([A-Za-z_]\w*)(?!\w|\s*\()")
_CEL_POS = re.compile(r"<input>:(\d+):(\d+):\s*(.*)")

CelProgram = Any


@dataclass(frozen=True, slots=True)
class CompileError:
    """Why an expression did not compile, and where inside it."""

    line: int
    col: int
    message: str


def _blank_strings(source: str) -> str:
    """The source with string literals replaced by an empty literal, keeping offsets out."""
    return _STRING.sub("''", source)


def compile_condition(source: str) -> tuple[CelProgram | None, CompileError | None]:
    """Compile one CEL expression; on failure say where in the expression it broke."""
    try:
        return cel.compile(source), None
    except (ValueError, TypeError, RuntimeError) as exc:
        text = str(exc)
        match = _CEL_POS.search(text)
        if match:
            detail = match.group(3).split("\n")[0].strip()
            return None, CompileError(int(match.group(1)), int(match.group(2)), detail)
        return None, CompileError(1, 1, text.split("\n", maxsplit=1)[0])


def unknown_variables(program: CelProgram, source: str) -> list[str]:
    """Top-level names the expression reads that are not Charter variables."""
    bound = set(_MACRO_VAR.findall(_blank_strings(source)))
    return sorted(v for v in program.variables() if v not in VARIABLES and v not in bound)


def used_variables(program: CelProgram, source: str) -> set[str]:
    """The Charter variables the expression reads, so evaluation converts only those."""
    bound = set(_MACRO_VAR.findall(_blank_strings(source)))
    return {v for v in program.variables() if v in VARIABLES and v not in bound}


def read_fields(source: str, variable: str) -> frozenset[str] | None:
    """The first-level fields of `variable` the expression reads, or None if it reads it whole.

    Converting data into CEL is most of an evaluation's cost, so the engine passes only
    these fields; an expression that uses the variable in any other way gets all of it.
    """
    blank = _blank_strings(source)
    # Bare: not followed by `.field`, or followed by `.name(`, a macro on the whole value.
    bare = re.compile(rf"(?<![\w.]){variable}(?!\w)(?!\s*\.\s*[A-Za-z_]\w*(?!\w|\s*\())")
    if bare.search(blank):
        return None
    return frozenset(name for var, name in _FIELD_REF.findall(blank) if var == variable)


_HAS = re.compile(r"has\(\s*(agent|args|context)\s*\.\s*([A-Za-z_]\w*)\s*\)")


def _mask_strings(source: str) -> str:
    """The source with each string literal's characters replaced by `#`, offsets kept."""
    return _STRING.sub(lambda m: "#" * len(m.group(0)), source)


def flat_name(variable: str, field: str, *, has: bool = False) -> str:
    """The top-level CEL variable that stands for `variable.field` (or `has(...)` of it)."""
    return f"__{'h' if has else 'v'}_{variable}_{field}"


def flatten(source: str, variables: Iterable[str]) -> str:
    """Rewrite `args.amount` as one top-level variable, `has(args.x)` as a boolean one.

    Passing a map into CEL costs far more than passing its values one by one, so for each
    of `variables` (read only through `var.field`, see `read_fields`) the engine binds
    each field it reads to its own name. A field that is absent leaves its name unbound,
    which CEL reports as an error just as it reports the missing key, and `has()` reads
    the boolean the engine bound: the result is the same either way.
    """
    wanted = set(variables)

    def rewrite(text: str, pattern: re.Pattern[str], has: bool) -> str:
        masked = _mask_strings(text)
        out, last = [], 0
        for match in pattern.finditer(masked):
            if match.group(1) not in wanted:
                continue
            out.append(text[last : match.start()])
            out.append(flat_name(match.group(1), match.group(2), has=has))
            last = match.end()
        out.append(text[last:])
        return "".join(out)

    return rewrite(rewrite(source, _HAS, True), _FIELD_REF, False)


def field_references(source: str) -> list[tuple[str, str]]:
    """Each `agent.X`, `args.X` and `context.X` the expression names, first level only."""
    return sorted(set(_FIELD_REF.findall(_blank_strings(source))))


def _allowed_args(schema: Mapping[str, Any]) -> set[str] | None:
    """The argument names a contract allows, or None when it allows any name."""
    props = schema.get("properties")
    if schema.get("additionalProperties", True) is not False or schema.get("patternProperties"):
        return None
    return set(props) if isinstance(props, dict) else set()


def impossible_fields(source: str, contracts: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Messages for fields this condition names that can never be present.

    `contracts` are the (action, JSON Schema) pairs the condition applies to; an argument
    is impossible only when no applicable contract allows it.
    """
    problems = []
    contracts = list(contracts)
    for var, name in field_references(source):
        if var == "agent" and name not in AGENT_FIELDS:
            problems.append(
                f"`agent.{name}` does not exist; an agent has {', '.join(AGENT_FIELDS)}"
            )
        elif var == "context" and name not in CONTEXT_FIELDS:
            problems.append(
                f"`context.{name}` does not exist; context has {', '.join(CONTEXT_FIELDS)} "
                "(free-form values go under `context.labels`)"
            )
        elif var == "args" and contracts:
            allowed = [_allowed_args(schema) for _, schema in contracts]
            if all(a is not None and name not in a for a in allowed):
                actions = ", ".join(f"`{a}`" for a, _ in contracts)
                problems.append(
                    f"`args.{name}` does not exist: the contract of {actions} does not allow it"
                )
    return problems
