"""Which fields two job files differ in, read from their parsed TOML (not their text).

Job files are compared by the SHA-256 of their text, which is what an owner agrees to. When two
hashes differ, a person needs the field: this module parses both files and lists the dotted
``section.field`` names whose values differ, so that comments, whitespace, key order and quoting
style never show up as a difference.
"""

from __future__ import annotations

import tomllib
from typing import Any

MAX_NAMED = 5
"""At most this many fields are named in one message; the rest are counted."""


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def job_differences(old: str, new: str) -> list[str]:
    """The dotted fields whose values differ between two job files' texts, sorted.

    A field present in one file only is listed too (one file may state a default the other
    leaves out; both are named, since the texts, and so the agreed hashes, differ). A text that
    does not parse is reported as the single entry ``"(not valid TOML)"``.
    """
    try:
        a, b = _flatten(tomllib.loads(old)), _flatten(tomllib.loads(new))
    except tomllib.TOMLDecodeError:
        return ["(not valid TOML)"]
    return sorted(k for k in a.keys() | b.keys() if a.get(k, _MISSING) != b.get(k, _MISSING))


_MISSING = object()


def describe_differences(old: str, new: str) -> str:
    """A phrase for messages naming the differing fields with both values.

    For example ``"they differ in train.lr (0.1 -> 0.2)"``, or that only comments or
    formatting differ.
    """
    fields = job_differences(old, new)
    if not fields:
        return "they differ only in comments or formatting"
    if fields == ["(not valid TOML)"]:
        return "one of them is not valid TOML"
    a, b = _flatten(tomllib.loads(old)), _flatten(tomllib.loads(new))

    def show(name: str) -> str:
        before = repr(a[name]) if name in a else "unset"
        after = repr(b[name]) if name in b else "unset"
        return f"{name} ({before} -> {after})"

    named = ", ".join(show(f) for f in fields[:MAX_NAMED])
    more = len(fields) - MAX_NAMED
    return f"they differ in {named}" + (f" and {more} more field(s)" if more > 0 else "")
