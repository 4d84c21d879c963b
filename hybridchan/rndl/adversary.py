"""The future adversary at work: decrypt recorded sessions by recomputing everything.

Given a capture (the exact wire bytes of one session) and an :class:`Oracle`
limited to its capabilities, :func:`attack_hybridchan` does what a real
adversary would: split both byte streams into records, parse the plaintext
ClientHello/ServerHello, obtain each key-exchange component's secret (asking
the oracle for the private key behind the client's public share, or a QKD key
by its key ID), recompute the key schedule exactly as the endpoints did,
decrypt the encrypted handshake to extend the transcript, derive the
application traffic secrets and decrypt every application record -- following
key updates, which need a fresh QKD key whenever one was mixed in.

Nothing is taken from the endpoints: a wrong component secret gives wrong keys
and the AEAD refuses; what is reported as recovered is what decrypted.
:func:`attack_tls13` does the same for the OpenSSL TLS 1.3 baseline.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import kem
from handshake import keyschedule as ks
from handshake._codec import Reader
from handshake.events import Epoch
from handshake.messages import (
    AuthMode,
    ClientHello,
    Finished,
    KeyUpdate,
    Message,
    MessageBuffer,
    QKDKeyRef,
    ServerHello,
)
from handshake.policy import GROUP_NAMES
from hybridchan._record import (
    HEADER,
    HEADER_SIZE,
    MAX_PLAINTEXT,
    TAG_SIZE,
    ContentType,
    RecordProtection,
)
from hybridchan.errors import BadRecordMAC
from hybridchan.rndl import tls13
from hybridchan.rndl.capture import Capture
from hybridchan.rndl.oracle import NotGranted, Oracle

__all__ = ["AttackResult", "attack_hybridchan", "attack_tls13", "client_hello", "qkd_psk_key_id"]

#: The record layer's bound: a full plaintext fragment plus its AES-GCM tag.
_MAX_RECORD = MAX_PLAINTEXT + TAG_SIZE


@dataclass
class AttackResult:
    """What the adversary recovered from one recorded session."""

    client_to_server: bytes = b""
    server_to_client: bytes = b""
    #: Components (or key updates) whose secrets it could not obtain.
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def recovered(self) -> int:
        return len(self.client_to_server) + len(self.server_to_client)


@dataclass(frozen=True, slots=True)
class _Record:
    ctype: int
    epoch: int
    header: bytes
    fragment: bytes


def _records(stream: bytes) -> list[_Record]:
    out, offset = [], 0
    while offset + HEADER_SIZE <= len(stream):
        ctype, epoch, length = HEADER.unpack_from(stream, offset)
        body = offset + HEADER_SIZE
        end = body + length
        if end > len(stream) or length > _MAX_RECORD:
            break
        out.append(_Record(ctype, epoch, stream[offset:body], stream[body:end]))
        offset = end
    return out


class _Decryptor:
    """One direction's record protection, as the receiving endpoint keeps it (the record
    layer's own :class:`RecordProtection`), plus the secret for the next key update."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self._protection = RecordProtection(*ks.traffic_keys(secret))

    def open(self, record: _Record) -> bytes:
        """Decrypt the next record; :class:`BadRecordMAC` if the keys are wrong."""
        return self._protection.open(record.header, memoryview(record.fragment))

    def update(self, qkd_key: bytes | None) -> None:
        self.secret = ks.next_traffic_secret(self.secret, qkd_key)
        self._protection = RecordProtection(*ks.traffic_keys(self.secret))


def _plain_messages(records: list[_Record]) -> list[tuple[Message, bytes]]:
    buf = MessageBuffer()
    for r in records:
        if r.epoch == Epoch.INITIAL and r.ctype == ContentType.HANDSHAKE:
            buf.feed(r.fragment)
    out = []
    while (item := buf.pop()) is not None:
        out.append(item)
    return out


def client_hello(capture: Capture) -> ClientHello | None:
    """The recorded ClientHello (sent in the clear): what any eavesdropper can read."""
    messages = _plain_messages(_records(capture.client_to_server))
    hello = messages[0][0] if messages else None
    return hello if isinstance(hello, ClientHello) else None


def qkd_psk_key_id(hello: ClientHello) -> str | None:
    """The key ID of the QKD-PSK a ClientHello offers (``None``: no QKD-PSK)."""
    if hello.psk is None or hello.auth_mode != AuthMode.qkd_psk:
        return None
    return QKDKeyRef.read(Reader(hello.psk.identity, "QKD-PSK identity")).key_id


def _parts(name: str) -> tuple[str, ...]:
    """The algorithms behind one key-share group (a hybrid group has several)."""
    parts = getattr(kem.get_kem(name), "parts", ())
    return tuple(p.name for p in parts) or (name,)


def _component_secret(oracle: Oracle, name: str, client_share: bytes, server_share: bytes) -> bytes:
    """The shared secret of one key-share group, if the oracle grants what it needs.

    A hybrid group (X25519MLKEM768) is its parts' shares and secrets concatenated in the
    group's order, so each part is attacked on its own.
    """
    k = kem.get_kem(name)
    parts = getattr(k, "parts", None)
    if parts:
        secrets, c_at, s_at = [], 0, 0
        for part in parts:
            c_end, s_end = c_at + part.public_key_size, s_at + part.ciphertext_size
            secrets.append(
                _component_secret(
                    oracle, part.name, client_share[c_at:c_end], server_share[s_at:s_end]
                )
            )
            c_at, s_at = c_end, s_end
        return b"".join(secrets)
    return k.decapsulate(oracle.kem_private_key(name, client_share), server_share)


def _early_secret(
    oracle: Oracle, hello: ClientHello, result: AttackResult
) -> ks.EarlySecret | None:
    """The early secret: zeros, an external PSK (a long-term secret) or a QKD-PSK.

    A QKD-PSK comes from a compromised KME, or from a theft noted in the escrow as the
    long-term secret ``"qkd-psk:<key ID>"``.
    """
    if hello.psk is None:
        return ks.EarlySecret(None)
    try:
        key_id = qkd_psk_key_id(hello)
        if key_id is not None:
            try:
                return ks.EarlySecret(oracle.long_term_secret("qkd-psk:" + key_id))
            except NotGranted:
                return ks.EarlySecret(oracle.qkd_key(key_id))
        return ks.EarlySecret(oracle.long_term_secret("psk:" + hello.psk.identity.hex()))
    except NotGranted as exc:
        result.missing.append("PSK")
        result.notes.append(f"authentication PSK unknown: {exc}")
        return None


def attack_hybridchan(
    capture: Capture, oracle: Oracle, *, stand_in: bytes | None = None
) -> AttackResult:
    """Try to decrypt one recorded hybridchan session with what ``oracle`` grants.

    By default the attack stops when a secret is not granted. With ``stand_in`` it puts
    that value where each missing secret goes and carries on, as an adversary with a
    guess would: the AEAD then decides (and refuses unless the guess was right).
    """
    result = AttackResult()
    c2s, s2c = _records(capture.client_to_server), _records(capture.server_to_client)
    client_plain, server_plain = _plain_messages(c2s), _plain_messages(s2c)
    if not client_plain or not server_plain:
        result.notes.append("no complete handshake in the recording")
        return result
    hello, ch_raw = client_plain[0]
    server_hello, sh_raw = server_plain[0]
    assert isinstance(hello, ClientHello) and isinstance(server_hello, ServerHello)

    # 1. Every key-exchange component, in the order the endpoints combined them.
    offered = {share.group: share.key_exchange for share in hello.key_shares}
    components: list[tuple[str, bytes]] = []
    for share in server_hello.key_shares:
        name = GROUP_NAMES.get(share.group, f"group {share.group}")
        try:
            components.append(
                (name, _component_secret(oracle, name, offered[share.group], share.key_exchange))
            )
        except NotGranted as exc:
            result.missing.extend(p for p in _parts(name) if not oracle.adversary.breaks(p))
            result.notes.append(f"{name}: {exc}")
            if stand_in is not None:
                components.append((name, stand_in))
    if hello.qkd_key is not None and server_hello.qkd_accepted:
        try:
            components.append(("QKD", oracle.qkd_key(hello.qkd_key.key_id)))
        except NotGranted as exc:
            result.missing.append("QKD")
            result.notes.append(f"QKD: {exc}")
            if stand_in is not None:
                components.append(("QKD", stand_in))
    early = _early_secret(oracle, hello, result)
    if early is None and stand_in is not None:
        early = ks.EarlySecret(stand_in)
    if early is None or (result.missing and stand_in is None):
        return result

    # 2. The key schedule, recomputed from the transcript.
    transcript = ch_raw + sh_raw
    hs_secret = early.next(components)
    th = ks.transcript_hash(transcript)
    server_hs = _Decryptor(hs_secret.server_traffic(th))
    buf = MessageBuffer()
    try:
        for record in (
            r for r in s2c if r.epoch == Epoch.HANDSHAKE and r.ctype == ContentType.HANDSHAKE
        ):
            buf.feed(server_hs.open(record))
            while (item := buf.pop()) is not None:
                msg, raw = item
                transcript += raw
                if isinstance(msg, Finished):
                    break
    except BadRecordMAC:
        result.notes.append(
            "handshake records do not decrypt (AES-GCM tag does not verify): "
            "a component secret was wrong"
        )
        result.missing.append("handshake keys")
        return result
    master = hs_secret.next()
    th_app = ks.transcript_hash(transcript)
    secrets = {"c2s": master.client_traffic(th_app), "s2c": master.server_traffic(th_app)}

    # 3. Application data in each direction, following key updates.
    result.client_to_server = _decrypt_direction(c2s, secrets["c2s"], oracle, result, "client")
    result.server_to_client = _decrypt_direction(s2c, secrets["s2c"], oracle, result, "server")
    return result


def _decrypt_direction(
    records: list[_Record], secret: bytes, oracle: Oracle, result: AttackResult, who: str
) -> bytes:
    state = _Decryptor(secret)
    out = bytearray()
    for record in records:
        if record.epoch != Epoch.APPLICATION:
            continue
        try:
            body = state.open(record)
        except BadRecordMAC:
            result.notes.append(f"{who} record does not decrypt; stopping this direction")
            break
        if record.ctype == ContentType.APPLICATION_DATA:
            out += body
        elif record.ctype == ContentType.KEY_UPDATE:
            update = KeyUpdate.decode(body)
            qkd_key = None
            if update.qkd_key_id is not None:
                try:
                    qkd_key = oracle.qkd_key(update.qkd_key_id)
                except NotGranted as exc:
                    result.missing.append("QKD (rekey)")
                    result.notes.append(f"{who} key update mixed in QKD key: {exc}")
                    break
            state.update(qkd_key)
    return bytes(out)


# ---- the OpenSSL TLS 1.3 baseline --------------------------------------------------------

_TLS_GROUPS = {0x001D: ("X25519",), 0x11EC: ("X25519", "ML-KEM-768")}


def _tls_handshake_body(stream: bytes) -> bytes:
    records = list(tls13.parse_records(stream))
    if not records or records[0].content_type != 22:
        raise ValueError("recording does not start with a TLS handshake record")
    return records[0].payload


def _server_group(server_hello: bytes) -> int:
    # type(1) len(3) version(2) random(32) session_id<1> suite(2) compression(1) extensions<2>
    offset = 4 + 2 + 32
    offset += 1 + server_hello[offset]
    offset += 2 + 1
    end = offset + 2 + int.from_bytes(server_hello[offset : offset + 2], "big")
    offset += 2
    while offset + 4 <= end:
        ext_type, ext_len = struct.unpack_from("!HH", server_hello, offset)
        if ext_type == 51:  # key_share
            return int.from_bytes(server_hello[offset + 4 : offset + 6], "big")
        offset += 4 + ext_len
    raise ValueError("ServerHello carries no key_share")


def attack_tls13(capture: Capture, oracle: Oracle) -> AttackResult:
    """Try to decrypt one recorded OpenSSL TLS 1.3 session."""
    result = AttackResult()
    client_hello = _tls_handshake_body(capture.client_to_server)
    client_random = client_hello[6:38]
    group = _server_group(_tls_handshake_body(capture.server_to_client))
    algorithms = _TLS_GROUPS.get(group, (f"group 0x{group:04x}",))
    try:
        secrets = oracle.tls_secrets(client_random, algorithms)
    except NotGranted as exc:
        result.missing.extend(a for a in algorithms if not oracle.adversary.breaks(a))
        result.notes.append(str(exc))
        return result
    result.client_to_server = tls13.decrypt_application_data(
        capture.client_to_server,
        secrets["CLIENT_HANDSHAKE_TRAFFIC_SECRET"],
        secrets["CLIENT_TRAFFIC_SECRET_0"],
    )
    result.server_to_client = tls13.decrypt_application_data(
        capture.server_to_client,
        secrets["SERVER_HANDSHAKE_TRAFFIC_SECRET"],
        secrets["SERVER_TRAFFIC_SECRET_0"],
    )
    return result
