"""Handshake messages: one frozen dataclass per message, with ``encode()`` / ``decode()``.

Wire format (all integers big-endian; see ``docs/protocol.md`` for the full tables)::

    Handshake  = msg_type:u8 || length:u24 || body            (length <= MAX_MESSAGE_SIZE)

Decoding is "full recognition before processing" (rustls): a body is parsed completely,
every length is bounded, trailing bytes are rejected, and any malformation raises
:class:`~handshake.errors.ProtocolError` with alert decode_error. Code points (groups,
signature schemes, ...) stay plain integers here; the state machines decide whether a
value is acceptable, so the codec never fails on an unknown but well-formed value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, Final, TypeAlias

from handshake._codec import Reader, Writer
from handshake.alerts import AlertDescription
from handshake.errors import ProtocolError

__all__ = [
    "MAX_CHAIN_LENGTH",
    "MAX_MESSAGE_SIZE",
    "PROTOCOL_VERSION",
    "AuthMode",
    "Certificate",
    "CertificateRequest",
    "CertificateType",
    "CertificateVerify",
    "CipherSuite",
    "ClientHello",
    "EncryptedExtensions",
    "Finished",
    "HandshakeType",
    "KeyShare",
    "KeyUpdate",
    "Message",
    "MessageBuffer",
    "NamedGroup",
    "PSKOffer",
    "QKDKeyRef",
    "ServerHello",
    "SignatureScheme",
    "decode_message",
    "frame",
]

#: Our protocol version ("HC" v1); not a TLS version, so a TLS stack never mistakes it.
PROTOCOL_VERSION: Final = 0x4831
#: Upper bound of one handshake message body: room for two ML-DSA-87 chains of 3 certs.
MAX_MESSAGE_SIZE: Final = 1 << 17
#: Size of Finished verify_data and PSK binders (SHA-384 output).
HASH_LEN: Final = 48
RANDOM_LEN: Final = 32

_MAX_SHARE = 4096  # ML-KEM-1024 public key 1568 B, X25519MLKEM768 1216 B
_MAX_CERT = 32768
#: Certificates per chain in a Certificate message (leaf first).
MAX_CHAIN_LENGTH: Final = 8
_MAX_SIG = 8192  # ML-DSA-87 signature 4627 B
_MAX_ID = 255
_MAX_KEY_ID = 64


class HandshakeType(IntEnum):
    client_hello = 1
    server_hello = 2
    encrypted_extensions = 8
    certificate = 11
    certificate_request = 13
    certificate_verify = 15
    finished = 20
    key_update = 24


class CipherSuite(IntEnum):
    TLS_AES_256_GCM_SHA384 = 0x1302


class NamedGroup(IntEnum):
    """Key-exchange components carried as key shares (QKD is not a share: see QKDKeyRef)."""

    X25519 = 0x001D
    ML_KEM_768 = 0x0201
    ML_KEM_1024 = 0x0202
    X25519MLKEM768 = 0x11EC


class SignatureScheme(IntEnum):
    ecdsa_secp256r1_sha256 = 0x0403
    ed25519 = 0x0807
    mldsa44 = 0x0904
    mldsa65 = 0x0905
    mldsa87 = 0x0906
    #: Private code point: two signatures, ML-DSA-65 then Ed25519; both must verify.
    mldsa65_ed25519 = 0xFE65


class AuthMode(IntEnum):
    certificate = 0
    raw_public_key = 1
    external_psk = 2
    qkd_psk = 3


class CertificateType(IntEnum):
    x509 = 0
    raw_public_key = 2


# -- building blocks ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyShare:
    """A group code and its public key (ClientHello) or ciphertext/public key (ServerHello)."""

    group: int
    key_exchange: bytes = field(repr=False)

    def write(self, w: Writer) -> None:
        w.uint(self.group, 2)
        w.vector(self.key_exchange, 2, _MAX_SHARE, 1)

    @classmethod
    def read(cls, r: Reader) -> KeyShare:
        return cls(group=r.uint(2), key_exchange=r.vector(2, _MAX_SHARE, 1))


@dataclass(frozen=True, slots=True, kw_only=True)
class QKDKeyRef:
    """Names one QKD key on the wire: its key_ID, both SAE IDs and its purpose.

    ``initiator_sae_id`` reserved the key (ETSI master SAE, here always the client),
    ``responder_sae_id`` fetches it. ``purpose`` is ``0`` (confidentiality component) or
    ``1`` (authentication PSK); a key is drawn for exactly one purpose.
    """

    CONFIDENTIALITY: ClassVar[int] = 0
    AUTHENTICATION: ClassVar[int] = 1

    key_id: str
    initiator_sae_id: str
    responder_sae_id: str
    purpose: int

    def write(self, w: Writer) -> None:
        w.text(self.key_id, 1, _MAX_KEY_ID, 1)
        w.text(self.initiator_sae_id, 1, _MAX_ID, 1)
        w.text(self.responder_sae_id, 1, _MAX_ID, 1)
        w.uint(self.purpose, 1)

    @classmethod
    def read(cls, r: Reader) -> QKDKeyRef:
        ref = cls(
            key_id=r.text(1, _MAX_KEY_ID, 1),
            initiator_sae_id=r.text(1, _MAX_ID, 1),
            responder_sae_id=r.text(1, _MAX_ID, 1),
            purpose=r.uint(1),
        )
        if ref.purpose not in (cls.CONFIDENTIALITY, cls.AUTHENTICATION):
            raise ProtocolError(
                f"QKD key purpose {ref.purpose} is neither confidentiality (0) nor auth (1)",
                alert=AlertDescription.illegal_parameter,
            )
        return ref

    def encode(self) -> bytes:
        w = Writer()
        self.write(w)
        return w.getvalue()


@dataclass(frozen=True, slots=True, kw_only=True)
class PSKOffer:
    """The authenticating PSK: identity (external id, or an encoded QKDKeyRef) and binder.

    The binder is the last field of the ClientHello, so the hash of the ClientHello
    truncated before it (:meth:`ClientHello.binder_prefix`) is what the binder covers.
    """

    identity: bytes
    binder: bytes = field(repr=False)


# -- messages ----------------------------------------------------------------------------


def _read_flag(r: Reader, what: str) -> bool:
    value = r.uint(1)
    if value > 1:
        raise ProtocolError(f"{what} must be 0 or 1, got {value}")
    return value == 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientHello:
    """Every offer the client makes; the transcript hash starts with it."""

    msg_type: ClassVar[HandshakeType] = HandshakeType.client_hello

    version: int = PROTOCOL_VERSION
    random: bytes = field(repr=False)
    cipher_suites: tuple[int, ...]
    key_shares: tuple[KeyShare, ...]
    signature_schemes: tuple[int, ...]
    server_name: str
    auth_mode: int
    qkd_key: QKDKeyRef | None = None
    psk: PSKOffer | None = None

    def encode(self) -> bytes:
        w = Writer()
        w.uint(self.version, 2)
        w.fixed(self.random, RANDOM_LEN)
        w.u16_list(self.cipher_suites, 1, 16)
        w.count(len(self.key_shares), 1, 8)
        for share in self.key_shares:
            share.write(w)
        w.u16_list(self.signature_schemes, 1, 16)
        w.text(self.server_name, 1, _MAX_ID)
        w.uint(self.auth_mode, 1)
        w.uint(self.qkd_key is not None, 1)
        if self.qkd_key is not None:
            self.qkd_key.write(w)
        w.uint(self.psk is not None, 1)
        if self.psk is not None:
            w.vector(self.psk.identity, 2, 1024, 1)
            w.vector(self.psk.binder, 1, HASH_LEN, HASH_LEN)
        return w.getvalue()

    @classmethod
    def decode(cls, body: bytes) -> ClientHello:
        r = Reader(body, "ClientHello")
        version = r.uint(2)
        random = r.fixed(RANDOM_LEN)
        suites = r.u16_list(1, 16)
        shares = tuple(r.items(1, 8, KeyShare.read))
        schemes = r.u16_list(1, 16)
        name = r.text(1, _MAX_ID)
        auth = r.uint(1)
        qkd = QKDKeyRef.read(r) if _read_flag(r, "qkd flag") else None
        psk = None
        if _read_flag(r, "psk flag"):
            psk = PSKOffer(identity=r.vector(2, 1024, 1), binder=r.vector(1, HASH_LEN, HASH_LEN))
        r.finish()
        return cls(
            version=version,
            random=random,
            cipher_suites=suites,
            key_shares=shares,
            signature_schemes=schemes,
            server_name=name,
            auth_mode=auth,
            qkd_key=qkd,
            psk=psk,
        )

    @staticmethod
    def binder_prefix(framed: bytes) -> bytes:
        """The framed ClientHello up to (excluding) the binder's length byte and value."""
        return framed[: -(1 + HASH_LEN)]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerHello:
    """The server's selections: one share reply per selected group, QKD acceptance."""

    msg_type: ClassVar[HandshakeType] = HandshakeType.server_hello

    version: int = PROTOCOL_VERSION
    random: bytes = field(repr=False)
    cipher_suite: int
    key_shares: tuple[KeyShare, ...]
    qkd_accepted: bool
    auth_mode: int

    def encode(self) -> bytes:
        w = Writer()
        w.uint(self.version, 2)
        w.fixed(self.random, RANDOM_LEN)
        w.uint(self.cipher_suite, 2)
        w.count(len(self.key_shares), 1, 4)
        for share in self.key_shares:
            share.write(w)
        w.uint(self.qkd_accepted, 1)
        w.uint(self.auth_mode, 1)
        return w.getvalue()

    @classmethod
    def decode(cls, body: bytes) -> ServerHello:
        r = Reader(body, "ServerHello")
        msg = cls(
            version=r.uint(2),
            random=r.fixed(RANDOM_LEN),
            cipher_suite=r.uint(2),
            key_shares=tuple(r.items(1, 4, KeyShare.read)),
            qkd_accepted=_read_flag(r, "qkd_accepted"),
            auth_mode=r.uint(1),
        )
        r.finish()
        return msg


@dataclass(frozen=True, slots=True, kw_only=True)
class EncryptedExtensions:
    """First message under handshake keys; carries the server's own name ("" if none)."""

    msg_type: ClassVar[HandshakeType] = HandshakeType.encrypted_extensions

    server_name: str = ""

    def encode(self) -> bytes:
        w = Writer()
        w.text(self.server_name, 1, _MAX_ID)
        return w.getvalue()

    @classmethod
    def decode(cls, body: bytes) -> EncryptedExtensions:
        r = Reader(body, "EncryptedExtensions")
        msg = cls(server_name=r.text(1, _MAX_ID))
        r.finish()
        return msg


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateRequest:
    """Server asks for client authentication (mutual mode) of this type and schemes."""

    msg_type: ClassVar[HandshakeType] = HandshakeType.certificate_request

    certificate_type: int
    signature_schemes: tuple[int, ...]

    def encode(self) -> bytes:
        w = Writer()
        w.uint(self.certificate_type, 1)
        w.u16_list(self.signature_schemes, 1, 16)
        return w.getvalue()

    @classmethod
    def decode(cls, body: bytes) -> CertificateRequest:
        r = Reader(body, "CertificateRequest")
        msg = cls(certificate_type=r.uint(1), signature_schemes=r.u16_list(1, 16))
        r.finish()
        return msg


@dataclass(frozen=True, slots=True, kw_only=True)
class Certificate:
    """One or two chains (two: composite), each leaf first; raw keys: one SPKI per chain."""

    msg_type: ClassVar[HandshakeType] = HandshakeType.certificate

    certificate_type: int
    chains: tuple[tuple[bytes, ...], ...] = field(repr=False)

    def encode(self) -> bytes:
        w = Writer()
        w.uint(self.certificate_type, 1)
        w.count(len(self.chains), 1, 2)
        for chain in self.chains:
            w.count(len(chain), 1, MAX_CHAIN_LENGTH)
            for der in chain:
                w.vector(der, 3, _MAX_CERT, 1)
        return w.getvalue()

    @classmethod
    def decode(cls, body: bytes) -> Certificate:
        r = Reader(body, "Certificate")
        ctype = r.uint(1)
        chains = tuple(r.items(1, 2, lambda rr: tuple(rr.items(1, MAX_CHAIN_LENGTH, _read_cert))))
        r.finish()
        if not chains or any(not chain for chain in chains):
            raise ProtocolError("Certificate: empty certificate list")
        return cls(certificate_type=ctype, chains=chains)


def _read_cert(r: Reader) -> bytes:
    return r.vector(3, _MAX_CERT, 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateVerify:
    """Signature(s) over the transcript; composite schemes carry two, in scheme order."""

    msg_type: ClassVar[HandshakeType] = HandshakeType.certificate_verify

    scheme: int
    signatures: tuple[bytes, ...] = field(repr=False)

    def encode(self) -> bytes:
        w = Writer()
        w.uint(self.scheme, 2)
        w.count(len(self.signatures), 1, 2)
        for sig in self.signatures:
            w.vector(sig, 2, _MAX_SIG, 1)
        return w.getvalue()

    @classmethod
    def decode(cls, body: bytes) -> CertificateVerify:
        r = Reader(body, "CertificateVerify")
        scheme = r.uint(2)
        sigs = tuple(r.items(1, 2, lambda rr: rr.vector(2, _MAX_SIG, 1)))
        r.finish()
        if not sigs:
            raise ProtocolError("CertificateVerify: no signature")
        return cls(scheme=scheme, signatures=sigs)


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """HMAC over the transcript with the sender's finished key."""

    msg_type: ClassVar[HandshakeType] = HandshakeType.finished

    verify_data: bytes = field(repr=False)

    def encode(self) -> bytes:
        w = Writer()
        w.fixed(self.verify_data, HASH_LEN)
        return w.getvalue()

    @classmethod
    def decode(cls, body: bytes) -> Finished:
        r = Reader(body, "Finished")
        msg = cls(verify_data=r.fixed(HASH_LEN))
        r.finish()
        return msg


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyUpdate:
    """Application-epoch rekey: ``qkd_key_id`` names the fresh QKD key mixed in (or None)."""

    msg_type: ClassVar[HandshakeType] = HandshakeType.key_update

    request_update: bool
    qkd_key_id: str | None = None

    def encode(self) -> bytes:
        w = Writer()
        w.uint(self.request_update, 1)
        w.text(self.qkd_key_id or "", 1, _MAX_KEY_ID)
        return w.getvalue()

    @classmethod
    def decode(cls, body: bytes) -> KeyUpdate:
        r = Reader(body, "KeyUpdate")
        request = _read_flag(r, "request_update")
        key_id = r.text(1, _MAX_KEY_ID)
        r.finish()
        return cls(request_update=request, qkd_key_id=key_id or None)


Message: TypeAlias = (
    ClientHello
    | ServerHello
    | EncryptedExtensions
    | CertificateRequest
    | Certificate
    | CertificateVerify
    | Finished
    | KeyUpdate
)

_DECODERS: Final[dict[int, type[Message]]] = {
    cls.msg_type: cls
    for cls in (
        ClientHello,
        ServerHello,
        EncryptedExtensions,
        CertificateRequest,
        Certificate,
        CertificateVerify,
        Finished,
        KeyUpdate,
    )
}


def frame(msg: Message) -> bytes:
    """``msg_type:u8 || length:u24 || body``: the bytes that go on the wire and into hashes."""
    body = msg.encode()
    if len(body) > MAX_MESSAGE_SIZE:
        raise ValueError(f"{type(msg).__name__} body of {len(body)} bytes exceeds the limit")
    return bytes([msg.msg_type]) + len(body).to_bytes(3, "big") + body


def decode_message(msg_type: int, body: bytes) -> Message:
    """Decode one message body of ``msg_type`` (ProtocolError unexpected_message if unknown)."""
    cls = _DECODERS.get(msg_type)
    if cls is None:
        raise ProtocolError(
            f"unknown handshake message type {msg_type}",
            alert=AlertDescription.unexpected_message,
        )
    return cls.decode(body)


class MessageBuffer:
    """Reassembles handshake messages from arbitrary byte chunks.

    ``feed(data)`` then ``pop()`` until it returns ``None``. ``pop`` returns
    ``(message, raw)`` where ``raw`` is the framed bytes for the transcript. A length
    over :data:`MAX_MESSAGE_SIZE` raises at once, before the body arrives.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= 4:
            self._check_length(int.from_bytes(self._buf[1:4], "big"))

    @staticmethod
    def _check_length(length: int) -> None:
        if length > MAX_MESSAGE_SIZE:
            raise ProtocolError(
                f"handshake message of {length} bytes exceeds the {MAX_MESSAGE_SIZE}-byte limit",
                alert=AlertDescription.record_overflow,
            )

    def pop(self) -> tuple[Message, bytes] | None:
        if len(self._buf) < 4:
            return None
        length = int.from_bytes(self._buf[1:4], "big")
        self._check_length(length)
        if len(self._buf) < 4 + length:
            return None
        raw = bytes(self._buf[: 4 + length])
        del self._buf[: 4 + length]
        return decode_message(raw[0], raw[4:]), raw

    def __len__(self) -> int:
        return len(self._buf)
