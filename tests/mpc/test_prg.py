"""Tests for mpc.prg: known answers, seed sensitivity, uniformity over the ring, buffer reuse."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from scipy import stats

from mpc import ParameterError
from mpc.prg import MaskExpander, expand

MPC_ROOT = Path(__file__).resolve().parents[2] / "mpc"


def _aes256_block(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - test oracle
    return encryptor.update(block) + encryptor.finalize()


def test_aes256_oracle_matches_the_fips197_known_answer() -> None:
    # FIPS-197 appendix C.3: AES-256 with key 00..1f on plaintext 00112233..eeff.
    key = bytes(range(32))
    ciphertext = _aes256_block(key, bytes.fromhex("00112233445566778899aabbccddeeff"))
    assert ciphertext.hex() == "8ea2b7ca516745bfeafc49904b496089"


@pytest.mark.parametrize("ring_bits", [32, 64])
def test_mask_is_the_aes256_ctr_keystream_from_counter_zero_read_little_endian(
    ring_bits: int,
) -> None:
    # Prepare: the keystream block i is AES_K(i as a 128-bit big-endian counter).
    key = bytes(range(32))
    keystream = b"".join(_aes256_block(key, i.to_bytes(16, "big")) for i in range(4))
    dtype = np.uint32 if ring_bits == 32 else np.uint64

    # Execute
    mask = expand(key, 64 // (ring_bits // 8), ring_bits=ring_bits)

    # Assert
    np.testing.assert_array_equal(
        mask, np.frombuffer(keystream, dtype=np.dtype(dtype).newbyteorder("<"))
    )


def test_known_answer_regression_vector() -> None:
    # The first words of the mask for key 00..1f (byte order and counter start are part of the
    # protocol; a change breaks interoperability between versions).
    mask = expand(bytes(range(32)), 4, ring_bits=32)
    block = _aes256_block(bytes(range(32)), bytes(16))
    assert mask.tolist() == [int.from_bytes(block[i : i + 4], "little") for i in range(0, 16, 4)]


def test_every_key_bit_changes_the_mask() -> None:
    # Prepare: flip each of the 256 key bits in turn (Flower's 32-bit XOR fold fails this).
    key = bytes(range(32))
    variants = [key] + [
        (int.from_bytes(key, "big") ^ (1 << bit)).to_bytes(32, "big") for bit in range(256)
    ]

    # Execute
    masks = {expand(k, 8, ring_bits=32).tobytes() for k in variants}

    # Assert
    assert len(masks) == 257


@pytest.mark.parametrize("ring_bits", [32, 64])
def test_mask_words_are_uniform_over_the_ring(ring_bits: int) -> None:
    # Prepare: 2^20 words; chi-square of the top and bottom byte (256 bins each) and of the value
    # modulo 8 (every residue must appear: Flower's masks never produce R - 1).
    words = expand(bytes(range(7, 39)), 1 << 20, ring_bits=ring_bits).astype(np.uint64)
    top = (words >> np.uint64(ring_bits - 8)).astype(np.int64)
    bottom = (words & np.uint64(0xFF)).astype(np.int64)

    # Execute
    p_top = stats.chisquare(np.bincount(top, minlength=256)).pvalue
    p_bottom = stats.chisquare(np.bincount(bottom, minlength=256)).pvalue
    residues = np.bincount((words % np.uint64(8)).astype(np.int64), minlength=8)

    # Assert (fixed key, so the outcome is deterministic; 1e-4 leaves room for honest noise)
    assert p_top > 1e-4 and p_bottom > 1e-4
    assert np.all(residues > 0)


@pytest.mark.parametrize("chunk_words", [1, 7, 64, 1000, 5000])
@pytest.mark.parametrize("ring_bits", [32, 64])
def test_chunked_masking_equals_whole_masks_summed(chunk_words: int, ring_bits: int) -> None:
    # Prepare: 600 keys (more than one pass of cipher contexts), mixed signs, a source vector.
    length = 1000
    keys = [bytes([i % 256, i // 256]) * 16 for i in range(600)]
    signs = [1 if i % 3 else -1 for i in range(600)]
    dtype = np.uint32 if ring_bits == 32 else np.uint64
    source = np.arange(length, dtype=dtype)
    expander = MaskExpander(length=length, ring_bits=ring_bits, chunk_words=chunk_words)

    # Execute
    total = np.empty_like(source)
    expander.add_masks(total, zip(keys, signs, strict=True), source=source)

    # Assert: oracle with whole masks and Python integers.
    modulus = 1 << ring_bits
    expected = [int(v) for v in source]
    for key, sign in zip(keys, signs, strict=True):
        mask = expand(key, length, ring_bits=ring_bits)
        expected = [(e + sign * int(m)) % modulus for e, m in zip(expected, mask, strict=True)]
    assert [int(v) for v in total] == expected


def test_expander_checks_the_total() -> None:
    expander = MaskExpander(length=10, ring_bits=32)
    with pytest.raises(ParameterError, match="total"):
        expander.add_mask(np.zeros(10, np.uint64), bytes(32), 1)
    with pytest.raises(ParameterError, match="chunk_words"):
        MaskExpander(length=10, ring_bits=32, chunk_words=0)


def test_add_mask_adds_or_subtracts_with_wraparound() -> None:
    expander = MaskExpander(length=16, ring_bits=64)
    key = bytes(32)
    total = np.zeros(16, np.uint64)
    expander.add_mask(total, key, 1)
    np.testing.assert_array_equal(total, expand(key, 16, ring_bits=64))
    expander.add_mask(total, key, -1)
    assert not total.any()
    with pytest.raises(ParameterError, match="sign"):
        expander.add_mask(total, key, 2)


def test_zero_length_and_bad_keys() -> None:
    assert expand(bytes(32), 0, ring_bits=32).shape == (0,)
    with pytest.raises(ParameterError, match="32 bytes"):
        expand(bytes(16), 4, ring_bits=32)
    with pytest.raises(ParameterError, match="length"):
        MaskExpander(length=-1, ring_bits=32)


_ALLOWED_NP_RANDOM = {"Generator"}


def test_protocol_modules_never_touch_non_cryptographic_randomness() -> None:
    # REFERENCES.md 2.1 (d): no `random`, `RandomState` or numpy's global generator where masks,
    # keys, seeds or shares are made; only the type np.random.Generator may be named (injected).
    offenders = []
    for path in sorted(MPC_ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n == "random" or n.startswith("numpy.random") for n in names):
                    offenders.append(f"{path.name}:{node.lineno} imports {names}")
            if isinstance(node, ast.Attribute) and node.attr == "RandomState":
                offenders.append(f"{path.name}:{node.lineno} uses RandomState")
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "random"
                and node.attr not in _ALLOWED_NP_RANDOM
            ):
                offenders.append(f"{path.name}:{node.lineno} uses np.random.{node.attr}")
    assert offenders == []


def test_expand_mod_is_deterministic_uniform_and_in_range() -> None:
    from scipy.stats import chisquare

    from mpc.prg import expand_mod

    t = 1099511480321  # BFV_8192's plain modulus
    key = bytes(range(32))
    first = expand_mod(key, 50_000, modulus=t)
    assert np.array_equal(first, expand_mod(key, 50_000, modulus=t))
    assert np.array_equal(first[:1000], expand_mod(key, 1000, modulus=t))  # a prefix of one stream
    assert first.dtype == np.int64 and first.min() >= 0 and first.max() < t
    counts = np.bincount((first.astype(np.float64) / t * 50).astype(np.int64), minlength=50)
    assert chisquare(counts).pvalue > 1e-4
    assert not np.array_equal(first, expand_mod(bytes(31) + b"\x01", 50_000, modulus=t))
    # a tiny modulus exercises the rejection: values stay exactly uniform on Z_3
    small = expand_mod(key, 30_000, modulus=3)
    assert set(np.unique(small)) == {0, 1, 2}
    assert chisquare(np.bincount(small)).pvalue > 1e-4
