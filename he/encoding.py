"""Packing vectors into ciphertext slots and checking ciphertexts before any arithmetic.

A vector longer than one ciphertext's slots is cut into consecutive chunks of ``slot_count``
values (the last one shorter); each chunk is one TenSEAL vector, serialized on its own. The chunk
lengths follow from the vector length alone (`chunk_lengths`), so both sides agree without
sending them.

Notes:
    HE is not CCA-secure, so a malformed or foreign ciphertext must never reach an addition or
    a decryption (REFERENCES 4.4, invariant 5). `load_ciphertexts` checks, per ciphertext: that it
    parses under the context, the number of values, two polynomials (a fresh or summed
    ciphertext, never an unrelinearised product), the parameter id of the top level, the number of
    primes, the degree, the NTT form and, for CKKS, the exact scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal as ts

from he.context import PublicContext, map_tenseal_errors
from he.errors import DecodeError, DecryptionError, MissingSecretKey, SpecError
from he.fixed import encode_fixed
from he.masking import Masking, apply_mask
from he.params import HEParams, Scheme
from he.spec import Spec, real_encoding

_CT_OVERHEAD_BYTES = 64 * 1024


def chunk_lengths(length: int, *, slot_count: int) -> list[int]:
    """Lengths of the chunks a vector of ``length`` values is packed into."""
    if length < 0 or slot_count <= 0:
        raise DecodeError(f"cannot pack {length} values into {slot_count} slots")
    full, rest = divmod(length, slot_count)
    return [slot_count] * full + ([rest] if rest else [])


def max_ciphertext_bytes(params: HEParams) -> int:
    """Upper bound on one serialized top-level ciphertext (two polynomials, all data primes)."""
    primes = len(params.coeff_mod_bit_sizes) - 1
    return 2 * params.poly_modulus_degree * primes * 8 + _CT_OVERHEAD_BYTES


def encrypt(ctx: Any, params: HEParams, values: npt.NDArray[Any]) -> list[bytes]:
    """Encrypt a 1-D vector chunk by chunk under a (public) TenSEAL context."""
    out: list[bytes] = []
    start = 0
    for size in chunk_lengths(int(values.shape[0]), slot_count=params.slot_count):
        chunk = values[start : start + size].tolist()
        start += size
        with map_tenseal_errors(f"TenSEAL could not encrypt a {params.scheme.value} chunk"):
            if params.scheme is Scheme.CKKS:
                vec = ts.ckks_vector(ctx, chunk)
            else:
                vec = ts.bfv_vector(ctx, chunk)
            out.append(vec.serialize())
    return out


def encrypt_reals(
    public: PublicContext, spec: Spec, values: npt.NDArray[np.float64]
) -> list[bytes]:
    """Encrypt a contribution's real values: CKKS, or BFV fixed point (`he.fixed`)."""
    params, bits = real_encoding(spec, public.params)
    data = values if bits is None else encode_fixed(values, bits=bits)
    return encrypt(public.tenseal(params.scheme), params, data)


def encrypt_masked(
    public: PublicContext,
    spec: Spec,
    integers: npt.NDArray[np.int64],
    reals: npt.NDArray[np.float64],
    masking: Masking,
) -> tuple[list[bytes], list[bytes]]:
    """Encrypt both sections with the owner's pairwise masks added in Z_t (`he.masking`).

    Raises:
        SpecError: the reals are not BFV fixed point (masks need BFV's exact ring).
    """
    params, bits = real_encoding(spec, public.params) if reals.size else (None, 0)
    if bits is None or (params is not None and params.scheme is not Scheme.BFV):
        raise SpecError("masking needs real values in BFV fixed point (no CKKS in the context)")
    bfv = public.params_for(Scheme.BFV)
    t = bfv.plain_modulus or 0
    fixed = encode_fixed(reals, bits=bits) if reals.size else np.zeros(0, dtype=np.int64)
    values = np.concatenate([integers.astype(np.int64), fixed])
    masked = apply_mask(values, masking.mask(values.size, modulus=t), modulus=t)
    ctx = public.tenseal(Scheme.BFV)
    ints = encrypt(ctx, bfv, masked[: integers.size]) if integers.size else []
    rest = encrypt(ctx, bfv, masked[integers.size :]) if reals.size else []
    return ints, rest


def load_sections(
    ctx_of: Any,
    params: tuple[HEParams, ...],
    spec: Spec,
    integers: Sequence[bytes],
    reals: Sequence[bytes],
    *,
    lengths: tuple[int, int],
    what: str,
) -> dict[str, list[Any]]:
    """Load and check a contribution's two sections: BFV integers, then reals.

    Args:
        ctx_of: scheme -> the TenSEAL context to load under (public or secret).
        params: the context's parameters.
        spec: the contribution's spec (it decides how reals are encoded).
        integers: the BFV ciphertexts of counts and histograms.
        reals: the ciphertexts of real values (CKKS, or BFV fixed point).
        lengths: (number of integers, number of reals).
        what: names the contribution in errors.

    Raises:
        DecodeError: a ciphertext is malformed, foreign, of the wrong size, level or scale.
    """
    by_scheme = {p.scheme: p for p in params}
    out: dict[str, list[Any]] = {"integers": [], "reals": []}
    n_int, n_real = lengths
    if n_int or integers:
        bfv = by_scheme.get(Scheme.BFV)
        if bfv is None:
            raise DecodeError(f"{what}: integers need BFV parameters")
        out["integers"] = load_ciphertexts(
            ctx_of(Scheme.BFV), bfv, integers, length=n_int, what=what
        )
    if n_real or reals:
        chosen, _ = real_encoding(spec, params)
        out["reals"] = load_ciphertexts(
            ctx_of(chosen.scheme), chosen, reals, length=n_real, what=f"{what} (reals)"
        )
    return out


def max_sections(params: tuple[HEParams, ...], spec: Spec, n_int: int, n_real: int) -> int:
    """How many ciphertexts a contribution of ``spec`` holds under ``params``."""
    count = 0
    if n_int:
        bfv = {p.scheme: p for p in params}.get(Scheme.BFV)
        count += -(-n_int // bfv.slot_count) if bfv is not None else 0
    if n_real:
        count += -(-n_real // real_encoding(spec, params)[0].slot_count)
    return max(count, 1)


def load_ciphertexts(
    ctx: Any, params: HEParams, blobs: Sequence[bytes], *, length: int, what: str
) -> list[Any]:
    """Deserialize and check the ciphertexts holding a vector of ``length`` values.

    Raises:
        DecodeError: a ciphertext is malformed, foreign, of the wrong size, level or scale.
    """
    sizes = chunk_lengths(length, slot_count=params.slot_count)
    if len(blobs) != len(sizes):
        raise DecodeError(
            f"{what}: expected {len(sizes)} {params.scheme.value} ciphertext(s), got {len(blobs)}"
        )
    limit = max_ciphertext_bytes(params)
    seal = ctx.seal_context().data
    first_parms = seal.first_parms_id()
    primes = len(params.coeff_mod_bit_sizes) - 1
    vectors = []
    for index, (blob, size) in enumerate(zip(blobs, sizes, strict=True)):
        label = f"{what}: {params.scheme.value} ciphertext {index}"
        if len(blob) > limit:
            raise DecodeError(f"{label} has {len(blob)} bytes; at most {limit} allowed")
        with map_tenseal_errors(f"{label} does not parse under this context"):
            if params.scheme is Scheme.CKKS:
                vec = ts.ckks_vector_from(ctx, blob)
            else:
                vec = ts.bfv_vector_from(ctx, blob)
            cts = vec.ciphertext()
        if vec.size() != size:
            raise DecodeError(f"{label} holds {vec.size()} values; expected {size}")
        if len(cts) != 1:
            raise DecodeError(f"{label} wraps {len(cts)} ciphertexts; expected 1")
        ct = cts[0]
        checks = {
            "polynomial count": (ct.size(), 2),
            "parameter id": (list(ct.parms_id()), list(first_parms)),
            "prime count": (ct.coeff_modulus_size(), primes),
            "degree": (ct.poly_modulus_degree(), params.poly_modulus_degree),
            "NTT form": (ct.is_ntt_form(), params.scheme is Scheme.CKKS),
        }
        if params.scheme is Scheme.CKKS:
            checks["scale"] = (ct.scale, float(2 ** (params.scale_bits or 0)))
        for name, (found, expected) in checks.items():
            if found != expected:
                raise DecodeError(f"{label} has {name} {found!r}; expected {expected!r}")
        vectors.append(vec)
    return vectors


def add_into(accumulator: list[Any] | None, vectors: list[Any]) -> list[Any]:
    """Add checked ciphertexts slot-wise into an accumulator (the first addend becomes it)."""
    if accumulator is None:
        return vectors
    for acc, vec in zip(accumulator, vectors, strict=True):
        with map_tenseal_errors("TenSEAL could not add two ciphertexts"):
            acc.add_(vec)
    return accumulator


def serialize(vectors: list[Any]) -> list[bytes]:
    """Serialize ciphertexts (the inverse of `load_ciphertexts`)."""
    return [vec.serialize() for vec in vectors]


def decrypt(ctx: Any, params: HEParams, vectors: list[Any]) -> npt.NDArray[Any]:
    """Decrypt chunks with a context that holds the secret key and join them.

    Returns:
        int64 values for BFV, float64 for CKKS.

    Raises:
        MissingSecretKey: the context has no secret key.
        DecryptionError: TenSEAL failed or returned non-finite values.
    """
    if not ctx.has_secret_key():
        raise MissingSecretKey("this context has no secret key; only the key holder decrypts")
    dtype = np.float64 if params.scheme is Scheme.CKKS else np.int64
    parts = []
    for vec in vectors:
        with map_tenseal_errors("TenSEAL could not decrypt", DecryptionError):
            parts.append(np.asarray(vec.decrypt(), dtype=dtype))
    out = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    if params.scheme is Scheme.CKKS and not np.all(np.isfinite(out)):
        raise DecryptionError("CKKS decryption returned non-finite values")
    return out
