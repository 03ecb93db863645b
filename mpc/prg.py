"""The mask PRG: AES-256-CTR keystreams from ``cryptography``, read as ring words.

This module is the only source of masks (STYLE.md rule 10). A mask of d ring elements is the
first d * (ring_bits / 8) bytes of the AES-256-CTR keystream under a 32-byte key, with the initial
counter block zero, read as little-endian uint32 or uint64 words. Every key is derived by HKDF
(``mpc.keys.derive_key``) from a full 32-byte secret with an ``info`` that names the purpose, the
job, round, attempt and the pair of parties, and with the session id as salt, so no two masks of
different purposes, rounds or pairs share a key and a key is never used for two streams.

Uniformity: the keystream of a secure block cipher in counter mode is indistinguishable from
uniform bytes, and a uniform 32-bit (64-bit) word is uniform on Z_2^32 (Z_2^64) with no bias:
the ring modulus is a power of two, so no rejection sampling is needed.

Speed: the keystream is written with ``update_into`` into one small buffer that is allocated once
per expander and reused for every key and chunk (a fresh 4 MB buffer per call halves the
throughput through page faults; REFERENCES.md "Performance anchors"), and added into the total
chunk by chunk while it is still in cache.

Notes:
    Flower's ``pseudo_rand_gen`` seeds numpy's MT19937 with a 32-bit XOR fold of the seed (at most
    2^32, in practice 2^28 distinct masks) and draws from [0, R - 2]; see REFERENCES.md 2.1. The
    tests of this module check seed sensitivity over all 256 key bits, full range and known answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mpc.errors import ParameterError
from mpc.ring import RingVector, ring_dtype

PRG_KEY_BYTES = 32
"""Length of a mask key: AES-256 uses the full 32-byte HKDF output."""

CHUNK_WORDS = 32768
"""Ring words per chunk: small enough that the keystream buffer stays in cache while it is added."""

_COUNTER_BLOCK = bytes(16)
_AES_BLOCK = 16
_KEYS_PER_PASS = 512  # cipher contexts alive at once when many masks are added


class MaskExpander:
    """Expands 32-byte keys into masks of ``length`` ring words and adds them into vectors.

    Masks are produced and added chunk by chunk: for each chunk of ``chunk_words`` positions,
    every key's cipher context writes its next keystream bytes into one small reused buffer, which
    is added into the chunk of the total while it is still in cache. The buffers are allocated
    once per expander; one expander serves every mask of a round on one side.

    Args:
        length: the number of ring elements per mask.
        ring_bits: 32 or 64.
        chunk_words: ring words per chunk (default 32768: 128 KiB of uint32).
    """

    __slots__ = ("_chunk", "_chunk_buffer", "_chunk_words", "_dtype", "_length", "_zeros")

    def __init__(self, *, length: int, ring_bits: int, chunk_words: int = CHUNK_WORDS) -> None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ParameterError(f"length must be an int >= 0, got {length!r}")
        if isinstance(chunk_words, bool) or not isinstance(chunk_words, int) or chunk_words < 1:
            raise ParameterError(f"chunk_words must be an int >= 1, got {chunk_words!r}")
        self._dtype = ring_dtype(ring_bits)
        self._length = length
        self._chunk = max(1, min(chunk_words, length))
        nbytes = self._chunk * self._dtype.itemsize
        self._zeros = memoryview(bytes(nbytes))
        # update_into needs room for len(data) + block_size - 1 bytes.
        self._chunk_buffer = bytearray(nbytes + _AES_BLOCK - 1)
        self._chunk_words: npt.NDArray[Any] = np.frombuffer(
            self._chunk_buffer, dtype=self._dtype, count=self._chunk
        )

    @property
    def length(self) -> int:
        """Number of ring elements per mask."""
        return self._length

    def expand(self, key: bytes) -> npt.NDArray[Any]:
        """Return the whole mask for ``key`` as a new array.

        Args:
            key: a 32-byte key from ``mpc.keys.derive_key``.

        Returns:
            ``length`` ring words of AES-256-CTR keystream.
        """
        mask = np.zeros(self._length, dtype=self._dtype)
        self.add_masks(mask, [(key, 1)])
        return mask

    def add_mask(self, total: npt.NDArray[Any], key: bytes, sign: int) -> None:
        """Add (``sign`` = +1) or subtract (``sign`` = -1) the mask of ``key`` into ``total``."""
        self.add_masks(total, [(key, sign)])

    def add_masks(
        self,
        total: npt.NDArray[Any],
        masks: Iterable[tuple[bytes, int]],
        *,
        source: npt.NDArray[Any] | None = None,
    ) -> None:
        """Add or subtract many masks into ``total`` in place, chunk by chunk.

        Args:
            total: a vector of ``length`` words of this expander's dtype, updated in place.
            masks: (32-byte key, sign) pairs, sign +1 to add the mask and -1 to subtract it.
            source: if given, ``total`` is first overwritten with it (chunk by chunk), so that
                ``total = source + masks`` needs no separate copy.
        """
        if total.shape != (self._length,) or total.dtype != self._dtype:
            raise ParameterError(f"total must be a ({self._length},) {self._dtype} vector")
        pending = iter(masks)
        while True:
            group = [_context(key, sign) for key, sign in islice(pending, _KEYS_PER_PASS)]
            if not group and source is None:
                return
            self._pass(total, group, source)
            if len(group) < _KEYS_PER_PASS:
                return
            source = None

    def _pass(
        self,
        total: npt.NDArray[Any],
        group: list[tuple[Any, int]],
        source: npt.NDArray[Any] | None,
    ) -> None:
        chunk, words, zeros, buffer = (
            self._chunk,
            self._chunk_words,
            self._zeros,
            self._chunk_buffer,
        )
        for start in range(0, self._length, chunk):
            stop = min(start + chunk, self._length)
            count = stop - start
            part = total[start:stop]
            if source is not None:
                part[...] = source[start:stop]
            stream = words[:count]
            data = zeros[: count * self._dtype.itemsize]
            for encryptor, sign in group:
                encryptor.update_into(data, buffer)
                if sign == 1:
                    np.add(part, stream, out=part)
                else:
                    np.subtract(part, stream, out=part)


def _context(key: bytes, sign: int) -> tuple[Any, int]:
    _check_key(key)
    if sign not in (1, -1):
        raise ParameterError(f"sign must be +1 or -1, got {sign!r}")
    return Cipher(algorithms.AES(key), modes.CTR(_COUNTER_BLOCK)).encryptor(), sign


def expand(key: bytes, length: int, *, ring_bits: int) -> RingVector:
    """Return a fresh copy of the mask of ``length`` ring words for ``key``.

    Args:
        key: a 32-byte key.
        length: the number of ring elements.
        ring_bits: 32 or 64.

    Returns:
        The mask as a new uint32 or uint64 array.
    """
    return RingVector(MaskExpander(length=length, ring_bits=ring_bits).expand(key))


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != PRG_KEY_BYTES:
        raise ParameterError(f"a mask key must be {PRG_KEY_BYTES} bytes")


def expand_mod(key: bytes, length: int, *, modulus: int) -> npt.NDArray[np.int64]:
    """Return ``length`` values uniform on Z_modulus from the AES-256-CTR keystream of ``key``.

    For a modulus that is not a power of two (the BFV plaintext modulus of an HE job): 64-bit
    little-endian words are read from the keystream in order and every word at or above the
    largest multiple of ``modulus`` below 2^64 is rejected, so each accepted word mod
    ``modulus`` is exactly uniform (rejection sampling; the chance of rejecting a word is
    below modulus / 2^64). Both parties of a pair read the same stream and keep the same words.

    Args:
        key: a 32-byte key.
        length: how many values.
        modulus: an integer in [2, 2^62].

    Returns:
        int64 values in [0, modulus).
    """
    _check_key(key)
    if not isinstance(modulus, int) or not 2 <= modulus <= 1 << 62:
        raise ParameterError(f"modulus must be an integer in [2, 2^62], got {modulus!r}")
    if length < 0:
        raise ParameterError(f"length must be >= 0, got {length}")
    limit = np.uint64(((1 << 64) // modulus) * modulus)
    encryptor = Cipher(algorithms.AES(key), modes.CTR(_COUNTER_BLOCK)).encryptor()
    out = np.empty(length, dtype=np.int64)
    filled = 0
    while filled < length:
        want = length - filled
        words = np.frombuffer(encryptor.update(bytes(8 * (want + 16))), dtype="<u8")
        kept = words[words < limit][:want]
        out[filled : filled + kept.size] = (kept % np.uint64(modulus)).astype(np.int64)
        filled += kept.size
    return out
