"""Other ETSI GS QKD 014 clients against our KME: curl, OpenSSL 4 via pyOpenSSL, openssl s_client.

Each uses a TLS stack that is not Python's ``ssl``: if they can take a key at
KME A and fetch it at KME B with mutual TLS, the API and the TLS set-up are not
private to our own client.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from OpenSSL import SSL

from hybridchan.cli.kme_cmd import write_pair_credentials
from qkd.kme import KMEPair, SeededKeyFeed, TLSFiles


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KMEPair]:
    directory = tmp_path_factory.mktemp("kme-interop")
    credentials = write_pair_credentials(directory / "pki", ["alice"], ["bob"])
    with KMEPair(directory, credentials, saes_a=["alice"], saes_b=["bob"]) as kme_pair:
        kme_pair.feed_from(SeededKeyFeed(b"interop"), 8)
        yield kme_pair


def _curl(url: str, tls: TLSFiles, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail-with-body",
            "--cacert",
            tls.ca_file,
            "--cert",
            tls.cert_file,
            "--key",
            tls.key_file,
            *args,
            url,
        ],
        check=True,
        capture_output=True,
        timeout=20,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_round_trip(pair: KMEPair) -> None:
    alice, bob = pair.credentials.saes["alice"], pair.credentials.saes["bob"]
    status = _curl(f"{pair.server_a.url}/api/v1/keys/bob/status", alice)
    assert status["source_KME_ID"] == "KME_A" and status["master_SAE_ID"] == "alice"
    keys = _curl(
        f"{pair.server_a.url}/api/v1/keys/bob/enc_keys",
        alice,
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"number": 2, "size": 128}',
    )["keys"]
    assert isinstance(keys, list) and len(keys) == 2
    fetched = _curl(
        f"{pair.server_b.url}/api/v1/keys/alice/dec_keys?key_ID={keys[0]['key_ID']}", bob
    )["keys"]
    assert fetched == keys[:1] and len(base64.b64decode(keys[0]["key"])) == 16


def _openssl4_request(host: str, port: int, tls: TLSFiles, request: bytes) -> tuple[str, bytes]:
    """One HTTP/1.1 request over pyOpenSSL's bundled OpenSSL 4; returns (group, body)."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.load_verify_locations(tls.ca_file)
    ctx.use_certificate_chain_file(tls.cert_file)
    ctx.use_privatekey_file(tls.key_file)
    ctx.set_verify(SSL.VERIFY_PEER, lambda *a: bool(a[-1]))
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.settimeout(None)
        conn = SSL.Connection(ctx, raw)
        conn.set_connect_state()
        conn.do_handshake()
        group = conn.get_group_name()
        conn.sendall(request)
        data = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except SSL.ZeroReturnError:
                break
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return (group.decode() if isinstance(group, bytes) else str(group)), body


def test_openssl4_client_round_trip(pair: KMEPair) -> None:
    alice, bob = pair.credentials.saes["alice"], pair.credentials.saes["bob"]
    body = json.dumps({"number": 1, "size": 256}).encode()
    request = (
        b"POST /api/v1/keys/bob/enc_keys HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    group, answer = _openssl4_request("127.0.0.1", pair.server_a.port, alice, request)
    key = json.loads(answer)["keys"][0]
    fetch = (
        f"GET /api/v1/keys/alice/dec_keys?key_ID={key['key_ID']} HTTP/1.1\r\n"
        "Host: localhost\r\nConnection: close\r\n\r\n"
    ).encode()
    _, answer = _openssl4_request("127.0.0.1", pair.server_b.port, bob, fetch)
    assert json.loads(answer)["keys"] == [key]
    # OpenSSL 4 offers X25519MLKEM768; the KME (Python ssl, OpenSSL 3.0) picks X25519.
    assert group.lower() == "x25519"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI is not installed")
def test_openssl_cli_without_client_certificate_is_refused(pair: KMEPair, tmp_path: Path) -> None:
    alice = pair.credentials.saes["alice"]
    result = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{pair.server_a.port}",
            "-CAfile",
            alice.ca_file,
            "-tls1_3",
            "-quiet",
        ],
        input=b"GET /api/v1/keys/bob/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        capture_output=True,
        timeout=20,
    )
    assert b"HTTP/1.1 200" not in result.stdout
    assert b"certificate required" in result.stderr.lower() or result.returncode != 0
