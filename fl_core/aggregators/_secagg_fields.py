"""Secure aggregation's messages on the wire: each :mod:`mpc` dataclass as flat payload fields.

``m.<field>`` holds an int, str, bytes, list of ints or the masked vector; a ``Mapping[int, bytes]``
becomes ``m.<field>.keys`` and ``m.<field>.values``. Decoding checks every type and size through
the payload's typed getters; :mod:`mpc` then validates the content.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

import mpc
from mpc.secagg.messages import Request, Response

from ..errors import CodecError
from ..payload import Payload


def message_to_fields(message: Request | Response) -> dict[str, object]:
    """Flatten an mpc message into ``m.<field>`` payload fields."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(message):
        value = getattr(message, f.name)
        if isinstance(value, Mapping):
            keys = sorted(value)
            out[f"m.{f.name}.keys"] = tuple(int(k) for k in keys)
            out[f"m.{f.name}.values"] = tuple(value[k] for k in keys)
        else:
            out[f"m.{f.name}"] = value
    return out


def message_from_fields(
    cls: type[Any], payload: Payload, *, masked: tuple[str, int] | None = None
) -> Any:
    """Rebuild an mpc message of type ``cls`` from ``m.<field>`` fields, checking every type.

    ``masked`` gives (dtype, length) for the masked vector of a MaskedInputResponse.
    """
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        name = f"m.{f.name}"
        origin = typing.get_origin(hint)
        if hint is int:
            kwargs[f.name] = payload.get_int(name, lo=0, hi=2**63 - 1)
        elif hint is str:
            kwargs[f.name] = payload.get_str(name)
        elif hint is bytes:
            kwargs[f.name] = payload.get_bytes(name, max_size=1 << 16)
        elif origin is tuple:
            kwargs[f.name] = payload.get_ints(name)
        elif origin in (Mapping, typing.Mapping) or str(origin).endswith("Mapping"):
            keys = payload.get_ints(name + ".keys")
            values = payload.get_bytes_list(name + ".values", item_max_size=1 << 16)
            if len(keys) != len(values) or len(set(keys)) != len(keys):
                raise CodecError(f"field {name}: {len(keys)} keys for {len(values)} values")
            kwargs[f.name] = dict(zip(keys, values, strict=True))
        elif masked is not None:
            dtype, length = masked
            kwargs[f.name] = payload.get_tensor(name, dtype=dtype, shape=(length,))
        else:
            raise CodecError(f"field {name}: no decoder for {hint}")
    return cls(**kwargs)


def _response_type(stage: mpc.Stage) -> type[Any]:
    return {
        mpc.Stage.ADVERTISE_KEYS: mpc.AdvertiseKeysResponse,
        mpc.Stage.SHARE_KEYS: mpc.ShareKeysResponse,
        mpc.Stage.MASKED_INPUT: mpc.MaskedInputResponse,
        mpc.Stage.CONSISTENCY_CHECK: mpc.ConsistencyCheckResponse,
        mpc.Stage.UNMASK: mpc.UnmaskResponse,
    }[stage]


def _request_type(stage: mpc.Stage) -> type[Any]:
    return {
        mpc.Stage.ADVERTISE_KEYS: mpc.AdvertiseKeysRequest,
        mpc.Stage.SHARE_KEYS: mpc.ShareKeysRequest,
        mpc.Stage.MASKED_INPUT: mpc.MaskedInputRequest,
        mpc.Stage.CONSISTENCY_CHECK: mpc.ConsistencyCheckRequest,
        mpc.Stage.UNMASK: mpc.UnmaskRequest,
    }[stage]
