"""Public and secret TenSEAL contexts, kept apart by type.

Threat model: the public context is what owners and the coordinator receive. It holds the public
key only (no secret key, no relinearisation or Galois keys: this package only adds ciphertexts),
so nothing that holds a `PublicContext` can decrypt. `SecretContext` is only ever created inside
`he.keyholder.KeyHolder`. A public context arriving as bytes is refused if it carries a secret key,
if its parameters are not the secure ones it declares, or if it does not parse.

Notes:
    The fingerprint is the SHA-256 of the exact public-context bytes the key holder published.
    Contributions and aggregates are bound to it, so ciphertexts under another key (which TenSEAL
    would load without complaint when the parameters coincide) are refused before any arithmetic
    (REFERENCES 4.4, test c). TenSEAL 0.3.18 serializes deterministically, and
    ``serialize(save_secret_key=False)`` omits the secret key (REFERENCES 4.4, own check).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import tenseal as ts

from he import _wire
from he.errors import ContextMismatch, DecodeError, HeError, ParameterError
from he.params import HEParams, Scheme

DEFAULT_MAX_CONTEXT_BYTES = 64 * 1024 * 1024
_TS_SCHEME = {Scheme.CKKS: ts.SCHEME_TYPE.CKKS, Scheme.BFV: ts.SCHEME_TYPE.BFV}


@contextmanager
def map_tenseal_errors(message: str, error: type[HeError] = DecodeError) -> Iterator[None]:
    """Turn TenSEAL's ValueError/RuntimeError/TypeError into an he error, keeping the cause."""
    try:
        yield
    except (ValueError, RuntimeError, TypeError) as exc:
        if isinstance(exc, HeError):
            raise
        raise error(f"{message}: {exc}") from exc


def _check_unique(params: Sequence[HEParams]) -> tuple[HEParams, ...]:
    items = tuple(params)
    if not items or not all(isinstance(p, HEParams) for p in items):
        raise ParameterError("params must be one HEParams or a sequence of them (one per scheme)")
    schemes = [p.scheme for p in items]
    if len(set(schemes)) != len(schemes):
        raise ParameterError(f"at most one HEParams per scheme, got {[s.value for s in schemes]}")
    return items


class SecretContext:
    """TenSEAL contexts *with* secret keys, one per scheme. Only `KeyHolder` creates one."""

    __slots__ = ("_contexts", "_params")

    def __init__(self, params: Sequence[HEParams]) -> None:
        self._params = _check_unique(params)
        self._contexts: dict[Scheme, ts.Context] = {}
        for p in self._params:
            with map_tenseal_errors(f"TenSEAL refused {p.scheme.value} parameters", ParameterError):
                if p.scheme is Scheme.CKKS:
                    ctx = ts.context(
                        ts.SCHEME_TYPE.CKKS,
                        poly_modulus_degree=p.poly_modulus_degree,
                        coeff_mod_bit_sizes=list(p.coeff_mod_bit_sizes),
                    )
                    ctx.global_scale = float(2 ** (p.scale_bits or 0))
                else:
                    ctx = ts.context(
                        ts.SCHEME_TYPE.BFV,
                        poly_modulus_degree=p.poly_modulus_degree,
                        plain_modulus=p.plain_modulus,
                        coeff_mod_bit_sizes=list(p.coeff_mod_bit_sizes),
                    )
            self._contexts[p.scheme] = ctx

    def __repr__(self) -> str:
        return f"SecretContext(schemes={[p.scheme.value for p in self._params]}, <secret>)"

    @property
    def params(self) -> tuple[HEParams, ...]:
        """The parameters, one per scheme."""
        return self._params

    def tenseal(self, scheme: Scheme) -> ts.Context:
        """The TenSEAL context (with secret key) for a scheme."""
        try:
            return self._contexts[scheme]
        except KeyError as exc:
            raise ContextMismatch(f"the key holder has no {scheme.value} keys") from exc

    def public_bytes(self) -> bytes:
        """The public-context envelope: parameters plus each context without any secret."""
        blobs = [
            self._contexts[p.scheme].serialize(
                save_public_key=True,
                save_secret_key=False,
                save_galois_keys=False,
                save_relin_keys=False,
            )
            for p in self._params
        ]
        header = {"params": [p.to_dict() for p in self._params]}
        return _wire.encode(_wire.Kind.PUBLIC_CONTEXT, header, blobs)


class PublicContext:
    """The key holder's public context: encrypt under it, add under it, never decrypt.

    Build one with `PublicContext.from_bytes` (or `KeyHolder.public_context`). It has no decrypt
    method and its TenSEAL contexts hold no secret key.
    """

    __slots__ = ("_bytes", "_contexts", "_fingerprint", "_params")

    def __init__(self, data: bytes, *, max_bytes: int = DEFAULT_MAX_CONTEXT_BYTES) -> None:
        env = _wire.decode(
            bytes(data),
            max_bytes=max_bytes,
            max_blobs=len(Scheme),
            max_blob_bytes=max_bytes,
            what="public context",
        )
        if env.kind is not _wire.Kind.PUBLIC_CONTEXT:
            raise DecodeError(f"expected a public context, got a {env.kind.name.lower()}")
        raw = _wire.get_list(env.header, "params", what="public context", max_len=len(Scheme))
        params = _check_unique([HEParams.from_dict(item) for item in raw])
        if len(env.blobs) != len(params):
            raise DecodeError("public context must hold one TenSEAL context per parameter set")
        self._contexts: dict[Scheme, ts.Context] = {}
        for p, blob in zip(params, env.blobs, strict=True):
            with map_tenseal_errors(f"public {p.scheme.value} context does not parse"):
                ctx = ts.context_from(blob)
            _check_public(ctx, p)
            self._contexts[p.scheme] = ctx
        self._params = params
        self._bytes = bytes(data)
        self._fingerprint = hashlib.sha256(self._bytes).hexdigest()

    @classmethod
    def from_bytes(
        cls, data: bytes, *, max_bytes: int = DEFAULT_MAX_CONTEXT_BYTES
    ) -> PublicContext:
        """Load and check a public context.

        Raises:
            DecodeError: the bytes are malformed, too large, or carry a secret key.
            InsecureParameters: the declared parameters are below the security level.
            ContextMismatch: the TenSEAL context does not have the declared parameters.
        """
        return cls(data, max_bytes=max_bytes)

    def to_bytes(self) -> bytes:
        """The exact bytes the key holder published (their SHA-256 is the fingerprint)."""
        return self._bytes

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the serialized public context."""
        return self._fingerprint

    @property
    def params(self) -> tuple[HEParams, ...]:
        """The parameters, one per scheme."""
        return self._params

    def params_for(self, scheme: Scheme) -> HEParams:
        """The parameters of one scheme.

        Raises:
            ContextMismatch: this context has no keys for the scheme.
        """
        for p in self._params:
            if p.scheme is scheme:
                return p
        raise ContextMismatch(f"the public context has no {scheme.value} keys")

    def tenseal(self, scheme: Scheme) -> ts.Context:
        """The TenSEAL context (public key only) for a scheme."""
        self.params_for(scheme)
        return self._contexts[scheme]

    def __repr__(self) -> str:
        schemes = [p.scheme.value for p in self._params]
        return f"PublicContext(schemes={schemes}, fingerprint={self._fingerprint[:16]}...)"


def _check_public(ctx: Any, p: HEParams) -> None:
    """Refuse a deserialized context that has a secret key or other parameters than declared."""
    if ctx.has_secret_key() or ctx.is_private():
        raise DecodeError("public context carries a secret key; refusing it")
    if not ctx.has_public_key():
        raise DecodeError(f"public {p.scheme.value} context has no public key")
    seal = ctx.seal_context().data
    key_data = seal.key_context_data()
    parms = key_data.parms()
    found: dict[str, object] = {
        "scheme": str(parms.scheme()).rsplit(".", 1)[-1].lower(),
        "poly_modulus_degree": parms.poly_modulus_degree(),
        "total bits": key_data.total_coeff_modulus_bit_count(),
        "data bits": seal.first_context_data().total_coeff_modulus_bit_count(),
    }
    expected: dict[str, object] = {
        "scheme": p.scheme.value,
        "poly_modulus_degree": p.poly_modulus_degree,
        "total bits": sum(p.coeff_mod_bit_sizes),
        "data bits": p.data_modulus_bits,
    }
    if p.scheme is Scheme.CKKS:
        found["global scale"] = ctx.global_scale
        expected["global scale"] = float(2 ** (p.scale_bits or 0))
    else:
        found["plain modulus"] = 2 * seal.first_context_data().plain_upper_half_threshold() - 1
        expected["plain modulus"] = p.plain_modulus
    for key, value in expected.items():
        if found[key] != value:
            raise ContextMismatch(
                f"public {p.scheme.value} context has {key} {found[key]!r}, declared {value!r}"
            )
