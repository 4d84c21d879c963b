"""The key schedule: HKDF-SHA384 with TLS 1.3-style labelled derivations, as stage objects.

Derivation diagram (``H`` = SHA-384, ``TH(a..b)`` = transcript hash of the framed
handshake messages a..b, ``0`` = 48 zero bytes)::

                 0
                 |
                 v
    PSK or 0 -> HKDF-Extract = EarlySecret             (PSK: external or QKD-PSK auth key)
                 |
                 +-----> Derive-Secret(., "ext binder" | "qkd binder", "") = binder_key
                 |
                 v
           Derive-Secret(., "derived", "")
                 |
                 v
    C ---------> HKDF-Extract = HandshakeSecret
                 |
                 +-----> Derive-Secret(., "c hs traffic", TH(CH..SH)) = client hs traffic
                 +-----> Derive-Secret(., "s hs traffic", TH(CH..SH)) = server hs traffic
                 |
                 v
           Derive-Secret(., "derived", "")
                 |
                 v
         0 ---> HKDF-Extract = MasterSecret
                 |
                 +-----> Derive-Secret(., "c ap traffic", TH(CH..server Fin))
                 +-----> Derive-Secret(., "s ap traffic", TH(CH..server Fin))
                 +-----> Derive-Secret(., "exp master",   TH(CH..server Fin)) = exporter
                 +-----> Derive-Secret(., "res master",   TH(CH..client Fin)) = resumption

    C = kem.combine_secrets(COMBINER_LABEL, [(name, secret) for each negotiated component
                            in the fixed order X25519, ML-KEM-768 | ML-KEM-1024 |
                            X25519MLKEM768, QKD])

``HKDF-Expand-Label(secret, label, context, n)`` is RFC 8446's with the prefix
``LABEL_PREFIX`` ("hc1 ") instead of "tls13 ", so our keys can never collide with TLS's.
Each stage object can move to the next stage exactly once (``next()`` consumes it), so
no traffic key can come from a schedule that skipped a stage (rustls' design).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

import kem

__all__ = [
    "COMBINER_LABEL",
    "HASH_LEN",
    "LABEL_PREFIX",
    "EarlySecret",
    "HandshakeSecret",
    "HmacSha384",
    "Labels",
    "MasterSecret",
    "derive_secret",
    "export_keying_material",
    "finished_verify_data",
    "hkdf_expand_label",
    "hkdf_extract",
    "next_traffic_secret",
    "traffic_keys",
    "transcript_hash",
]

HASH_LEN: Final = 48
LABEL_PREFIX: Final = b"hc1 "
#: Label for :func:`kem.combine_secrets` over the component secrets.
COMBINER_LABEL: Final = b"hybridchan v1 handshake components"
_ZEROS: Final = bytes(HASH_LEN)
_EMPTY_HASH: Final = hashlib.sha384(b"").digest()


def _hmac_sha384(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA384 (RFC 2104) through OpenSSL's one-shot (for a key used once)."""
    return hmac.digest(key, msg, "sha384")


_BLOCK: Final = 128  # SHA-384 block size
_IPAD: Final = bytes(b ^ 0x36 for b in range(256))
_OPAD: Final = bytes(b ^ 0x5C for b in range(256))


class HmacSha384:
    """HMAC-SHA384 (RFC 2104) under one key, for a secret that derives several values.

    The hash states after the key's inner and outer pads are computed once; each MAC
    then copies them, which costs less than half of a one-shot HMAC through OpenSSL 3
    (whose per-call setup dominates for short messages). Checked against
    :func:`hmac.digest` by a property test and by the committed transcript vectors.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha384(key).digest()
        padded = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha384(padded.translate(_IPAD))
        self._outer = hashlib.sha384(padded.translate(_OPAD))

    def digest(self, msg: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def __repr__(self) -> str:
        return "<HmacSha384>"


class Labels:
    """Every HKDF label in one place."""

    EXT_BINDER: Final = b"ext binder"
    QKD_BINDER: Final = b"qkd binder"
    DERIVED: Final = b"derived"
    C_HS_TRAFFIC: Final = b"c hs traffic"
    S_HS_TRAFFIC: Final = b"s hs traffic"
    C_AP_TRAFFIC: Final = b"c ap traffic"
    S_AP_TRAFFIC: Final = b"s ap traffic"
    EXP_MASTER: Final = b"exp master"
    RES_MASTER: Final = b"res master"
    FINISHED: Final = b"finished"
    KEY: Final = b"key"
    IV: Final = b"iv"
    TRAFFIC_UPD: Final = b"traffic upd"
    EXPORTER: Final = b"exporter"


def transcript_hash(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return _hmac_sha384(salt or _ZEROS, ikm)


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    if not 0 < length <= 255 * HASH_LEN:
        raise ValueError(f"HKDF-Expand length {length} out of range")
    if length <= HASH_LEN:  # one block: the common case, kept cheap
        return _hmac_sha384(prk, info + b"\x01")[:length]
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = _hmac_sha384(prk, block + info + bytes([counter]))
        out += block
        counter += 1
    return out[:length]


#: ``length:u16 | len(label):u8 | "hc1 " label`` per (label, length), built once.
_LABEL_HEADERS: dict[tuple[bytes, int], bytes] = {}


def _label_header(label: bytes, length: int) -> bytes:
    header = _LABEL_HEADERS.get((label, length))
    if header is None:
        full = LABEL_PREFIX + label
        if len(full) > 255:
            raise ValueError(f"HKDF label of {len(full)} bytes is too long")
        header = length.to_bytes(2, "big") + bytes([len(full)]) + full
        if len(_LABEL_HEADERS) < 1024:  # exporter labels come from callers: stay bounded
            _LABEL_HEADERS[(label, length)] = header
    return header


def hkdf_expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    info = _label_header(label, length) + bytes([len(context)]) + context
    return _hkdf_expand(secret, info, length)


def derive_secret(secret: bytes, label: bytes, transcript_digest: bytes) -> bytes:
    """``Derive-Secret``; takes the transcript *hash* (callers hash once, derive many)."""
    return hkdf_expand_label(secret, label, transcript_digest, HASH_LEN)


def _derive_with(mac: HmacSha384, label: bytes, transcript_digest: bytes) -> bytes:
    """:func:`derive_secret` with the secret's HMAC states already computed (one block)."""
    header = _label_header(label, HASH_LEN)
    return mac.digest(header + bytes([len(transcript_digest)]) + transcript_digest + b"\x01")


def finished_verify_data(base_key: bytes, transcript_digest: bytes) -> bytes:
    """Finished (or PSK binder) value: HMAC(finished_key(base_key), transcript hash)."""
    finished_key = hkdf_expand_label(base_key, Labels.FINISHED, b"", HASH_LEN)
    return _hmac_sha384(finished_key, transcript_digest)


def traffic_keys(secret: bytes) -> tuple[bytes, bytes]:
    """AES-256-GCM ``(key, iv)`` for one traffic secret (record layer)."""
    return (
        hkdf_expand_label(secret, Labels.KEY, b"", 32),
        hkdf_expand_label(secret, Labels.IV, b"", 12),
    )


def next_traffic_secret(secret: bytes, qkd_key: bytes | None = None) -> bytes:
    """The traffic secret after a key update.

    With a fresh QKD key: ``HKDF-Expand-Label(HKDF-Extract(salt=secret, ikm=qkd_key),
    "traffic upd", "", 48)``, so the new epoch is safe if *either* the old secret or the
    QKD key is unknown. Without: TLS 1.3's ``HKDF-Expand-Label(secret, "traffic upd", "", 48)``.
    """
    base = secret if qkd_key is None else hkdf_extract(secret, qkd_key)
    return hkdf_expand_label(base, Labels.TRAFFIC_UPD, b"", HASH_LEN)


def export_keying_material(
    exporter_secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    """RFC 8446 section 7.5 exporter over the session's exporter secret."""
    per_label = derive_secret(exporter_secret, label, _EMPTY_HASH)
    return hkdf_expand_label(per_label, Labels.EXPORTER, transcript_hash(context), length)


class _Stage:
    """A schedule stage that may advance exactly once.

    Every stage derives several values from its secret, so it keeps the secret's HMAC
    states (:class:`HmacSha384`) rather than re-keying HMAC for each derivation.
    """

    __slots__ = ("_consumed", "_mac", "_secret")

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._mac: HmacSha384 | None = None
        self._consumed = False

    def _derive(self, label: bytes, transcript_digest: bytes) -> bytes:
        mac = self._mac
        if mac is None:
            mac = self._mac = HmacSha384(self._secret)
        return _derive_with(mac, label, transcript_digest)

    def _advance(self) -> bytes:
        if self._consumed:
            raise RuntimeError(f"{type(self).__name__} already advanced; a stage is used once")
        self._consumed = True
        if self._secret is _NO_PSK_EARLY:  # constant: derived once at import
            return _NO_PSK_DERIVED
        return self._derive(Labels.DERIVED, _EMPTY_HASH)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class EarlySecret(_Stage):
    """Stage 1: the authenticating PSK (external or QKD-PSK), else zeros."""

    __slots__ = ()

    def __init__(self, psk: bytes | None = None) -> None:
        super().__init__(_NO_PSK_EARLY if psk is None else hkdf_extract(_ZEROS, psk))

    def binder_key(self, *, qkd: bool) -> bytes:
        label = Labels.QKD_BINDER if qkd else Labels.EXT_BINDER
        return self._derive(label, _EMPTY_HASH)

    def next(self, components: list[tuple[str, bytes]]) -> HandshakeSecret:
        """Mix in every negotiated component secret (already in the fixed order)."""
        if not components:
            raise ValueError("at least one key-exchange component is required")
        combined = kem.combine_secrets(COMBINER_LABEL, components)
        return HandshakeSecret(hkdf_extract(self._advance(), combined))


#: The early secret without a PSK, and its "derived" secret: constants of the schedule.
_NO_PSK_EARLY: Final = hkdf_extract(_ZEROS, _ZEROS)
_NO_PSK_DERIVED: Final = derive_secret(_NO_PSK_EARLY, Labels.DERIVED, _EMPTY_HASH)


class HandshakeSecret(_Stage):
    """Stage 2: handshake traffic secrets over TH(ClientHello..ServerHello)."""

    __slots__ = ()

    def client_traffic(self, th: bytes) -> bytes:
        return self._derive(Labels.C_HS_TRAFFIC, th)

    def server_traffic(self, th: bytes) -> bytes:
        return self._derive(Labels.S_HS_TRAFFIC, th)

    def next(self) -> MasterSecret:
        return MasterSecret(hkdf_extract(self._advance(), _ZEROS))


class MasterSecret(_Stage):
    """Stage 3: application traffic, exporter and resumption secrets."""

    __slots__ = ()

    def client_traffic(self, th: bytes) -> bytes:
        return self._derive(Labels.C_AP_TRAFFIC, th)

    def server_traffic(self, th: bytes) -> bytes:
        return self._derive(Labels.S_AP_TRAFFIC, th)

    def exporter(self, th: bytes) -> bytes:
        return self._derive(Labels.EXP_MASTER, th)

    def resumption(self, th: bytes) -> bytes:
        return self._derive(Labels.RES_MASTER, th)
