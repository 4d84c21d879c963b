"""Standard TLS 1.3 through pyOpenSSL: the baseline hybridchan is compared with.

OpenSSL 4 (bundled with ``cryptography``) offers the hybrid group
``X25519MLKEM768``; this module sets the group, the cipher suite
(``TLS_AES_256_GCM_SHA384``, like hybridchan's AES-256-GCM + SHA-384) and
certificates from PEM files, runs handshakes over memory BIOs or sockets and
reports what was negotiated.

It also holds a *passive* TLS 1.3 decryptor used by the RNDL analysis: given
the traffic secrets (which the analysis' oracle hands out only when the
adversary can break every component of the negotiated group -- OpenSSL does
not expose its ephemeral private keys, so its key log stands in for the
broken key exchange), it parses the recorded byte streams into TLS records and
decrypts the application data genuinely (HKDF-Expand-Label, AES-256-GCM,
per-record nonces).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from OpenSSL import SSL

__all__ = [
    "GROUPS",
    "KeyLog",
    "TLSRecord",
    "client_context",
    "decrypt_application_data",
    "memory_handshake",
    "parse_records",
    "pump",
    "server_context",
]

GROUPS = ("X25519", "X25519MLKEM768")
CIPHER_SUITE = "TLS_AES_256_GCM_SHA384"


@dataclass
class KeyLog:
    """Secrets OpenSSL writes in NSS key-log format (one session): by label, and the
    client random that names the session."""

    secrets: dict[str, bytes] = field(default_factory=dict, repr=False)
    client_random: bytes = b""

    def callback(self, _conn: SSL.Connection, line: bytes) -> None:
        label, client_random, secret = line.decode("ascii").split()
        self.client_random = bytes.fromhex(client_random)
        self.secrets[label] = bytes.fromhex(secret)


def _context(group: str, keylog: KeyLog | None) -> SSL.Context:
    if group not in GROUPS:
        raise ValueError(f"TLS baseline group must be one of {GROUPS}, got {group!r}")
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_tls13_ciphersuites(CIPHER_SUITE.encode())
    from OpenSSL._util import lib  # the groups call is not wrapped by pyOpenSSL

    if lib.SSL_CTX_set1_curves_list(ctx._context, group.encode()) != 1:
        raise RuntimeError(f"this OpenSSL does not offer TLS group {group}")
    if keylog is not None:
        ctx.set_keylog_callback(keylog.callback)
    return ctx


def server_context(
    cert_chain: Path,
    key: Path,
    *,
    group: str = "X25519MLKEM768",
    keylog: KeyLog | None = None,
    client_ca: Path | None = None,
) -> SSL.Context:
    """A TLS 1.3-only server context; ``client_ca`` turns on mutual authentication.

    No session tickets or session cache: hybridchan has no resumption, so the baseline
    does the same full handshake every time.
    """
    ctx = _context(group, keylog)
    ctx.use_certificate_chain_file(str(cert_chain))
    ctx.use_privatekey_file(str(key))
    ctx.set_options(SSL.OP_NO_TICKET)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    if client_ca is not None:
        ctx.load_verify_locations(str(client_ca))
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    return ctx


def client_context(
    ca: Path,
    *,
    group: str = "X25519MLKEM768",
    keylog: KeyLog | None = None,
    cert_chain: Path | None = None,
    key: Path | None = None,
    verify_host: str | None = None,
) -> SSL.Context:
    """A TLS 1.3-only client context that verifies the server against ``ca``.

    OpenSSL checks the chain, validity and (with ``verify_host``) the host name itself,
    in C, with no Python callback.
    """
    from OpenSSL._util import lib  # the host-name call is not wrapped by pyOpenSSL

    ctx = _context(group, keylog)
    ctx.load_verify_locations(str(ca))
    ctx.set_verify(SSL.VERIFY_PEER)
    if verify_host is not None:
        param = lib.SSL_CTX_get0_param(ctx._context)
        if lib.X509_VERIFY_PARAM_set1_host(param, verify_host.encode(), len(verify_host)) != 1:
            raise RuntimeError(f"could not set the host name {verify_host!r} to verify")
    if cert_chain is not None and key is not None:
        ctx.use_certificate_chain_file(str(cert_chain))
        ctx.use_privatekey_file(str(key))
    return ctx


def pump(
    a: SSL.Connection, b: SSL.Connection, tap: Callable[[int, bytes], None] | None = None
) -> int:
    """Move pending bytes a->b (direction 0) and b->a (1); returns bytes moved."""
    moved = 0
    for direction, (src, dst) in enumerate(((a, b), (b, a))):
        while True:
            try:
                data = src.bio_read(65536)
            except SSL.WantReadError:
                break
            if not data:
                break
            if tap is not None:
                tap(direction, data)
            dst.bio_write(data)
            moved += len(data)
    return moved


def memory_handshake(
    client_ctx: SSL.Context,
    server_ctx: SSL.Context,
    *,
    server_name: str | None = None,
    tap: Callable[[int, bytes], None] | None = None,
) -> tuple[SSL.Connection, SSL.Connection]:
    """A full TLS 1.3 handshake over memory BIOs in this process."""
    client = SSL.Connection(client_ctx, None)
    server = SSL.Connection(server_ctx, None)
    if server_name:
        client.set_tlsext_host_name(server_name.encode())
    client.set_connect_state()
    server.set_accept_state()
    done = [False, False]
    for _ in range(50):
        for i, conn in enumerate((client, server)):
            if done[i]:
                continue
            try:
                conn.do_handshake()
                done[i] = True
            except SSL.WantReadError:
                pass
        if not pump(client, server, tap) and all(done):
            return client, server
    raise RuntimeError("TLS 1.3 baseline handshake did not complete")


# ---- passive decryption of recorded TLS 1.3 --------------------------------------------


@dataclass(frozen=True, slots=True)
class TLSRecord:
    content_type: int
    header: bytes
    payload: bytes


def parse_records(stream: bytes) -> Iterator[TLSRecord]:
    """Split a recorded TLS byte stream into records; a cut-off tail is ignored."""
    offset = 0
    while offset + 5 <= len(stream):
        content_type, _version, length = struct.unpack_from("!BHH", stream, offset)
        if length > 16384 + 256:
            raise ValueError(f"TLS record length {length} exceeds the TLS 1.3 limit")
        end = offset + 5 + length
        if end > len(stream):
            return
        yield TLSRecord(content_type, stream[offset : offset + 5], stream[offset + 5 : end])
        offset = end


def _expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    return HKDFExpand(hashes.SHA384(), length, info).derive(secret)


def decrypt_application_data(
    stream: bytes, handshake_secret: bytes, application_secret: bytes
) -> bytes:
    """Decrypt one direction of a recorded TLS 1.3 session; returns application bytes.

    Records protected with the handshake traffic secret (the encrypted handshake)
    come first, then those under the first application traffic secret.
    """
    keys = [
        (AESGCM(_expand_label(s, b"key", 32)), _expand_label(s, b"iv", 12))
        for s in (handshake_secret, application_secret)
    ]
    stage, seq = 0, 0
    out = bytearray()
    for record in parse_records(stream):
        if record.content_type != 23:  # plaintext hello / change_cipher_spec
            continue
        while True:
            aead, iv = keys[stage]
            nonce = (int.from_bytes(iv, "big") ^ seq).to_bytes(12, "big")
            try:
                inner = aead.decrypt(nonce, record.payload, record.header)
                break
            except InvalidTag:
                if stage == 1:
                    raise ValueError("TLS record does not decrypt with the given secrets") from None
                stage, seq = 1, 0
        seq += 1
        body = inner.rstrip(b"\x00")
        if body and body[-1] == 23:
            out += body[:-1]
    return bytes(out)
