"""ETSI GS QKD 014 V1.1.1 wire formats, sans-IO: parse requests, build responses, map errors.

Field names are the specification's (``number``, ``size``,
``additional_slave_SAE_IDs``, ``extension_mandatory``, ``extension_optional``,
``key_IDs``, ``key_ID``, ``key``, ``source_KME_ID``, ``stored_key_count``, ...).
Sizes on the wire are in *bits*; keys are base64 (RFC 4648); key IDs are UUIDs.
Error bodies are ``{"message": ..., "details": [...]}`` with the specification's
messages where it gives one. Both the server and the clients use this module, so
the two sides agree on every bound.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

__all__ = [
    "MSG_EXT_MANDATORY",
    "MSG_KEYS_NOT_FOUND",
    "MSG_SIZE_MULTIPLE_OF_8",
    "APIError",
    "BadRequest",
    "KeyRequest",
    "Limits",
    "ServiceUnavailable",
    "Unauthorized",
    "decode_key_container",
    "encode_key_container",
    "parse_key_id",
    "parse_key_ids_body",
    "parse_key_request_body",
    "parse_key_request_query",
]

# Messages the specification itself uses (clause 6, error responses).
MSG_SIZE_MULTIPLE_OF_8: Final = "size shall be a multiple of 8"
MSG_EXT_MANDATORY: Final = "not all extension_mandatory parameters are supported"
MSG_KEYS_NOT_FOUND: Final = "one or more keys specified are not found on KME"

_UUID_RE: Final = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_KEY_REQUEST_FIELDS: Final = frozenset(
    {"number", "size", "additional_slave_SAE_IDs", "extension_mandatory", "extension_optional"}
)
_MAX_ID_LEN: Final = 128


class APIError(Exception):
    """An error response: HTTP ``status`` plus the JSON ``message`` and ``details``."""

    status: ClassVar[int] = 400

    def __init__(self, message: str, details: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details = [dict(d) for d in details]

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        if self.details:
            out["details"] = self.details
        return out


class BadRequest(APIError):
    """400: the request is malformed or asks for something this KME does not do."""

    status = 400


class Unauthorized(APIError):
    """401: the calling SAE may not do this (unknown SAE, or keys addressed to another SAE)."""

    status = 401


class ServiceUnavailable(APIError):
    """503: the KME cannot serve now (no key material, peer KME unreachable)."""

    status = 503


@dataclass(frozen=True, slots=True)
class Limits:
    """What one KME promises in its status response (sizes in bits).

    ``max_body_bytes`` bounds any request body; ``max_key_IDs_per_request``
    bounds a ``dec_keys`` POST.
    """

    key_size: int = 256
    min_key_size: int = 64
    max_key_size: int = 8192
    max_key_per_request: int = 128
    max_key_count: int = 1_000_000
    max_SAE_ID_count: int = 0
    max_body_bytes: int = 65536

    def __post_init__(self) -> None:
        for name in ("key_size", "min_key_size", "max_key_size"):
            value = getattr(self, name)
            if value <= 0 or value % 8:
                raise ValueError(f"{name} must be a positive multiple of 8 bits, got {value}")
        if not self.min_key_size <= self.key_size <= self.max_key_size:
            raise ValueError("need min_key_size <= key_size <= max_key_size")
        if self.max_key_per_request < 1:
            raise ValueError("max_key_per_request must be at least 1")


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """A validated ``enc_keys`` request: ``number`` keys of ``size`` bits each."""

    number: int
    size: int

    @property
    def size_bytes(self) -> int:
        return self.size // 8


def parse_key_request_body(body: object, limits: Limits) -> KeyRequest:
    """Validate the JSON object of an ``enc_keys`` POST (already decoded)."""
    if not isinstance(body, dict):
        raise BadRequest("Bad request format: the key request must be a JSON object")
    unknown = sorted(set(body) - _KEY_REQUEST_FIELDS)
    if unknown:
        raise BadRequest(
            f"Bad request format: unknown field(s) {', '.join(unknown)}",
            [{"unknown_fields": unknown}],
        )
    slaves = body.get("additional_slave_SAE_IDs", [])
    if not isinstance(slaves, list) or not all(isinstance(s, str) for s in slaves):
        raise BadRequest("Bad request format: additional_slave_SAE_IDs must be a list of strings")
    if len(slaves) > limits.max_SAE_ID_count:
        raise BadRequest(
            "additional_slave_SAE_IDs are not supported: this KME's max_SAE_ID_count is "
            f"{limits.max_SAE_ID_count}; request keys for one slave SAE at a time"
        )
    mandatory = body.get("extension_mandatory", [])
    if not isinstance(mandatory, list) or not all(isinstance(e, dict) for e in mandatory):
        raise BadRequest("Bad request format: extension_mandatory must be a list of objects")
    if mandatory:
        names = sorted({name for ext in mandatory for name in ext})
        raise BadRequest(MSG_EXT_MANDATORY, [{"extension_mandatory_unsupported": names}])
    optional = body.get("extension_optional", [])
    if not isinstance(optional, list) or not all(isinstance(e, dict) for e in optional):
        raise BadRequest("Bad request format: extension_optional must be a list of objects")
    return _key_request(body.get("number", 1), body.get("size", limits.key_size), limits)


def parse_key_request_query(params: Mapping[str, str], limits: Limits) -> KeyRequest:
    """Validate the ``number``/``size`` query parameters of an ``enc_keys`` GET."""
    _only(params, {"number", "size"})
    number = _query_int(params, "number", 1)
    size = _query_int(params, "size", limits.key_size)
    return _key_request(number, size, limits)


def parse_key_ids_body(body: object, limits: Limits) -> list[str]:
    """Validate the JSON object of a ``dec_keys`` POST: ``{"key_IDs": [{"key_ID": ...}]}``."""
    if not isinstance(body, dict):
        raise BadRequest("Bad request format: the key ID request must be a JSON object")
    unknown = sorted(set(body) - {"key_IDs", "key_IDs_extension"})
    if unknown:
        raise BadRequest(f"Bad request format: unknown field(s) {', '.join(unknown)}")
    entries = body.get("key_IDs")
    if not isinstance(entries, list) or not entries:
        raise BadRequest("Bad request format: key_IDs must be a non-empty list")
    if len(entries) > limits.max_key_per_request:
        raise BadRequest(
            f"Bad request format: at most {limits.max_key_per_request} key_IDs per request, "
            f"got {len(entries)}"
        )
    ids = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("key_ID"), str):
            raise BadRequest('Bad request format: each key_IDs entry must be {"key_ID": "<UUID>"}')
        if set(entry) - {"key_ID", "key_ID_extension"}:
            raise BadRequest("Bad request format: key_IDs entries carry only key_ID(_extension)")
        ids.append(parse_key_id(entry["key_ID"]))
    if len(set(ids)) != len(ids):
        raise BadRequest("Bad request format: the same key_ID is listed twice")
    return ids


def parse_key_id(value: str) -> str:
    """A key ID in canonical lowercase UUID form (``BadRequest`` otherwise)."""
    if not isinstance(value, str) or not _UUID_RE.match(value):
        shown = value[:40] if isinstance(value, str) else type(value).__name__
        raise BadRequest(
            f"Bad request format: key_ID {shown!r} is not a UUID "
            "(expected 8-4-4-4-12 hexadecimal digits)"
        )
    return value.lower()


def check_sae_id(value: str, what: str) -> str:
    """SAE/KME IDs: 1..128 printable ASCII characters without ``/``."""
    if not (0 < len(value) <= _MAX_ID_LEN) or not value.isprintable() or "/" in value:
        raise BadRequest(
            f"Bad request format: {what} must be 1..{_MAX_ID_LEN} printable characters"
        )
    if not value.isascii():
        raise BadRequest(f"Bad request format: {what} must be ASCII")
    return value


def encode_key_container(keys: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
    """The ``Key container`` JSON object for ``(key_ID, key)`` pairs."""
    return {
        "keys": [
            {"key_ID": key_id, "key": base64.b64encode(key).decode("ascii")} for key_id, key in keys
        ]
    }


def decode_key_container(body: object, *, max_keys: int) -> list[tuple[str, bytes]]:
    """Parse a ``Key container`` (client side); ``ValueError`` on anything malformed."""
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise ValueError("response is not a key container (no 'keys' list)")
    entries = body["keys"]
    if not 0 < len(entries) <= max_keys:
        raise ValueError(f"key container holds {len(entries)} keys, expected 1..{max_keys}")
    out = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ValueError("key container entry is not an object")
        key_id, key = entry.get("key_ID"), entry.get("key")
        if not isinstance(key_id, str) or not _UUID_RE.match(key_id) or not isinstance(key, str):
            raise ValueError("key container entry lacks a UUID key_ID or a key string")
        try:
            out.append((key_id.lower(), base64.b64decode(key, validate=True)))
        except (binascii.Error, ValueError):
            raise ValueError(f"key for {key_id} is not valid base64") from None
    return out


def _key_request(number: object, size: object, limits: Limits) -> KeyRequest:
    if not _is_int(number) or not _is_int(size):
        raise BadRequest("Bad request format: number and size must be integers")
    assert isinstance(number, int) and isinstance(size, int)
    if size % 8:
        raise BadRequest(MSG_SIZE_MULTIPLE_OF_8, [{"size": size}])
    if not limits.min_key_size <= size <= limits.max_key_size:
        raise BadRequest(
            f"requested key size {size} bits is outside this KME's range "
            f"{limits.min_key_size}..{limits.max_key_size} (see status: min_key_size/max_key_size)"
        )
    if not 1 <= number <= limits.max_key_per_request:
        raise BadRequest(
            f"requested number of keys {number} is outside 1..{limits.max_key_per_request} "
            "(see status: max_key_per_request)"
        )
    return KeyRequest(number, size)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _only(params: Mapping[str, str], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadRequest(f"Bad request format: unknown query parameter(s) {', '.join(unknown)}")


def _query_int(params: Mapping[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise BadRequest(f"Bad request format: query parameter {name} must be a positive integer")
    return int(raw)
