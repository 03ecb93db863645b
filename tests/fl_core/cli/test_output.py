"""What the CLI prints is plain text: brackets, colons and a user's column names survive."""

from __future__ import annotations

import pytest

from fl_core.cli._common import console, fail, warn
from fl_core.cli._dial import handshake_cause
from fl_core.cli.stats import _summary


def test_errors_and_warnings_keep_brackets_and_emoji_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    exit_ = fail("bad.toml: [trian] is not a known table :smile:")
    warn("client-[0]", "refused [dp] :key:")

    err = capsys.readouterr().err
    assert exit_.exit_code == 2
    assert "error: bad.toml: [trian] is not a known table :smile:" in err
    assert "client-[0]: refused [dp] :key:" in err


def test_a_table_of_user_columns_prints_their_names(capsys: pytest.CaptureFixture[str]) -> None:
    statistics = {
        "count": 3,
        "mean": {"[bmi]": 1.0},
        "std": {"[bmi]": 0.5},
        "quantiles": {"[bmi]": {"0.5": 1.0}},
    }

    console.print(_summary(statistics))

    assert "[bmi]" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("details", "tls", "expected"),
    [
        ("failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:1: "
         "Socket closed", False, "requires TLS, give --tls-ca"),
        ("failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:1: "
         "Socket closed", True, "requires a client certificate"),
        ("last error: UNKNOWN: ipv4:127.0.0.1:1: Tls handshake failed (TSI_PROTOCOL_FAILURE): "
         "SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED",
         True, "does not chain to --tls-ca"),
        ("last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host: "
         "Connection refused", True, None),
    ],
)  # fmt: skip
def test_handshake_causes_are_read_from_grpc_error_text(
    details: str, tls: bool, expected: str | None
) -> None:
    cause = handshake_cause(details, tls=tls)

    if expected is None:
        assert cause is None
    else:
        assert cause is not None and expected in cause
