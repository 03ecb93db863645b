from __future__ import annotations

import dataclasses

import pytest
import tenseal as ts

import he
from he.params import MAX_COEFF_MODULUS_BITS, Scheme, max_coeff_modulus_bits

PRESETS = [he.CKKS_8192, he.BFV_4096, he.BFV_8192]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: f"{p.scheme}-{p.poly_modulus_degree}")
def test_presets_within_128_bit_table(preset: he.HEParams) -> None:
    # Prepare
    limit = MAX_COEFF_MODULUS_BITS[128][preset.poly_modulus_degree]

    # Execute
    total = sum(preset.coeff_mod_bit_sizes)

    # Assert
    assert total <= limit
    assert preset.security_level == 128


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: f"{p.scheme}-{p.poly_modulus_degree}")
def test_one_bit_above_the_table_is_refused_by_us_and_by_tenseal(preset: he.HEParams) -> None:
    # Prepare: grow the first prime until the total is one bit above the 128-bit limit
    limit = max_coeff_modulus_bits(poly_modulus_degree=preset.poly_modulus_degree)
    sizes = list(preset.coeff_mod_bit_sizes)
    extra = limit + 1 - sum(sizes)
    while extra > 0:
        index = min(range(len(sizes)), key=lambda i: sizes[i])
        grow = min(60 - sizes[index], extra)
        if grow == 0:
            sizes.append(min(extra, 60))
            extra -= sizes[-1]
            continue
        sizes[index] += grow
        extra -= grow

    # Execute / Assert: our error names the limit
    with pytest.raises(he.InsecureParameters, match=f"128-bit limit .* is {limit}"):
        dataclasses.replace(preset, coeff_mod_bit_sizes=tuple(sizes))
    # ... and SEAL refuses the same context
    scheme = ts.SCHEME_TYPE.CKKS if preset.scheme is Scheme.CKKS else ts.SCHEME_TYPE.BFV
    kwargs = {} if preset.plain_modulus is None else {"plain_modulus": preset.plain_modulus}
    with pytest.raises(ValueError, match="not set correctly"):
        ts.context(
            scheme,
            poly_modulus_degree=preset.poly_modulus_degree,
            coeff_mod_bit_sizes=sizes,
            **kwargs,
        )


def test_ckks_scale_must_equal_middle_primes_when_multiplying() -> None:
    # REFERENCES 4.2: scale 2^30 on 40-bit middle primes breaks a multiplication.
    with pytest.raises(he.ParameterError, match="middle prime must equal scale_bits=30"):
        he.HEParams(
            scheme=Scheme.CKKS,
            poly_modulus_degree=8192,
            coeff_mod_bit_sizes=(60, 40, 40, 60),
            scale_bits=30,
            multiplicative_depth=1,
        )


def test_ckks_depth_needs_enough_primes() -> None:
    with pytest.raises(he.ParameterError, match="needs at least 3 middle primes"):
        he.HEParams(
            scheme=Scheme.CKKS,
            poly_modulus_degree=8192,
            coeff_mod_bit_sizes=(60, 40, 40, 60),
            scale_bits=40,
            multiplicative_depth=3,
        )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"poly_modulus_degree": 3000}, "poly_modulus_degree must be one of"),
        ({"coeff_mod_bit_sizes": (60,)}, "at least 2 integers"),
        ({"coeff_mod_bit_sizes": (61, 40, 40, 60)}, r"\[17, 60\] bits"),
        ({"scale_bits": 10}, r"scale_bits must lie in \[20, 90\]"),
        ({"scale_bits": 125}, r"scale_bits must lie in \[20, 90\]"),
        ({"plain_modulus": 65537}, "plain_modulus must be None for CKKS"),
        ({"security_level": 100}, "security_level must be one of"),
    ],
)
def test_ckks_inconsistent_settings_name_the_field(changes: dict, message: str) -> None:
    with pytest.raises(he.ParameterError, match=message):
        dataclasses.replace(he.CKKS_8192, **changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"plain_modulus": 1032192}, "must be a prime"),  # not prime
        ({"plain_modulus": 65539}, r"plain_modulus % 8192 == 1"),  # prime, no batching
        ({"scale_bits": 40}, "scale_bits must be None for BFV"),
        ({"plain_modulus": None}, "plain_modulus is required"),
    ],
)
def test_bfv_inconsistent_settings_name_the_field(changes: dict, message: str) -> None:
    with pytest.raises(he.ParameterError, match=message):
        dataclasses.replace(he.BFV_4096, **changes)


def test_bfv_plain_modulus_must_leave_noise_budget() -> None:
    # 1073692673 is a 30-bit prime = 1 mod 8192; with 72 data bits it leaves 42 < 48.
    with pytest.raises(he.ParameterError, match="leaves 42 bits of noise budget"):
        dataclasses.replace(he.BFV_4096, plain_modulus=1073692673)


def test_stronger_security_level_uses_its_column() -> None:
    with pytest.raises(
        he.InsecureParameters, match="192-bit limit for poly_modulus_degree 8192 is 152"
    ):
        dataclasses.replace(he.CKKS_8192, security_level=192)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: f"{p.scheme}-{p.poly_modulus_degree}")
def test_dict_round_trip(preset: he.HEParams) -> None:
    assert he.HEParams.from_dict(preset.to_dict()) == preset


def test_from_dict_refuses_unknown_keys_and_schemes() -> None:
    with pytest.raises(he.ParameterError, match="unknown HE parameter"):
        he.HEParams.from_dict({**he.CKKS_8192.to_dict(), "sec": 1})
    with pytest.raises(he.ParameterError, match="scheme must be one of"):
        he.HEParams.from_dict({**he.CKKS_8192.to_dict(), "scheme": "bgv"})


def test_derived_limits() -> None:
    assert he.CKKS_8192.slot_count == 4096
    assert he.BFV_4096.slot_count == 4096
    assert he.BFV_4096.max_abs_integer == 516096
    assert he.CKKS_8192.max_abs_value == 2.0**46
