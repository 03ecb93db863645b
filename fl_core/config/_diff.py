"""Which fields two job files differ in, read from their parsed TOML (not their text).

Job files are compared by the SHA-256 of their text, which is what an owner agrees to. When two
hashes differ, a person needs the field: this module parses both files and lists the dotted
``section.field`` names whose values differ, so that comments, whitespace, key order and quoting
style never show up as a difference.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
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


DIGEST_BYTES = 8
"""Bytes of SHA-256 kept per field: enough to tell values apart, too few to carry them."""


def field_digests(text: str) -> dict[str, bytes]:
    """Each dotted field of a job file's text with a short digest of its value.

    A client sends these at join, so a coordinator that runs another file can name the fields
    that differ without either side sending its file. Values are hashed, not sent.
    """
    try:
        flat = _flatten(tomllib.loads(text))
    except tomllib.TOMLDecodeError:
        return {}
    return {
        name: hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).digest()[
            :DIGEST_BYTES
        ]
        for name, value in flat.items()
    }


def describe_digest_differences(mine: str, theirs: Mapping[str, bytes]) -> str:
    """A phrase naming the fields whose digests differ from ``mine`` (this side's job text)."""
    own = field_digests(mine)
    if not theirs:
        return "the client sent no field digests"
    fields = sorted(k for k in own.keys() | theirs.keys() if own.get(k) != theirs.get(k))
    if not fields:
        return "they differ only in comments or formatting"
    named = ", ".join(fields[:MAX_NAMED])
    more = len(fields) - MAX_NAMED
    return f"they differ in {named}" + (f" and {more} more field(s)" if more > 0 else "")
