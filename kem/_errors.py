"""Typed errors of the ``kem`` package. Messages say what was expected."""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "InvalidCiphertextError",
    "InvalidKeyError",
    "KEMError",
    "LowOrderPointError",
    "UnknownAlgorithmError",
]


class KEMError(Exception):
    """Root of every error raised by :mod:`kem`."""


class InvalidKeyError(KEMError, ValueError):
    """A public or private key has the wrong type or length."""


class InvalidCiphertextError(KEMError, ValueError):
    """A ciphertext has the wrong type or length."""


class LowOrderPointError(KEMError, ValueError):
    """An X25519 public value is a low-order point: the shared secret would be all zeros."""


class UnknownAlgorithmError(KEMError, LookupError):
    """No KEM of that name exists (in that backend)."""


class BackendUnavailableError(KEMError, RuntimeError):
    """The requested backend cannot be used on this machine; the message says why."""
