"""QKD: link simulation, post-processing, key store, KME (ETSI GS QKD 014), key sources."""

from qkd.keysource import (
    InMemoryKeyPool,
    KeyAlreadyUsedError,
    KeySourceError,
    KeyUnavailableError,
    QKDKey,
    QKDKeySource,
    UnknownKeyIDError,
)

__all__ = [
    "InMemoryKeyPool",
    "KeyAlreadyUsedError",
    "KeySourceError",
    "KeyUnavailableError",
    "QKDKey",
    "QKDKeySource",
    "UnknownKeyIDError",
]
