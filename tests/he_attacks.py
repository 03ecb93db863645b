"""A dishonest coordinator's attacks on the HE key holder (issue 10), for the attack tests.

The coordinator holds only the public context and what owners send it. These helpers build
ciphertexts no owner made, by writing SEAL's serialization directly (TenSEAL has no API for it):

* `crafted_key_probe`: the two CKKS ciphertexts (0, Delta) and (0, Delta * x^(N/2)). Decrypted,
  they give the real parts of s(zeta_j) and of i^(e_j) s(zeta_j) on every slot, so one
  release of both recovers the secret key s exactly (`recover_secret_key`);
* `decrypt_with_recovered_key`: m = c0 + c1 * s in SEAL's NTT domain, decoded through a
  ciphertext (m, 0) that any context with the same parameters decrypts to m's values.

Only the CKKS_8192 preset is supported (what the statistics and training paths use).
"""

from __future__ import annotations

import os
import struct
import tempfile
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal as ts
import tenseal.sealapi as sealapi

from he import CKKS_8192, PublicContext, Scheme

N = CKKS_8192.poly_modulus_degree
SLOTS = N // 2
SCALE_BITS = CKKS_8192.scale_bits or 0
DATA_PRIMES = [
    m.value() for m in sealapi.CoeffModulus.Create(N, list(CKKS_8192.coeff_mod_bit_sizes))
][:-1]
LEVELS = len(DATA_PRIMES)
_VERSION = b"\x04\x03"  # SEAL 4.x serialization version TenSEAL 0.3.18 writes
_ENCODER: Any = None
_CONTEXT: Any = None


def _seal_header(body_len: int) -> bytes:
    return b"\x5e\xa1\x10" + _VERSION + b"\x00\x00\x00" + struct.pack("<Q", 16 + body_len)


def _seal_ciphertext(
    parms_id: list[int], polys: list[npt.NDArray[np.uint64]], scale: float
) -> bytes:
    data = np.concatenate(polys).astype("<u8").tobytes()
    dyn_body = struct.pack("<Q", len(data) // 8) + data
    body = (
        struct.pack("<4Q", *parms_id)
        + b"\x01"  # NTT form
        + struct.pack("<QQQ", len(polys), N, LEVELS)
        + struct.pack("<d", scale)
        + struct.pack("<Q", 1)  # correction factor
        + _seal_header(len(dyn_body))
        + dyn_body
    )
    return _seal_header(len(body)) + body


def _varint(x: int) -> bytes:
    out = b""
    while True:
        low, x = x & 0x7F, x >> 7
        if not x:
            return out + bytes([low])
        out += bytes([low | 0x80])


def _tenseal_vector(size: int, ciphertext: bytes, scale: float) -> bytes:
    """TenSEAL's CKKSVectorProto: sizes = 1, ciphertexts = 2, scale = 3."""
    sizes = _varint(size)
    return (
        b"\x0a" + _varint(len(sizes)) + sizes
        + b"\x12" + _varint(len(ciphertext)) + ciphertext
        + b"\x19" + struct.pack("<d", scale)
    )  # fmt: skip


def _fields(message: bytes) -> dict[int, list[bytes]]:
    """The length-delimited fields of a protobuf message (enough for CKKSVectorProto)."""
    out: dict[int, list[bytes]] = {}
    i = 0
    while i < len(message):
        tag, i = _read_varint(message, i)
        number, wire = tag >> 3, tag & 7
        if wire == 2:
            length, i = _read_varint(message, i)
            out.setdefault(number, []).append(message[i : i + length])
            i += length
        elif wire == 1:
            i += 8
        elif wire == 0:
            _, i = _read_varint(message, i)
        else:
            raise ValueError(f"wire type {wire}")
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _ciphertext_words(blob: bytes) -> list[int]:
    """The 2 * N * levels words of a one-chunk TenSEAL CKKS vector (SEAL decompresses them)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "ct")
        with open(path, "wb") as fh:
            fh.write(_fields(blob)[2][0])
        ct = sealapi.Ciphertext()
        ct.load(_seal_context(), path)
    words = ct.dyn_array()
    return [words.at(i) for i in range(words.size())]


def _seal_context() -> Any:
    global _CONTEXT
    if _CONTEXT is None:
        parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(N)
        parms.set_coeff_modulus(sealapi.CoeffModulus.Create(N, list(CKKS_8192.coeff_mod_bit_sizes)))
        _CONTEXT = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
    return _CONTEXT


def _encoder() -> Any:
    """A SEAL CKKS encoder for the preset's parameters (no key involved)."""
    global _ENCODER
    if _ENCODER is None:
        _ENCODER = sealapi.CKKSEncoder(_seal_context())
    return _ENCODER


def _ntt_of_slots(slots: npt.NDArray[np.complex128]) -> npt.NDArray[np.uint64]:
    """SEAL's NTT-form words of the integer polynomial whose slot values are ``slots``."""
    plain = sealapi.Plaintext()
    _encoder().encode([complex(z) for z in slots], 1.0, plain)
    return np.array([plain.data(i) for i in range(N * LEVELS)], dtype=np.uint64)


def _slot_signs() -> npt.NDArray[np.complex128]:
    """x^(N/2) on slot j: zeta^(3^j (N/2)) = i^(3^j) = i * (-1)^j (SEAL orders slots by 3^j)."""
    return 1j * (-1.0) ** np.arange(SLOTS)


def _times_delta(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    out = np.empty_like(words)
    for level, q in enumerate(DATA_PRIMES):
        part = words[level * N : (level + 1) * N]
        delta = pow(2, SCALE_BITS, q)
        out[level * N : (level + 1) * N] = [(int(w) * delta) % q for w in part]
    return out


def crafted_key_probe(public: PublicContext) -> tuple[bytes, bytes]:
    """Two CKKS ciphertexts (0, Delta) and (0, Delta x^(N/2)) under ``public``'s parameters."""
    ctx = public.tenseal(Scheme.CKKS)
    parms_id = ts.ckks_vector(ctx, [0.0]).ciphertext()[0].parms_id()
    zero = np.zeros(N * LEVELS, dtype=np.uint64)
    one = np.concatenate([np.full(N, pow(2, SCALE_BITS, q), dtype=np.uint64) for q in DATA_PRIMES])
    half = _times_delta(_ntt_of_slots(_slot_signs()))
    scale = float(2**SCALE_BITS)
    out = []
    for c1 in (one, half):
        raw = _tenseal_vector(SLOTS, _seal_ciphertext(parms_id, [zero, c1], scale), scale)
        out.append(ts.ckks_vector_from(ctx, raw).serialize())  # what an owner's vector looks like
    return out[0], out[1]


def recover_secret_key(real_parts: npt.NDArray[np.float64]) -> npt.NDArray[np.uint64]:
    """The secret key's NTT-form words from the released values of the two probes.

    ``real_parts`` are the 2 * 4096 released values: Re s(zeta_j), then Re(i (-1)^j s(zeta_j))
    = -(-1)^j Im s(zeta_j). Re-encoding s(zeta_j) at scale 1 rounds to the integer polynomial s.
    """
    re = np.asarray(real_parts[:SLOTS], dtype=np.float64)
    im = -((-1.0) ** np.arange(SLOTS)) * np.asarray(real_parts[SLOTS : 2 * SLOTS], dtype=np.float64)
    return _ntt_of_slots(re + 1j * im)


def decrypt_with_recovered_key(
    secret_ntt: npt.NDArray[np.uint64], blob: bytes, public: PublicContext
) -> npt.NDArray[np.float64]:
    """Decrypt one serialized CKKS vector chunk with a recovered key: m = c0 + c1 * s."""
    vec = ts.ckks_vector_from(public.tenseal(Scheme.CKKS), blob)
    ct = vec.ciphertext()[0]
    size = N * LEVELS
    words = _ciphertext_words(blob)
    m = np.empty(size, dtype=np.uint64)
    for level, q in enumerate(DATA_PRIMES):
        for j in range(level * N, (level + 1) * N):
            m[j] = (words[j] + words[size + j] * int(secret_ntt[j])) % q
    # (m, 0) decrypts to m under any key with these parameters: use a throwaway one.
    own = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=N,
        coeff_mod_bit_sizes=list(CKKS_8192.coeff_mod_bit_sizes),
    )
    raw = _seal_ciphertext(ct.parms_id(), [m, np.zeros(size, dtype=np.uint64)], ct.scale)
    plain = ts.ckks_vector_from(own, _tenseal_vector(vec.size(), raw, ct.scale))
    return np.asarray(plain.decrypt(), dtype=np.float64)


def forged_aggregates(
    public: PublicContext,
    contributions: dict[str, bytes],
    *,
    spec: Any,
    job_id: str,
    round: int,
    enrolment: dict[str, bytes],
) -> dict[str, Any]:
    """What a dishonest coordinator holding genuine contributions can ask the old key holder.

    Returns aggregate envelopes (`he.EncryptedAggregate`) with every genuine receipt:
    ``"key-probe"`` (the two crafted ciphertexts; ``spec.length`` must be 8192) and
    ``"one-owner"`` (the first owner's ciphertexts plus two encryptions of zero).
    """
    import dataclasses

    import he
    from he.envelope import decode_contribution

    genuine = he.add_ciphertexts(
        public, contributions.values(), spec=spec, job_id=job_id, round=round, enrolment=enrolment
    )
    ctx = public.tenseal(Scheme.CKKS)
    first = next(iter(contributions.values()))
    lone = []
    for blob in decode_contribution(first, max_blobs=64, max_blob_bytes=2**24)[2]:
        vec = ts.ckks_vector_from(ctx, blob)
        for _ in range(2):
            vec.add_(ts.ckks_vector(ctx, [0.0] * vec.size()))
        lone.append(vec.serialize())
    return {
        "key-probe": dataclasses.replace(genuine, ckks=crafted_key_probe(public)),
        "one-owner": dataclasses.replace(genuine, ckks=tuple(lone)),
    }


def first_chunk(contribution: bytes) -> bytes:
    """The first CKKS ciphertext of a contribution envelope."""
    from he.envelope import decode_contribution

    return decode_contribution(contribution, max_blobs=64, max_blob_bytes=2**24)[2][0]
