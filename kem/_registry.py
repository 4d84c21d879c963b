"""Choosing a KEM and a backend, explicitly or automatically, and saying why.

Automatic choice prefers OpenSSL (through ``cryptography``), then liboqs, then
the pure-Python kyber-py; :func:`backend_report` lists what works on this
machine and, for what does not, the reason.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from kem._base import KEM
from kem._errors import BackendUnavailableError, UnknownAlgorithmError
from kem._hybrid import X25519MLKEM768, CombinedKEM
from kem._oqs import OQSKEM, oqs_mechanisms, oqs_status
from kem._pure import PureMLKEM, pure_available

__all__ = [
    "BACKENDS",
    "BackendInfo",
    "KEMInfo",
    "backend_report",
    "combined",
    "get_kem",
    "kem_report",
    "normalize_name",
]

BACKENDS = ("openssl", "liboqs", "pure")
_AUTO_ORDER = BACKENDS

# Canonical names, and what each backend offers natively.
_NATIVE: dict[str, frozenset[str]] = {
    "openssl": frozenset({"X25519", "ML-KEM-768", "ML-KEM-1024"}),
    "liboqs": frozenset({"ML-KEM-512", "ML-KEM-768", "ML-KEM-1024"}),  # plus all oqs names
    "pure": frozenset({"ML-KEM-512", "ML-KEM-768", "ML-KEM-1024"}),
}
_HYBRIDS = frozenset({"X25519MLKEM768"})
KNOWN = ("X25519", "ML-KEM-512", "ML-KEM-768", "ML-KEM-1024", "X25519MLKEM768")


def normalize_name(name: str) -> str:
    """Canonical spelling: ``"mlkem768"``, ``"ml_kem_768"`` -> ``"ML-KEM-768"``."""
    if not isinstance(name, str):
        raise UnknownAlgorithmError(f"KEM name must be a string, got {type(name).__name__}")
    squashed = name.replace("-", "").replace("_", "").upper()
    for known in KNOWN:
        if squashed == known.replace("-", "").upper():
            return known
    if oqs_status() is None and name in oqs_mechanisms():
        return name
    raise UnknownAlgorithmError(
        f"unknown KEM {name!r}; expected one of {', '.join(KNOWN)}"
        + ("" if oqs_status() else " or a liboqs mechanism name")
    )


def _backend_reason(backend: str) -> str | None:
    if backend == "openssl":
        return None  # cryptography is a hard dependency
    if backend == "liboqs":
        return oqs_status()
    if backend == "pure":
        return pure_available()
    raise UnknownAlgorithmError(
        f"unknown backend {backend!r}; expected auto or one of {', '.join(BACKENDS)}"
    )


def _offers(backend: str, name: str) -> bool:
    if name in _HYBRIDS:
        return _offers(backend, "ML-KEM-768")
    if backend == "liboqs" and oqs_status() is None:
        return name in _NATIVE["liboqs"] or name in oqs_mechanisms()
    return name in _NATIVE[backend]


@functools.lru_cache(maxsize=64)
def get_kem(name: str, backend: str = "auto") -> KEM:
    """The KEM ``name`` from ``backend`` (``"auto"``, ``"openssl"``, ``"liboqs"``, ``"pure"``).

    Raises :class:`UnknownAlgorithmError` for unknown names and
    :class:`BackendUnavailableError` (with the reason) when the backend is not
    usable here or does not offer that KEM. X25519 always comes from OpenSSL;
    in a hybrid, ``backend`` selects the ML-KEM part.
    """
    canonical = normalize_name(name)
    if backend == "auto":
        for candidate in _AUTO_ORDER:
            if _backend_reason(candidate) is None and _offers(candidate, canonical):
                return get_kem(canonical, candidate)
        raise BackendUnavailableError(f"no backend on this machine offers {canonical}")
    reason = _backend_reason(backend)
    if reason is not None:
        raise BackendUnavailableError(f"backend {backend!r} unavailable: {reason}")
    if canonical == "X25519":
        from kem._openssl import X25519KEM

        return X25519KEM()
    if not _offers(backend, canonical):
        raise BackendUnavailableError(
            f"backend {backend!r} does not offer {canonical}; try backend='auto'"
        )
    if canonical == "X25519MLKEM768":
        return X25519MLKEM768(get_kem("ML-KEM-768", backend), get_kem("X25519", "openssl"))
    if backend == "openssl":
        from kem._openssl import OpenSSLMLKEM

        return OpenSSLMLKEM(canonical)
    if backend == "pure":
        return PureMLKEM(canonical)
    return OQSKEM(canonical)


def combined(names: list[str], backend: str = "auto", *, label: bytes | None = None) -> CombinedKEM:
    """A :class:`CombinedKEM` over ``names`` in that order."""
    parts = [get_kem(n, backend if normalize_name(n) != "X25519" else "openssl") for n in names]
    return CombinedKEM(parts) if label is None else CombinedKEM(parts, label=label)


@dataclass(frozen=True, slots=True)
class BackendInfo:
    name: str
    available: bool
    reason: str | None
    algorithms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class KEMInfo:
    name: str
    backend: str
    available: bool
    reason: str | None
    public_key_size: int | None = None
    ciphertext_size: int | None = None
    shared_secret_size: int | None = None


def backend_report() -> list[BackendInfo]:
    """Every backend, whether it works here, why not, and what it offers."""
    report = []
    for backend in BACKENDS:
        reason = _backend_reason(backend)
        algs = sorted(
            _NATIVE[backend] | (_HYBRIDS if backend != "liboqs" or reason is None else set())
        )
        if backend == "liboqs" and reason is None:
            algs = sorted(set(algs) | set(oqs_mechanisms()))
        report.append(BackendInfo(backend, reason is None, reason, tuple(algs)))
    return report


def kem_report() -> list[KEMInfo]:
    """Every (KEM, backend) combination we know, usable or not, with sizes or the reason."""
    out = []
    for info in backend_report():
        for name in info.algorithms:
            if not info.available:
                out.append(KEMInfo(name, info.name, False, info.reason))
                continue
            k = get_kem(name, info.name)
            out.append(
                KEMInfo(
                    name,
                    info.name,
                    True,
                    None,
                    k.public_key_size,
                    k.ciphertext_size,
                    k.shared_secret_size,
                )
            )
    return out
