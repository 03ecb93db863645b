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

Speed: the keystream is written with ``update_into`` into one buffer that is allocated once per
expander and reused for every key (a fresh 4 MB buffer per call halves the throughput through page
faults; REFERENCES.md "Performance anchors"). Adding a keystream to a total is one in-place
``np.add``.

Notes:
    Flower's ``pseudo_rand_gen`` seeds numpy's MT19937 with a 32-bit XOR fold of the seed (at most
    2^32, in practice 2^28 distinct masks) and draws from [0, R - 2]; see REFERENCES.md 2.1. The
    tests of this module check seed sensitivity over all 256 key bits, full range and known answers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mpc.errors import ParameterError
from mpc.ring import RingVector, ring_dtype

PRG_KEY_BYTES = 32
"""Length of a mask key: AES-256 uses the full 32-byte HKDF output."""

_COUNTER_BLOCK = bytes(16)
_AES_BLOCK = 16


class MaskExpander:
    """Expands 32-byte keys into vectors of ``length`` ring words, reusing one buffer.

    One expander serves every mask of a round on one side (a client's masks, or the coordinator's
    unmasking), so the keystream buffer is allocated once.

    Args:
        length: the number of ring elements per mask.
        ring_bits: 32 or 64.
    """

    __slots__ = ("_buffer", "_length", "_nbytes", "_words", "_zeros")

    def __init__(self, *, length: int, ring_bits: int) -> None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ParameterError(f"length must be an int >= 0, got {length!r}")
        dtype = ring_dtype(ring_bits)
        self._length = length
        self._nbytes = length * dtype.itemsize
        self._zeros = bytes(self._nbytes)
        # update_into needs room for len(data) + block_size - 1 bytes.
        self._buffer = bytearray(self._nbytes + _AES_BLOCK - 1)
        self._words: npt.NDArray[Any] = np.frombuffer(self._buffer, dtype=dtype, count=length)

    @property
    def length(self) -> int:
        """Number of ring elements per mask."""
        return self._length

    def expand(self, key: bytes) -> npt.NDArray[Any]:
        """Return the mask for ``key`` as a read-only view of the reused buffer.

        The view is overwritten by the next call; copy it to keep it.

        Args:
            key: a 32-byte key from ``mpc.keys.derive_key``.

        Returns:
            ``length`` ring words of AES-256-CTR keystream.
        """
        _check_key(key)
        if self._nbytes:
            encryptor = Cipher(algorithms.AES(key), modes.CTR(_COUNTER_BLOCK)).encryptor()
            encryptor.update_into(self._zeros, self._buffer)
        view = self._words.view()
        view.flags.writeable = False
        return view

    def add_mask(self, total: npt.NDArray[Any], key: bytes, sign: int) -> None:
        """Add (``sign`` = +1) or subtract (``sign`` = -1) the mask of ``key`` into ``total``.

        Args:
            total: a ring vector of ``length`` words of this expander's dtype, updated in place.
            key: the 32-byte mask key.
            sign: +1 or -1.
        """
        mask = self.expand(key)
        if sign == 1:
            np.add(total, mask, out=total)
        elif sign == -1:
            np.subtract(total, mask, out=total)
        else:
            raise ParameterError(f"sign must be +1 or -1, got {sign!r}")


def expand(key: bytes, length: int, *, ring_bits: int) -> RingVector:
    """Return a fresh copy of the mask of ``length`` ring words for ``key``.

    Args:
        key: a 32-byte key.
        length: the number of ring elements.
        ring_bits: 32 or 64.

    Returns:
        The mask as a new uint32 or uint64 array.
    """
    return RingVector(MaskExpander(length=length, ring_bits=ring_bits).expand(key).copy())


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != PRG_KEY_BYTES:
        raise ParameterError(f"a mask key must be {PRG_KEY_BYTES} bytes")
