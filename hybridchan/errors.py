"""Errors raised by hybridchan channels.

Theory of operation
-------------------
The handshake defines the root types (:class:`HandshakeError` with its
``alert`` class attribute, :class:`ProtocolError`, :class:`AuthenticationError`,
:class:`KeyUnavailableError`, :class:`PolicyError`). hybridchan re-exports them
and raises them unchanged for handshake failures, so ``except
hybridchan.AuthenticationError`` catches a bad certificate whichever layer
found it.

Errors found by the channel itself (record layer, rekeying, timeouts, use after
close) derive from :class:`ChannelError` *and* from the matching handshake type:
a forged record raises :class:`BadRecordMAC`, which is both a
:class:`ChannelError` and a :class:`ProtocolError`.

Every error the channel raises carries ``alert_sent`` (the alert we sent the
peer before closing, or ``None``) and ``alert_received`` (the peer's fatal
alert, or ``None``). Messages never contain key material.
"""

from __future__ import annotations

from typing import Final

from handshake.alerts import AlertDescription
from handshake.errors import (
    AuthenticationError,
    HandshakeError,
    KeyUnavailableError,
    PolicyError,
    ProtocolError,
    QKDKeyError,
)
from handshake.errors import PeerAlertError as _HandshakePeerAlertError

__all__ = [
    "AlertDescription",
    "AuthenticationError",
    "BadRecordMAC",
    "ChannelClosed",
    "ChannelError",
    "ClosedWithoutHandshake",
    "ConfigError",
    "ConnectTimeout",
    "ForeignProtocolError",
    "HandshakeError",
    "HandshakeTimeout",
    "KeyUnavailableError",
    "PeerAlertError",
    "PolicyError",
    "ProtocolError",
    "QKDKeyError",
    "RecordDecodeError",
    "RecordOverflow",
    "RekeyKeyUnavailableError",
    "RekeyKeyUnknownError",
    "RekeyPolicyError",
    "TruncatedError",
    "UnexpectedRecord",
    "annotate",
    "error_for_alert",
    "error_name",
]


class ConfigError(ValueError):
    """A :class:`~hybridchan.ChannelConfig` field has a value that is not allowed.

    The message names the field and the allowed values.
    """


class ChannelError(Exception):
    """Root of the errors found by the channel layer (not by the handshake)."""

    alert: AlertDescription = AlertDescription.internal_error
    alert_sent: AlertDescription | None = None
    alert_received: AlertDescription | None = None


class ChannelClosed(ChannelError):
    """The channel is closed (locally, by the peer, or after an error); open a new one.

    ``__cause__`` holds the error that closed it, if any.
    """


class ClosedWithoutHandshake(ChannelClosed):
    """The peer closed the connection before sending a single byte.

    On a server this is a port probe or a health check; on a client, a server that
    dropped the connection without answering. Nothing was exchanged, so nothing can
    have been cut off (unlike :class:`TruncatedError`): servers do not report it.
    """


class HandshakeTimeout(ChannelError, TimeoutError):
    """The handshake did not finish within ``ChannelConfig.handshake_timeout`` seconds."""


class ConnectTimeout(ChannelError, TimeoutError):
    """The TCP connection was not established within the connect ``timeout``."""

    @classmethod
    def for_address(cls, host: str, port: int, seconds: float | None) -> ConnectTimeout:
        return cls(
            f"no TCP connection to {host}:{port} within {seconds} s: the host is unreachable, "
            "a firewall drops the packets, or the server is too busy to accept; check the "
            "address, or pass a larger timeout"
        )


class RecordError(ChannelError, ProtocolError):
    """The peer sent records that do not follow the record protocol."""


class BadRecordMAC(RecordError):
    """A record failed authentication (tampered, reordered, replayed or injected)."""

    alert = AlertDescription.bad_record_mac


class RecordOverflow(RecordError):
    """A record is longer than the protocol allows."""

    alert = AlertDescription.record_overflow


class UnexpectedRecord(RecordError):
    """A record of a type or epoch that is not allowed in the current state."""

    alert = AlertDescription.unexpected_message


class RecordDecodeError(RecordError):
    """A record or control message is malformed."""

    alert = AlertDescription.decode_error


class ForeignProtocolError(RecordDecodeError):
    """The peer's first bytes are not a hybridchan record header: it speaks another
    protocol (TLS, HTTP, SSH, ...), so it is not a hybridchan endpoint."""


class TruncatedError(RecordError):
    """The transport ended without a close-notify: data may have been cut off."""

    alert = AlertDescription.decode_error


class RekeyKeyUnavailableError(ChannelError, KeyUnavailableError):
    """No fresh QKD key could be had for a key update and the policy forbids falling back."""

    alert = AlertDescription.qkd_key_unavailable


class RekeyKeyUnknownError(ChannelError, QKDKeyError):
    """The peer's key update names a QKD key our key source does not have (or already used)."""

    alert = AlertDescription.qkd_key_unknown


class RekeyPolicyError(ChannelError, PolicyError):
    """The peer updated keys without a QKD key although the policy requires one."""

    alert = AlertDescription.insufficient_security


class PeerAlertError(ChannelError, _HandshakePeerAlertError):
    """The peer closed the channel with a fatal alert (``alert`` and ``alert_received``)."""


class _PeerProtocolError(PeerAlertError, ProtocolError):
    """The peer reported that our records or messages were malformed or tampered with."""


class _PeerAuthenticationError(PeerAlertError, AuthenticationError):
    """The peer rejected our authentication (certificate, signature, PSK or Finished)."""


class _PeerKeyUnavailableError(PeerAlertError, KeyUnavailableError):
    """The peer could not obtain the QKD key the channel needs."""


class _PeerHandshakeError(PeerAlertError, HandshakeError):
    """The peer aborted the handshake."""


_D = AlertDescription
_AUTH_ALERTS = frozenset(
    {
        _D.bad_certificate,
        _D.certificate_expired,
        _D.unknown_ca,
        _D.decrypt_error,
        _D.unknown_psk_identity,
    }
)
_QKD_ALERTS = frozenset({_D.qkd_key_unavailable, _D.qkd_key_unknown})
_PROTOCOL_ALERTS = frozenset(
    {
        _D.unexpected_message,
        _D.bad_record_mac,
        _D.record_overflow,
        _D.decode_error,
        _D.illegal_parameter,
    }
)


def error_for_alert(description: int) -> PeerAlertError:
    """The error to raise when the peer sends the fatal alert ``description``."""
    try:
        desc = AlertDescription(description)
    except ValueError:
        desc = AlertDescription.internal_error
        name = f"unknown alert {description}"
    else:
        name = desc.name
    cls: type[PeerAlertError]
    if desc in _AUTH_ALERTS:
        cls = _PeerAuthenticationError
    elif desc in _QKD_ALERTS:
        cls = _PeerKeyUnavailableError
    elif desc in _PROTOCOL_ALERTS:
        cls = _PeerProtocolError
    else:
        cls = _PeerHandshakeError
    exc = cls(
        f"the peer closed the channel with the fatal alert {name} ({description})", alert=desc
    )
    exc.alert_received = desc
    return exc


def annotate(exc: BaseException, *, sent: int | None = None) -> None:
    """Record on ``exc`` which alert we sent the peer; give it ``alert_received`` if missing."""
    if sent is not None:
        exc.alert_sent = AlertDescription(sent)  # type: ignore[attr-defined]
    elif not hasattr(exc, "alert_sent"):
        exc.alert_sent = None  # type: ignore[attr-defined]
    if not hasattr(exc, "alert_received"):
        exc.alert_received = None  # type: ignore[attr-defined]


# The public kinds a private peer-alert class is named by (first match in its MRO).
_KINDS: Final = (AuthenticationError, KeyUnavailableError, QKDKeyError, PolicyError, ProtocolError)


def error_name(exc: BaseException) -> str:
    """The public class name to show for ``exc``: a private peer-alert class (say
    ``_PeerAuthenticationError``) is named by the kind it derives from
    (``AuthenticationError``)."""
    name = type(exc).__name__
    if not name.startswith("_"):
        return name
    return next((cls.__name__ for cls in type(exc).__mro__ if cls in _KINDS), "PeerAlertError")
