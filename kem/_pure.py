"""Pure-Python ML-KEM through kyber-py: the fallback, and deterministic runs.

Slow (milliseconds per operation) but it takes explicit seeds and encapsulation
randomness, which known-answer tests and reproducible transcripts need.
"""

from __future__ import annotations

import os
from typing import Any

from kem._base import KEM, KeyPair
from kem._errors import InvalidKeyError, KEMError

__all__ = ["PureMLKEM", "pure_available"]

_SIZES = {
    # name: (public size, ciphertext size, kyber-py attribute)
    "ML-KEM-512": (800, 768, "ML_KEM_512"),
    "ML-KEM-768": (1184, 1088, "ML_KEM_768"),
    "ML-KEM-1024": (1568, 1568, "ML_KEM_1024"),
}


def pure_available() -> str | None:
    """``None`` when kyber-py imports, else the reason it does not."""
    try:
        import kyber_py.ml_kem  # noqa: F401
    except ImportError as exc:
        return f"kyber-py not installed ({exc}); pip install kyber-py"
    return None


class PureMLKEM(KEM):
    """ML-KEM from kyber-py. Private keys are the 64-byte seed plus the expanded key."""

    backend = "pure"
    shared_secret_size = 32
    seed_size = 64
    randomness_size = 32

    def __init__(self, name: str) -> None:
        from kyber_py import ml_kem

        self.name = name
        self.public_key_size, self.ciphertext_size, attr = _SIZES[name]
        self._impl = getattr(ml_kem, attr)

    def _generate(self, seed: bytes | None) -> KeyPair:
        public, private = self._impl.key_derive(seed if seed is not None else os.urandom(64))
        return KeyPair(public=public, private=_PureKey(private))

    def _encapsulate(self, public_key: bytes, randomness: bytes | None) -> tuple[bytes, bytes]:
        m = randomness if randomness is not None else os.urandom(32)
        try:
            secret, ciphertext = self._impl._encaps_internal(public_key, m)
        except ValueError:
            raise InvalidKeyError(
                f"{self.name} public key is not a valid encoding (coefficients must be "
                "below q = 3329, FIPS 203 section 7.2)"
            ) from None
        return ciphertext, secret

    def _decapsulate(self, private_key: Any, ciphertext: bytes) -> bytes:
        self._check_private(private_key, _PureKey)
        try:
            secret: bytes = self._impl.decaps(private_key.dk, ciphertext)
        except ValueError as exc:
            raise KEMError(f"{self.name} decapsulation key rejected: {exc}") from None
        return secret


class _PureKey:
    """Holds a kyber-py decapsulation key without ever showing it."""

    __slots__ = ("dk",)

    def __init__(self, dk: bytes) -> None:
        self.dk = dk

    def __repr__(self) -> str:
        return "<ML-KEM decapsulation key>"
