"""Showing text an agent wrote so that a reviewer sees exactly what it says.

Arguments, rationales and notes come from agents (and through them, from whoever talked
to the agent). Autoescaping keeps markup inert; this module makes the *invisible* visible:
a right-to-left override can make `1500` read as `0051`, a zero-width space can make two
different customer ids look the same, and tag characters can smuggle instructions past a
reader. Every such character is shown as a visible escape (`⟨U+202E⟩`) and counted, so the
page can flag the value. Markup is shown as text, and flagged too: a refund reason has no
business carrying `<script>`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

__all__ = [
    "FOLD_AT",
    "Finding",
    "Shown",
    "editable_json",
    "findings_in",
    "reveal",
    "show_json",
    "show_value",
]

#: Values longer than this many characters are folded behind a "show all" toggle.
FOLD_AT = 160

# Characters that change how text *looks* without being seen: bidirectional controls,
# zero-width and joiner characters, and the Unicode "tag" block. Anything of category Cf
# (format) or Cc (control) is caught below too; these are named so the flag can say which.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff\u180e\u00ad")
_ALLOWED_CONTROLS = frozenset("\n\t")
_MARKUP = re.compile(r"<\s*/?\s*[a-zA-Z!]|javascript:|\bon[a-z]+\s*=", re.IGNORECASE)


def _kind(char: str) -> str | None:
    """Why a character is hidden from a reader, or None when it shows as itself."""
    if char in _ALLOWED_CONTROLS:
        return None
    if char in _BIDI:
        return "bidi"
    if char in _ZERO_WIDTH:
        return "zero-width"
    code = ord(char)
    if 0xE0000 <= code <= 0xE007F:
        return "tag"
    if 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF:
        return "variation selector"
    category = unicodedata.category(char)
    if category in ("Cc", "Cf", "Zl", "Zp", "Co", "Cn"):
        return "invisible"
    return None


_KIND_WORDS = {
    "bidi": "text-direction control",
    "zero-width": "zero-width character",
    "tag": "hidden tag character",
    "variation selector": "variation selector",
    "invisible": "invisible or control character",
    "markup": "HTML or script markup",
}

_LABELS = {
    "bidi": "text direction",
    "zero-width": "zero-width",
    "tag": "hidden tags",
    "variation selector": "variation selector",
    "invisible": "invisible",
    "markup": "markup",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """Something a reviewer must know about a value: what, and where."""

    kind: str
    where: str
    chars: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """A short name for a badge: `text direction`, `zero-width`, `markup`."""
        return _LABELS.get(self.kind, self.kind)

    @property
    def message(self) -> str:
        """The finding in words, e.g. `text-direction control U+202E in args.reason`."""
        codes = ", ".join(f"U+{ord(c):04X}" for c in self.chars)
        what = _KIND_WORDS.get(self.kind, self.kind)
        return f"{what} {codes} in {self.where}" if codes else f"{what} in {self.where}"


@dataclass(slots=True)
class Shown:
    """A value made safe to show: escaped markup, with anything invisible made visible.

    Attributes:
        html: the escaped text with visible escapes; safe to put in a page as is.
        length: the text's length in characters.
        folded: the first `FOLD_AT` characters, escaped the same way, when it is longer.
        findings: what was flagged in it.
    """

    html: Markup
    length: int
    folded: Markup | None = None
    findings: list[Finding] = field(default_factory=list)

    def __html__(self) -> str:
        return str(self.html)


def _escape_visible(text: str) -> Markup:
    """Escape `text` and show each hidden character as a marked `⟨U+200B⟩`."""
    out: list[str] = []
    for char in text:
        kind = _kind(char)
        if kind is None:
            out.append(str(escape(char)))
            continue
        code = f"U+{ord(char):04X}"
        name = unicodedata.name(char, "unnamed character").lower()
        # Built from a fixed template and escaped parts only: never from raw input.
        out.append(f'<span class="hidden-char" title="{escape(name)}">\u27e8{code}\u27e9</span>')
    return Markup("".join(out))  # noqa: S704 - every piece above is escaped or fixed text


def _findings(text: str, where: str) -> list[Finding]:
    found: dict[str, list[str]] = {}
    for char in text:
        kind = _kind(char)
        if kind is not None and char not in found.setdefault(kind, []):
            found[kind].append(char)
    out = [Finding(kind, where, tuple(chars)) for kind, chars in found.items()]
    if _MARKUP.search(text):
        out.append(Finding("markup", where))
    return out


def reveal(text: object, where: str = "the text") -> Shown:
    """Prepare any value's text for the page: escaped, invisible characters shown, folded.

    Args:
        text: the value; anything but a string is shown through `str`.
        where: how findings name the value (`args.reason`).
    """
    value = text if isinstance(text, str) else str(text)
    shown = Shown(_escape_visible(value), len(value), findings=_findings(value, where))
    if len(value) > FOLD_AT:
        shown.folded = _escape_visible(value[:FOLD_AT])
    return shown


def show_value(value: Any, where: str) -> Shown:
    """A JSON value as a reviewer reads it: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return reveal(value, where)
    # ensure_ascii=False: an escaped \u202e in JSON text would hide the very thing to flag.
    text = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)
    shown = reveal(text, where)
    shown.findings = list(findings_in(value, where))
    return shown


def show_json(value: Any, where: str = "the value") -> Shown:
    """Pretty JSON of any value, escaped and with hidden characters shown."""
    text = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)
    shown = reveal(text, where)
    shown.findings = list(findings_in(value, where))
    return shown


def findings_in(value: Any, where: str) -> Iterable[Finding]:
    """Every finding in a JSON value's keys and strings, each named by its path."""
    if isinstance(value, str):
        yield from _findings(value, where)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{where}.{key}"
            yield from _findings(key, f"the key {path}")
            yield from findings_in(item, path)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from findings_in(item, f"{where}[{index}]")


def editable_json(value: Any) -> str:
    r"""Pretty JSON for the modify editor, with every hidden character as a `\u200b`-style escape.

    The editor is a plain text area: a raw right-to-left override there would reorder what
    the reviewer edits. As an escape it stays visible and still means the same JSON.
    """
    text = json.dumps(value, ensure_ascii=False, indent=2)
    out = []
    for char in text:
        if char in _ALLOWED_CONTROLS or _kind(char) is None:
            out.append(char)
            continue
        encoded = char.encode("utf-16-be")
        out.extend(
            f"\\u{int.from_bytes(encoded[i : i + 2], 'big'):04x}" for i in range(0, len(encoded), 2)
        )
    return "".join(out)
