"""Payload: the ordered, named, typed values that a task or a result carries.

Every stage of every protocol speaks in payloads, so the transports stay generic: they move a
payload without knowing what it means. The receiving side reads it back through the typed getters,
which check type, dtype, shape, size and range and raise :class:`~fl_core.errors.CodecError` naming
the field. Arrays in a received payload are read-only views of the received buffer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .codec import dtype_name, expect_tensor
from .errors import CodecError

Value = (
    int | float | str | bytes | bool | npt.NDArray[np.generic] | tuple[int, ...] | tuple[bytes, ...]
)


def _check_value(name: str, value: object) -> Value:
    if isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, np.ndarray):
        dtype_name(value)
        return value
    if isinstance(value, tuple | list):
        items = tuple(value)
        if all(isinstance(v, bytes) for v in items) and items:
            return items
        if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            return tuple(int(v) for v in items)
        raise CodecError(f"field {name!r}: a list must hold only ints or only bytes")
    raise CodecError(f"field {name!r}: type {type(value).__name__} cannot travel in a payload")


class Payload(Mapping[str, Value]):
    """An immutable ordered mapping of field name to value."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Mapping[str, object] | None = None, /, **kwargs: object) -> None:
        merged: dict[str, Value] = {}
        for source in (fields or {}), kwargs:
            for name, value in source.items():
                if not isinstance(name, str) or not name:
                    raise CodecError("payload field names must be non-empty strings")
                merged[name] = _check_value(name, value)
        self._fields = merged

    def __getitem__(self, name: str) -> Value:
        return self._fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        parts = []
        for name, value in self._fields.items():
            if isinstance(value, np.ndarray):
                parts.append(f"{name}=<{value.dtype}{list(value.shape)}>")
            elif isinstance(value, bytes):
                parts.append(f"{name}=<{len(value)} bytes>")
            elif isinstance(value, tuple) and value and isinstance(value[0], bytes):
                parts.append(f"{name}=<{len(value)} byte strings>")
            else:
                parts.append(f"{name}={value!r}")
        return f"Payload({', '.join(parts)})"

    def merged(self, other: Mapping[str, object]) -> Payload:
        """Return a payload with ``other``'s fields added (a name may not repeat)."""
        clash = set(self._fields) & set(other)
        if clash:
            raise CodecError(f"payload fields {sorted(clash)} are set twice")
        return Payload({**self._fields, **dict(other)})

    @property
    def nbytes(self) -> int:
        """Bytes of content (tensor data, byte strings, and 8 per scalar): the traffic figure."""
        total = 0
        for name, value in self._fields.items():
            total += len(name)
            if isinstance(value, np.ndarray):
                total += int(value.nbytes)
            elif isinstance(value, bytes | str):
                total += len(value)
            elif isinstance(value, tuple):
                total += sum(len(v) if isinstance(v, bytes) else 8 for v in value)
            else:
                total += 8
        return total

    # --- typed getters: the only way protocol code reads a received payload ---------------------

    def _get(self, name: str) -> Value:
        try:
            return self._fields[name]
        except KeyError:
            raise CodecError(f"field {name!r} is missing") from None

    def get_int(self, name: str, *, lo: int | None = None, hi: int | None = None) -> int:
        """Return an integer field, checked to lie in ``[lo, hi]``."""
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise CodecError(f"field {name!r}: expected an integer, got {type(value).__name__}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise CodecError(f"field {name!r}: {value} is outside [{lo}, {hi}]")
        return value

    def get_float(self, name: str, *, lo: float | None = None, hi: float | None = None) -> float:
        """Return a finite float field (an int is accepted), checked to lie in ``[lo, hi]``."""
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CodecError(f"field {name!r}: expected a number, got {type(value).__name__}")
        out = float(value)
        if not math.isfinite(out):
            raise CodecError(f"field {name!r}: {out} is not finite")
        if (lo is not None and out < lo) or (hi is not None and out > hi):
            raise CodecError(f"field {name!r}: {out} is outside [{lo}, {hi}]")
        return out

    def get_bool(self, name: str) -> bool:
        """Return a boolean field."""
        value = self._get(name)
        if not isinstance(value, bool):
            raise CodecError(f"field {name!r}: expected a boolean, got {type(value).__name__}")
        return value

    def get_str(
        self, name: str, *, max_len: int = 4096, allowed: Sequence[str] | None = None
    ) -> str:
        """Return a string field, at most ``max_len`` characters, optionally from ``allowed``."""
        value = self._get(name)
        if not isinstance(value, str):
            raise CodecError(f"field {name!r}: expected a string, got {type(value).__name__}")
        if len(value) > max_len:
            raise CodecError(f"field {name!r}: {len(value)} characters, at most {max_len} allowed")
        if allowed is not None and value not in allowed:
            raise CodecError(f"field {name!r}: {value!r} is not one of {list(allowed)}")
        return value

    def get_bytes(self, name: str, *, size: int | None = None, max_size: int = 1 << 30) -> bytes:
        """Return a byte-string field of exactly ``size`` bytes, or at most ``max_size``."""
        value = self._get(name)
        if not isinstance(value, bytes):
            raise CodecError(f"field {name!r}: expected bytes, got {type(value).__name__}")
        if size is not None and len(value) != size:
            raise CodecError(f"field {name!r}: {len(value)} bytes, expected {size}")
        if len(value) > max_size:
            raise CodecError(f"field {name!r}: {len(value)} bytes, at most {max_size} allowed")
        return value

    def get_ints(self, name: str, *, max_len: int = 1 << 20) -> tuple[int, ...]:
        """Return a list-of-integers field."""
        value = self._get(name)
        if not isinstance(value, tuple) or any(isinstance(v, bytes) for v in value):
            raise CodecError(f"field {name!r}: expected a list of integers")
        if len(value) > max_len:
            raise CodecError(f"field {name!r}: {len(value)} items, at most {max_len} allowed")
        return value  # type: ignore[return-value]

    def get_bytes_list(
        self, name: str, *, max_len: int = 1 << 20, item_max_size: int = 1 << 30
    ) -> tuple[bytes, ...]:
        """Return a list-of-byte-strings field (an empty list may arrive as an empty int list)."""
        value = self._get(name)
        if not isinstance(value, tuple) or any(not isinstance(v, bytes) for v in value):
            raise CodecError(f"field {name!r}: expected a list of byte strings")
        if len(value) > max_len:
            raise CodecError(f"field {name!r}: {len(value)} items, at most {max_len} allowed")
        for item in value:
            if len(item) > item_max_size:  # type: ignore[arg-type]
                raise CodecError(f"field {name!r}: an item exceeds {item_max_size} bytes")
        return value  # type: ignore[return-value]

    def get_tensor(
        self,
        name: str,
        *,
        dtype: str,
        shape: Sequence[int] | None = None,
        finite: bool = False,
    ) -> npt.NDArray[np.generic]:
        """Return an array field checked for dtype, shape and (optionally) finiteness."""
        value = self._get(name)
        if not isinstance(value, np.ndarray):
            raise CodecError(f"field {name!r}: expected a tensor, got {type(value).__name__}")
        return expect_tensor(value, field=name, dtype=dtype, shape=shape, finite=finite)

    def section(self, prefix: str) -> Payload:
        """Return the fields whose names start with ``prefix + '.'``, with the prefix removed."""
        cut = len(prefix) + 1
        return Payload({k[cut:]: v for k, v in self._fields.items() if k.startswith(prefix + ".")})


def prefixed(prefix: str, fields: Mapping[str, object]) -> dict[str, object]:
    """Return ``fields`` with every name prefixed by ``prefix + '.'`` (for composed protocols)."""
    return {f"{prefix}.{name}": value for name, value in fields.items()}
