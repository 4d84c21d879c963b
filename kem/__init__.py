"""Key encapsulation mechanisms behind one interface.

Every KEM -- X25519 wrapped as a KEM, ML-KEM-512/768/1024, the TLS hybrid
``X25519MLKEM768`` and any :class:`CombinedKEM` -- offers
``generate_keypair()``, ``encapsulate(public) -> (ciphertext, secret)`` and
``decapsulate(private, ciphertext) -> secret`` plus its name and sizes::

    >>> import kem
    >>> k = kem.get_kem("ML-KEM-768")            # automatic backend: OpenSSL first
    >>> pair = k.generate_keypair()
    >>> ct, secret = k.encapsulate(pair.public)
    >>> k.decapsulate(pair.private, ct) == secret
    True

Backends: ``"openssl"`` (through ``cryptography``), ``"liboqs"`` (through
liboqs-python, only when the liboqs shared library loads), ``"pure"`` (kyber-py).
:func:`backend_report` says which work here and why the others do not.
"""

from kem._base import KEM, KeyPair
from kem._errors import (
    BackendUnavailableError,
    InvalidCiphertextError,
    InvalidKeyError,
    KEMError,
    LowOrderPointError,
    UnknownAlgorithmError,
)
from kem._hybrid import X25519MLKEM768, CombinedKEM, combine_secrets
from kem._oqs import find_liboqs, oqs_status
from kem._registry import (
    BACKENDS,
    BackendInfo,
    KEMInfo,
    backend_report,
    combined,
    get_kem,
    kem_report,
    normalize_name,
)

__all__ = [
    "BACKENDS",
    "KEM",
    "X25519MLKEM768",
    "BackendInfo",
    "BackendUnavailableError",
    "CombinedKEM",
    "InvalidCiphertextError",
    "InvalidKeyError",
    "KEMError",
    "KEMInfo",
    "KeyPair",
    "LowOrderPointError",
    "UnknownAlgorithmError",
    "backend_report",
    "combine_secrets",
    "combined",
    "find_liboqs",
    "get_kem",
    "kem_report",
    "normalize_name",
    "oqs_status",
]
