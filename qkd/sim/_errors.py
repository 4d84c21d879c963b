"""Errors raised by the QKD link simulation. Messages never contain key material."""

from __future__ import annotations

__all__ = [
    "AuthKeyExhaustedError",
    "AuthenticationError",
    "ParameterError",
    "QKDSimError",
    "ReconciliationError",
]


class QKDSimError(Exception):
    """Root of every error raised by :mod:`qkd.sim`."""


class ParameterError(QKDSimError, ValueError):
    """A simulation or post-processing parameter is out of range or inconsistent."""


class AuthenticationError(QKDSimError):
    """A post-processing message failed its Wegman-Carter tag: the channel is under attack."""


class AuthKeyExhaustedError(QKDSimError):
    """The authentication key pool is empty; supply a new pre-shared key to restart the link."""


class ReconciliationError(QKDSimError):
    """Cascade could not converge (inconsistent parities): the block is discarded."""
