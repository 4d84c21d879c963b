"""OpenSSL backend through ``cryptography`` (>= 48): X25519, ML-KEM-768, ML-KEM-1024."""

from __future__ import annotations

import hmac
from typing import Any

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from kem._base import KEM, KeyPair
from kem._errors import InvalidKeyError, LowOrderPointError

__all__ = ["X25519KEM", "OpenSSLMLKEM"]

_ZERO32 = bytes(32)


class X25519KEM(KEM):
    """X25519 used as a KEM (ephemeral-static Diffie-Hellman).

    The ciphertext is the encapsulator's ephemeral public value; the shared
    secret is the raw X25519 output. All-zero outputs (low-order peer points,
    RFC 7748 section 6.1) are refused.
    """

    name = "X25519"
    backend = "openssl"
    public_key_size = 32
    ciphertext_size = 32
    shared_secret_size = 32
    seed_size = 32
    randomness_size = 32

    def _generate(self, seed: bytes | None) -> KeyPair:
        private = (
            x25519.X25519PrivateKey.from_private_bytes(seed)
            if seed is not None
            else x25519.X25519PrivateKey.generate()
        )
        return KeyPair(public=private.public_key().public_bytes_raw(), private=private)

    def _encapsulate(self, public_key: bytes, randomness: bytes | None) -> tuple[bytes, bytes]:
        ephemeral = self._generate(randomness)
        return ephemeral.public, _exchange(ephemeral.private, public_key)

    def _decapsulate(self, private_key: Any, ciphertext: bytes) -> bytes:
        self._check_private(private_key, x25519.X25519PrivateKey)
        return _exchange(private_key, ciphertext)


def _exchange(private: x25519.X25519PrivateKey, peer_public: bytes) -> bytes:
    try:
        secret = private.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        # OpenSSL refuses to derive from a low-order point.
        raise LowOrderPointError(
            "X25519 peer public value is a low-order point (all-zero shared secret); "
            "the peer is faulty or malicious -- abort the exchange"
        ) from None
    if hmac.compare_digest(secret, _ZERO32):
        raise LowOrderPointError(
            "X25519 shared secret is all zeros (low-order peer point); abort the exchange"
        )
    return secret


_MLKEM_CLASSES: dict[str, tuple[Any, Any, int, int]] = {
    # name: (private class, public class, public size, ciphertext size)
    "ML-KEM-768": (mlkem.MLKEM768PrivateKey, mlkem.MLKEM768PublicKey, 1184, 1088),
    "ML-KEM-1024": (mlkem.MLKEM1024PrivateKey, mlkem.MLKEM1024PublicKey, 1568, 1568),
}


class OpenSSLMLKEM(KEM):
    """ML-KEM (FIPS 203) from OpenSSL. Encapsulation randomness cannot be injected."""

    backend = "openssl"
    shared_secret_size = 32
    seed_size = 64
    randomness_size = 32
    supports_derandomized = False

    def __init__(self, name: str) -> None:
        self.name = name
        self._private_cls, self._public_cls, self.public_key_size, self.ciphertext_size = (
            _MLKEM_CLASSES[name]
        )

    def _generate(self, seed: bytes | None) -> KeyPair:
        if seed is not None:
            private = self._private_cls.from_seed_bytes(seed)
        else:
            private = self._private_cls.generate()
        return KeyPair(public=private.public_key().public_bytes_raw(), private=private)

    def _encapsulate(self, public_key: bytes, randomness: bytes | None) -> tuple[bytes, bytes]:
        try:
            public = self._public_cls.from_public_bytes(public_key)
        except ValueError:
            raise InvalidKeyError(
                f"{self.name} public key is not a valid encoding (coefficients must be "
                "below q = 3329, FIPS 203 section 7.2)"
            ) from None
        secret, ciphertext = public.encapsulate()
        return ciphertext, secret

    def _decapsulate(self, private_key: Any, ciphertext: bytes) -> bytes:
        self._check_private(private_key, self._private_cls)
        secret: bytes = private_key.decapsulate(ciphertext)
        return secret
