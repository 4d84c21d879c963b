"""QKD: link simulation, post-processing, key store, KME (ETSI GS QKD 014), key sources.

The link simulation lives in :mod:`qkd.sim` (imported on demand: it needs numpy).
"""

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
