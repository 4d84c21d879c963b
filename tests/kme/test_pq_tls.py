"""The OpenSSL 4 TLS backend: hybrid ML-KEM key exchange and ML-DSA certificates end to end."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from OpenSSL import SSL

from hybridchan.cli.kme_cmd import write_pair_credentials
from qkd.keysource import KeyAlreadyUsedError, KeyUnavailableError
from qkd.kme import KMEClient, KMEPair, SeededKeyFeed, probe_tls_group


@pytest.fixture(scope="module")
def mldsa_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KMEPair]:
    directory = tmp_path_factory.mktemp("kme-mldsa")
    credentials = write_pair_credentials(
        directory / "pki", ["alice"], ["bob"], algorithm="ml-dsa-65"
    )
    pair = KMEPair(
        directory, credentials, saes_a=["alice"], saes_b=["bob"], tls_backend="openssl4"
    ).start()
    pair.feed_from(SeededKeyFeed(b"pq"), 8)
    yield pair
    pair.stop()


def test_fully_post_quantum_kme_connection(mldsa_pair: KMEPair) -> None:
    """ML-KEM hybrid key exchange, ML-DSA-65 certificates on both sides."""
    alice_tls = mldsa_pair.credentials.saes["alice"]
    assert probe_tls_group("127.0.0.1", mldsa_pair.server_a.port, alice_tls) == "X25519MLKEM768"
    with mldsa_pair.client("alice") as alice, mldsa_pair.client("bob") as bob:
        key = alice.new_key("bob", size_bytes=64)
        assert bob.get_key("alice", key.key_id) == key
        with pytest.raises(KeyAlreadyUsedError):
            bob.get_key("alice", key.key_id)

    async def run() -> None:
        async with mldsa_pair.async_client("bob") as bob, mldsa_pair.async_client("alice") as alice:
            keys = await bob.enc_keys("alice", number=3)
            assert await alice.dec_keys("bob", [k.key_id for k in keys]) == keys

    asyncio.run(run())


def test_python_ssl_client_cannot_use_mldsa_credentials(mldsa_pair: KMEPair) -> None:
    with pytest.raises(ssl.SSLError, match="EE_KEY_TOO_SMALL"):
        KMEClient(mldsa_pair.server_a.url, "alice", mldsa_pair.credentials.saes["alice"])


def test_openssl4_server_refuses_client_without_certificate(mldsa_pair: KMEPair) -> None:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.load_verify_locations(mldsa_pair.credentials.kme_a.ca_file)
    ctx.set_verify(SSL.VERIFY_PEER, lambda *a: bool(a[-1]))
    with socket.create_connection(("127.0.0.1", mldsa_pair.server_a.port), timeout=5) as raw:
        raw.settimeout(5)
        raw.setblocking(True)
        conn = SSL.Connection(ctx, raw)
        conn.set_connect_state()
        with pytest.raises(SSL.Error):
            conn.do_handshake()
            conn.sendall(b"GET /api/v1/keys/bob/status HTTP/1.1\r\nHost: x\r\n\r\n")
            conn.recv(1024)  # TLS 1.3: the refusal arrives after the client's flight


def test_openssl4_client_checks_the_kme_host_name(mldsa_pair: KMEPair, tmp_path: Path) -> None:
    # The KME certificate names localhost and 127.0.0.1, not "kme.example".
    url = f"https://kme.example:{mldsa_pair.server_a.port}"
    with KMEClient(
        url, "alice", mldsa_pair.credentials.saes["alice"], tls_backend="openssl4", timeout=3
    ) as client:
        client._http._transport._pool._network_backend.connect_tcp = (  # type: ignore[attr-defined]
            _dial_loopback(client._http._transport._pool._network_backend.connect_tcp)  # type: ignore[attr-defined]
        )
        with pytest.raises(KeyUnavailableError, match="does not name host"):
            client.status("bob")


def _dial_loopback(connect_tcp):  # type: ignore[no-untyped-def]
    def connect(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        return connect_tcp("127.0.0.1", port, *args, **kwargs)

    return connect
