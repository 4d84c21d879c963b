"""Handshake errors. Each class carries the alert it maps to (``alert`` class attribute).

``HandshakeError`` is the root. A raised error may override the class alert with the
``alert=`` keyword so that one class ("the peer sent something wrong") can still report
the precise TLS alert (decode_error, illegal_parameter, ...). :func:`alert_for` is the
one place that maps any exception to the alert to send.
"""

from __future__ import annotations

from handshake.alerts import AlertDescription

__all__ = [
    "AuthenticationError",
    "HandshakeError",
    "KeyUnavailableError",
    "PeerAlertError",
    "PolicyError",
    "ProtocolError",
    "QKDKeyError",
    "alert_for",
]


class HandshakeError(Exception):
    """Root of every handshake failure. ``alert`` is what we tell the peer."""

    alert: AlertDescription = AlertDescription.internal_error

    def __init__(self, message: str, *, alert: AlertDescription | None = None) -> None:
        super().__init__(message)
        if alert is not None:
            self.alert = AlertDescription(alert)


class ProtocolError(HandshakeError):
    """The peer sent malformed or unexpected input (default alert decode_error)."""

    alert = AlertDescription.decode_error


class AuthenticationError(HandshakeError):
    """The peer could not be authenticated: signature, certificate, PSK or Finished."""

    alert = AlertDescription.decrypt_error


class KeyUnavailableError(HandshakeError):
    """The QKD key source could not deliver a key and the policy does not allow fallback."""

    alert = AlertDescription.qkd_key_unavailable


class QKDKeyError(HandshakeError):
    """The peer named a QKD key ID that is unknown here or was already used."""

    alert = AlertDescription.qkd_key_unknown


class PolicyError(HandshakeError):
    """The configuration or the negotiated result violates the security policy."""

    alert = AlertDescription.insufficient_security


class PeerAlertError(HandshakeError):
    """The peer sent a fatal alert; ``alert`` is the peer's description."""


def alert_for(exc: BaseException) -> AlertDescription:
    """The alert to send for ``exc``; anything unexpected is internal_error."""
    if isinstance(exc, HandshakeError):
        return exc.alert
    return AlertDescription.internal_error
