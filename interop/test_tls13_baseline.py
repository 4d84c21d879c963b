"""The standard TLS 1.3 baseline (pyOpenSSL) checked against an independent TLS 1.3
implementation (tlslite-ng, pure Python), both directions, for the X25519 and the
X25519MLKEM768 groups; and the passive decryptor the RNDL analysis relies on."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from OpenSSL import SSL
from tlslite import HandshakeSettings, TLSConnection, X509CertChain, parsePEMKey

from handshake import pki
from hybridchan.rndl import tls13

TLSLITE_GROUP = {"X25519": "x25519", "X25519MLKEM768": "x25519mlkem768"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tls")
    out: dict[str, Path] = {}
    for alg in ("ecdsa-p256", "ml-dsa-65"):
        ca = pki.create_ca(f"baseline CA {alg}", algorithm=alg)
        leaf = pki.issue_certificate(ca, "server.test", algorithm=alg, dns_names=["server.test"])
        (d / f"ca-{alg}.pem").write_bytes(ca.cert_pem())
        leaf.write(d / f"leaf-{alg}.pem", d / f"leaf-{alg}.key")
        out[f"ca-{alg}"] = d / f"ca-{alg}.pem"
        out[f"leaf-{alg}"] = d / f"leaf-{alg}.pem"
        out[f"key-{alg}"] = d / f"leaf-{alg}.key"
    return out


def _tlslite_settings(group: str) -> HandshakeSettings:
    settings = HandshakeSettings()
    settings.minVersion = (3, 4)
    settings.keyShares = [TLSLITE_GROUP[group]]
    settings.eccCurves = [TLSLITE_GROUP[group]]
    settings.cipherNames = ["aes256gcm"]
    return settings


@pytest.mark.parametrize("group", tls13.GROUPS)
def test_tlslite_client_to_pyopenssl_server(files: dict[str, Path], group: str) -> None:
    a, b = socket.socketpair()
    a.settimeout(30)  # tlslite side; pyOpenSSL needs a blocking socket
    seen: dict[str, object] = {}

    def serve() -> None:
        ctx = tls13.server_context(files["leaf-ecdsa-p256"], files["key-ecdsa-p256"], group=group)
        conn = SSL.Connection(ctx, b)
        conn.set_accept_state()
        conn.do_handshake()
        seen["group"] = conn.get_group_name()
        seen["cipher"] = conn.get_cipher_name()
        conn.sendall(conn.recv(100)[::-1])
        conn.shutdown()

    thread = threading.Thread(target=serve)
    thread.start()
    client = TLSConnection(a)
    client.handshakeClientCert(settings=_tlslite_settings(group), serverName="server.test")
    client.write(b"ping from tlslite")
    assert client.read(max=100) == b"etilslt morf gnip"
    assert client.version == (3, 4)  # TLS 1.3
    thread.join(timeout=30)
    client.close()
    assert str(seen["group"]).lower() == group.lower()
    assert seen["cipher"] == "TLS_AES_256_GCM_SHA384"


@pytest.mark.parametrize("group", tls13.GROUPS)
def test_pyopenssl_client_to_tlslite_server(files: dict[str, Path], group: str) -> None:
    a, b = socket.socketpair()
    b.settimeout(30)  # tlslite side; pyOpenSSL needs a blocking socket
    chain = X509CertChain()
    chain.parsePemList(files["leaf-ecdsa-p256"].read_text())
    key = parsePEMKey(files["key-ecdsa-p256"].read_text(), private=True, implementations=["python"])
    received: list[bytes] = []

    def serve() -> None:
        server = TLSConnection(b)
        server.handshakeServer(certChain=chain, privateKey=key, settings=_tlslite_settings(group))
        received.append(server.read(max=100))
        server.write(b"pong from tlslite")
        server.close()

    thread = threading.Thread(target=serve)
    thread.start()
    conn = SSL.Connection(tls13.client_context(files["ca-ecdsa-p256"], group=group), a)
    conn.set_tlsext_host_name(b"server.test")
    conn.set_connect_state()
    conn.do_handshake()
    conn.sendall(b"ping from OpenSSL")
    assert conn.recv(100) == b"pong from tlslite"
    thread.join(timeout=30)
    assert received == [b"ping from OpenSSL"]
    negotiated = conn.get_group_name()
    assert negotiated is not None and negotiated.lower() == group.lower()


@pytest.mark.parametrize("group", tls13.GROUPS)
def test_mldsa_certificate_and_passive_decryption(files: dict[str, Path], group: str) -> None:
    keylog = tls13.KeyLog()
    wire: dict[int, bytearray] = {0: bytearray(), 1: bytearray()}

    def tap(direction: int, data: bytes) -> None:
        wire[direction].extend(data)

    client, server = tls13.memory_handshake(
        tls13.client_context(files["ca-ml-dsa-65"], group=group, keylog=keylog),
        tls13.server_context(files["leaf-ml-dsa-65"], files["key-ml-dsa-65"], group=group),
        server_name="server.test",
        tap=tap,
    )
    message = b"recorded application data " * 50
    client.sendall(message)
    tls13.pump(client, server, tap)
    assert server.recv(len(message) + 10) == message
    recovered = tls13.decrypt_application_data(
        bytes(wire[0]),
        keylog.secrets["CLIENT_HANDSHAKE_TRAFFIC_SECRET"],
        keylog.secrets["CLIENT_TRAFFIC_SECRET_0"],
    )
    assert recovered == message
    # Without the right secret nothing decrypts.
    with pytest.raises(ValueError, match="does not decrypt"):
        tls13.decrypt_application_data(bytes(wire[0]), bytes(48), bytes(48))


def test_unknown_group_is_refused(files: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="must be one of"):
        tls13.client_context(files["ca-ecdsa-p256"], group="P-521")
