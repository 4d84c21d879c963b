"""The one interface every KEM follows, whatever the algorithm or backend."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from kem._errors import InvalidCiphertextError, InvalidKeyError, KEMError

__all__ = ["KEM", "KeyPair"]


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A KEM key pair. ``public`` is the wire encoding; ``private`` is backend-specific.

    ``repr`` never shows the private key.
    """

    public: bytes
    private: Any = field(repr=False)


class KEM(ABC):
    """A key encapsulation mechanism.

    ``generate_keypair(seed)`` and ``encapsulate(public, randomness)`` accept
    explicit randomness for known-answer tests and reproducible transcripts; a
    KEM whose backend cannot honour it has ``supports_derandomized = False``
    and raises :class:`KEMError` when given some.
    """

    #: Algorithm name, e.g. ``"ML-KEM-768"``.
    name: str
    #: Backend name: ``"openssl"``, ``"liboqs"`` or ``"pure"``.
    backend: str
    public_key_size: int
    ciphertext_size: int
    shared_secret_size: int
    #: Bytes of seed taken by ``generate_keypair`` (64 for ML-KEM: d || z).
    seed_size: int
    #: Bytes of randomness taken by ``encapsulate``.
    randomness_size: int
    supports_derandomized: bool = True
    #: Whether ``generate_keypair`` takes a seed (OpenSSL does for ML-KEM, though it
    #: cannot take encapsulation randomness).
    supports_seeded_keygen: bool = True

    def __repr__(self) -> str:
        return f"<KEM {self.name} ({self.backend})>"

    def generate_keypair(self, seed: bytes | None = None) -> KeyPair:
        """Make a key pair, from ``seed`` when given (deterministic)."""
        if seed is not None:
            self._check_randomness(seed, self.seed_size, "seed", self.supports_seeded_keygen)
        return self._generate(seed)

    def encapsulate(
        self, public_key: bytes, randomness: bytes | None = None
    ) -> tuple[bytes, bytes]:
        """Return ``(ciphertext, shared_secret)`` for ``public_key``."""
        self._check_bytes(public_key, self.public_key_size, "public key", InvalidKeyError)
        if randomness is not None:
            self._check_randomness(
                randomness, self.randomness_size, "randomness", self.supports_derandomized
            )
        return self._encapsulate(bytes(public_key), randomness)

    def decapsulate(self, private_key: Any, ciphertext: bytes) -> bytes:
        """Return the shared secret in ``ciphertext`` for ``private_key``."""
        self._check_bytes(ciphertext, self.ciphertext_size, "ciphertext", InvalidCiphertextError)
        return self._decapsulate(private_key, bytes(ciphertext))

    @abstractmethod
    def _generate(self, seed: bytes | None) -> KeyPair: ...

    @abstractmethod
    def _encapsulate(self, public_key: bytes, randomness: bytes | None) -> tuple[bytes, bytes]: ...

    @abstractmethod
    def _decapsulate(self, private_key: Any, ciphertext: bytes) -> bytes: ...

    def _check_bytes(self, value: object, size: int, what: str, error: type[KEMError]) -> None:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise error(f"{self.name} {what} must be bytes, got {type(value).__name__}")
        if len(value) != size:
            raise error(f"{self.name} {what} must be {size} bytes, got {len(value)}")

    def _check_randomness(self, value: object, size: int, what: str, supported: bool) -> None:
        if not supported:
            raise KEMError(
                f"{self.name} on backend {self.backend!r} cannot take an explicit {what}; "
                "use backend='pure' for deterministic runs"
            )
        self._check_bytes(value, size, what, KEMError)

    def _check_private(self, private_key: Any, expected: type | tuple[type, ...]) -> None:
        if not isinstance(private_key, expected):
            raise InvalidKeyError(
                f"{self.name} ({self.backend}) private key must come from this KEM's "
                f"generate_keypair(), got {type(private_key).__name__}"
            )
