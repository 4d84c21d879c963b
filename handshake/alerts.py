"""Alert descriptions and the 2-byte alert body.

The values follow TLS 1.3 (RFC 8446, section 6) where a TLS alert fits; two private
values (220, 221) name QKD key-source failures so that a peer can tell "the QKD link
had no key" from "someone sent a key ID we never issued".
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["AlertDescription", "AlertLevel", "decode_alert", "encode_alert"]


class AlertLevel(IntEnum):
    WARNING = 1
    FATAL = 2


class AlertDescription(IntEnum):
    close_notify = 0
    unexpected_message = 10
    bad_record_mac = 20
    record_overflow = 22
    handshake_failure = 40
    bad_certificate = 42
    certificate_expired = 45
    illegal_parameter = 47
    unknown_ca = 48
    decode_error = 50
    decrypt_error = 51
    protocol_version = 70
    insufficient_security = 71
    internal_error = 80
    unrecognized_name = 112
    unknown_psk_identity = 115
    qkd_key_unavailable = 220
    qkd_key_unknown = 221


def encode_alert(description: AlertDescription | int) -> bytes:
    """The alert body ``level || description``; close_notify is a warning, all else fatal."""
    desc = AlertDescription(description)
    level = AlertLevel.WARNING if desc == AlertDescription.close_notify else AlertLevel.FATAL
    return bytes([level, desc])


def decode_alert(data: bytes) -> tuple[AlertLevel, AlertDescription]:
    """Parse a 2-byte alert body; raises :class:`ProtocolError` (decode_error) if malformed."""
    from handshake.errors import ProtocolError  # errors imports this module

    if len(data) != 2:
        raise ProtocolError(f"alert body must be 2 bytes, got {len(data)}")
    try:
        return AlertLevel(data[0]), AlertDescription(data[1])
    except ValueError:
        raise ProtocolError(f"unknown alert level/description {data.hex()}") from None
