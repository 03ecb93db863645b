"""Long-term Ed25519 identity keys of data owners and key holders, in PEM files.

Kept free of torch and TenSEAL so that every process can load its key quickly.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from .errors import ConfigError


def load_identity(path: Path | None) -> Ed25519PrivateKey:
    """Load an Ed25519 identity key from a PEM file, creating it (mode 0600) when missing.

    ``None`` gives a fresh key that lives only in memory.

    Raises:
        ConfigError: the file is not an unencrypted PEM Ed25519 private key.
    """
    if path is None:
        return Ed25519PrivateKey.generate()
    if path.exists():
        try:
            key = load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path} is not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path} does not hold an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return key
