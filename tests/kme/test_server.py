"""The KME pair over HTTPS with mutual TLS: every endpoint, bad input, identity, races."""

from __future__ import annotations

import asyncio
import base64
import ssl
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest

from qkd.keysource import KeyAlreadyUsedError, KeyUnavailableError, QKDKeySource, UnknownKeyIDError
from qkd.kme import KMEClient, KMEPair, probe_tls_group
from qkd.kme.server import client_ssl_context
from tests.kme.conftest import Certs, snapshot


@pytest.fixture
def raw(kme_pair: KMEPair, certs: Certs) -> Iterator[dict[str, httpx.Client]]:
    """Plain HTTPS clients per SAE, at that SAE's own KME (to send malformed requests)."""
    clients = {}
    for sae in ("alice", "bob", "carol", "dave"):
        server = kme_pair.site_of(sae)
        clients[sae] = httpx.Client(
            base_url=server.url, verify=client_ssl_context(certs.pair.saes[sae]), timeout=10
        )
    yield clients
    for client in clients.values():
        client.close()


def _enc(client: httpx.Client, slave: str, **body: object) -> httpx.Response:
    return client.post(f"/api/v1/keys/{slave}/enc_keys", json=body)


# -- happy paths -----------------------------------------------------------------------------


def test_clients_are_key_sources_and_keys_match(kme_pair: KMEPair) -> None:
    with kme_pair.client("alice") as alice, kme_pair.client("bob") as bob:
        assert isinstance(alice, QKDKeySource)
        key = alice.new_key("bob")
        assert len(key.key) == 32 and uuid.UUID(key.key_id)
        assert bob.get_key("alice", key.key_id) == key
        # and the other direction, from pool B, with a custom size
        back = bob.new_key("alice", size_bytes=48)
        assert alice.get_key("bob", back.key_id) == back and len(back.key) == 48
        assert back.key != key.key[:32]


def test_status_fields(kme_pair: KMEPair) -> None:
    with kme_pair.client("alice") as alice:
        status = alice.status("bob")
    assert status["source_KME_ID"] == "KME_A" and status["target_KME_ID"] == "KME_B"
    assert status["master_SAE_ID"] == "alice" and status["slave_SAE_ID"] == "bob"
    assert status["key_size"] == 256 and status["stored_key_count"] > 1000
    for field in ("max_key_count", "max_key_per_request", "max_key_size", "min_key_size"):
        assert isinstance(status[field], int)
    assert status["max_SAE_ID_count"] == 0


def test_get_variants_multi_key_and_custom_size(raw: dict[str, httpx.Client]) -> None:
    response = raw["alice"].get("/api/v1/keys/bob/enc_keys", params={"number": 3, "size": 512})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    keys = response.json()["keys"]
    assert len(keys) == 3 and all(len(base64.b64decode(k["key"])) == 64 for k in keys)
    assert len({k["key"] for k in keys}) == 3
    got = raw["bob"].get("/api/v1/keys/alice/dec_keys", params={"key_ID": keys[0]["key_ID"]})
    assert got.status_code == 200 and got.json()["keys"] == [keys[0]]
    rest = raw["bob"].post(
        "/api/v1/keys/alice/dec_keys", json={"key_IDs": [{"key_ID": k["key_ID"]} for k in keys[1:]]}
    )
    assert rest.status_code == 200 and rest.json()["keys"] == keys[1:]
    default = raw["alice"].get("/api/v1/keys/bob/enc_keys")
    assert len(base64.b64decode(default.json()["keys"][0]["key"])) == 32


def test_post_enc_keys_with_optional_extension(raw: dict[str, httpx.Client]) -> None:
    response = _enc(raw["alice"], "bob", number=2, size=1024, extension_optional=[{"x": 1}])
    assert response.status_code == 200
    assert [len(base64.b64decode(k["key"])) for k in response.json()["keys"]] == [128, 128]


def test_keys_never_overlap_across_sizes(kme_pair: KMEPair) -> None:
    """Keys cut from the same pool in odd sizes share no bytes (no bits handed out twice)."""
    with kme_pair.client("alice") as alice, kme_pair.client("bob") as bob:
        keys = [
            alice.enc_keys("bob", number=n, size_bits=s) for n, s in ((5, 72), (3, 4096), (7, 64))
        ]
        flat = [k for batch in keys for k in batch]
        fetched = bob.dec_keys("alice", [k.key_id for k in flat])
    assert fetched == flat
    stream = b"".join(k.key for k in flat)
    chunks = {stream[i : i + 8] for i in range(0, len(stream) - 7, 8)}
    assert len(chunks) == len(stream) // 8  # random 64-bit chunks: any repeat means reuse


def test_async_client(kme_pair: KMEPair) -> None:
    async def run() -> None:
        async with kme_pair.async_client("carol") as carol, kme_pair.async_client("dave") as dave:
            keys = await carol.enc_keys("dave", number=4, size_bits=256)
            assert await dave.dec_keys("carol", [k.key_id for k in keys]) == keys
            single = await dave.new_key("carol")
            assert await carol.get_key("dave", single.key_id) == single
            with pytest.raises(KeyAlreadyUsedError):
                await carol.get_key("dave", single.key_id)

    asyncio.run(run())


def test_unix_socket_transport(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = tmp_path_factory.mktemp("kme-uds")
    with KMEPair(directory, certs.pair, saes_a=["alice"], saes_b=["bob"], unix=True) as pair:
        from qkd.kme import SeededKeyFeed

        pair.feed_from(SeededKeyFeed(b"uds"), 4)
        assert pair.server_a.unix_path and pair.server_a.unix_path.endswith("kme_a.sock")
        with pair.client("alice") as alice, pair.client("bob") as bob:
            key = alice.new_key("bob")
            assert bob.get_key("alice", key.key_id) == key


def test_negotiated_tls_group_is_reported(kme_pair: KMEPair, certs: Certs) -> None:
    group = probe_tls_group("127.0.0.1", kme_pair.server_a.port, certs.pair.saes["alice"])
    # Python's ssl (OpenSSL 3.0) has no ML-KEM: X25519 although the probe (OpenSSL 4)
    # offers X25519MLKEM768 first. The OpenSSL 4 backend takes the hybrid group.
    expected = {"python": "x25519", "openssl4": "X25519MLKEM768"}[kme_pair.tls_backend]
    assert group == expected


# -- bad input: right code, clear message, store unchanged -------------------------------------


BAD_ENC = [
    ({"size": 100}, 400, "size shall be a multiple of 8"),
    ({"number": 129}, 400, "max_key_per_request"),
    ({"number": 0}, 400, "outside 1..128"),
    ({"number": "3"}, 400, "must be integers"),
    ({"size": 16}, 400, "min_key_size"),
    ({"size": 1 << 20}, 400, "max_key_size"),
    ({"additional_slave_SAE_IDs": ["dave"]}, 400, "max_SAE_ID_count"),
    ({"extension_mandatory": [{"route": "direct"}]}, 400, "not all extension_mandatory parameters"),
    ({"colour": "blue"}, 400, "unknown field"),
]


@pytest.mark.parametrize(("body", "status", "text"), BAD_ENC)
def test_bad_enc_keys_requests(
    kme_pair: KMEPair, raw: dict[str, httpx.Client], body: dict[str, object], status: int, text: str
) -> None:
    before = snapshot(kme_pair)
    response = _enc(raw["alice"], "bob", **body)
    assert response.status_code == status
    assert text in response.json()["message"]
    assert snapshot(kme_pair) == before


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "text"),
    [
        (
            "POST",
            "/api/v1/keys/bob/enc_keys",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "not valid JSON",
        ),
        (
            "POST",
            "/api/v1/keys/bob/enc_keys",
            {"content": b"[1,2]", "headers": {"content-type": "application/json"}},
            400,
            "JSON object",
        ),
        (
            "POST",
            "/api/v1/keys/bob/enc_keys",
            {"content": b"{}", "headers": {"content-type": "text/plain"}},
            400,
            "application/json",
        ),
        ("GET", "/api/v1/keys/bob/enc_keys?size=12", {}, 400, "size shall be a multiple of 8"),
        ("GET", "/api/v1/keys/bob/enc_keys?number=-1", {}, 400, "positive integer"),
        ("GET", "/api/v1/keys/bob/enc_keys?sae=alice", {}, 400, "unknown query parameter"),
        ("GET", "/api/v1/keys/nobody/enc_keys", {}, 400, "not attached to the peer KME"),
        ("GET", "/api/v1/keys/carol/enc_keys", {}, 400, "not attached to the peer KME"),
        ("GET", "/api/v1/keys/nobody/status", {}, 400, "not attached to the peer KME"),
        ("GET", "/api/v1/keys/bob/dec_keys?key_ID=not-a-uuid", {}, 400, "is not a UUID"),
        ("GET", "/api/v1/keys/bob/dec_keys", {}, 400, "exactly one key_ID"),
        ("POST", "/api/v1/keys/bob/dec_keys", {"json": {"key_IDs": []}}, 400, "non-empty list"),
        (
            "POST",
            "/api/v1/keys/bob/dec_keys",
            {"json": {"key_IDs": [{"key_ID": "x"}]}},
            400,
            "is not a UUID",
        ),
        ("DELETE", "/api/v1/keys/bob/enc_keys", {}, 405, "method not allowed"),
        ("GET", "/api/v2/keys", {}, 404, "no such endpoint"),
        ("POST", "/kme/v1/follow", {"json": {}}, 401, "only peer KME"),
    ],
)
def test_malformed_requests(
    kme_pair: KMEPair,
    raw: dict[str, httpx.Client],
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
    text: str,
) -> None:
    before = snapshot(kme_pair)
    response = raw["alice"].request(method, path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert text in response.json()["message"]
    assert snapshot(kme_pair) == before


def test_dec_keys_errors(kme_pair: KMEPair, raw: dict[str, httpx.Client]) -> None:
    keys = _enc(raw["alice"], "bob", number=1).json()["keys"]
    key_id = keys[0]["key_ID"]
    before = snapshot(kme_pair)

    # addressed to bob, asked for by dave (same KME B): 401, and the key stays for bob
    response = raw["dave"].get("/api/v1/keys/alice/dec_keys", params={"key_ID": key_id})
    assert response.status_code == 401 and "not addressed" in response.json()["message"]
    # right slave, wrong master in the path
    response = raw["bob"].get("/api/v1/keys/carol/dec_keys", params={"key_ID": key_id})
    assert response.status_code == 401
    # unknown key ID
    response = raw["bob"].get("/api/v1/keys/alice/dec_keys", params={"key_ID": str(uuid.uuid4())})
    assert response.status_code == 400
    assert response.json()["message"] == "one or more keys specified are not found on KME"
    assert response.json()["details"][0]["reason"] == "unknown key_ID"
    # a batch with one bad ID delivers nothing
    both = {"key_IDs": [{"key_ID": key_id}, {"key_ID": str(uuid.uuid4())}]}
    assert raw["bob"].post("/api/v1/keys/alice/dec_keys", json=both).status_code == 400
    assert snapshot(kme_pair) == before

    assert (
        raw["bob"].get("/api/v1/keys/alice/dec_keys", params={"key_ID": key_id}).json()["keys"]
        == keys
    )
    again = raw["bob"].get("/api/v1/keys/alice/dec_keys", params={"key_ID": key_id})
    assert again.status_code == 400 and "already delivered" in again.json()["details"][0]["reason"]


def test_client_error_mapping(kme_pair: KMEPair) -> None:
    with (
        kme_pair.client("alice") as alice,
        kme_pair.client("bob") as bob,
        kme_pair.client("dave") as dave,
    ):
        key = alice.new_key("bob")
        with pytest.raises(UnknownKeyIDError, match="not addressed"):
            dave.get_key("alice", key.key_id)
        with pytest.raises(UnknownKeyIDError, match="unknown key_ID"):
            bob.get_key("alice", str(uuid.uuid4()))
        with pytest.raises(UnknownKeyIDError, match="not a UUID"):
            bob.get_key("alice", "12345")
        bob.get_key("alice", key.key_id)
        with pytest.raises(KeyAlreadyUsedError, match="single-use"):
            bob.get_key("alice", key.key_id)
        with pytest.raises(KeyUnavailableError, match="not attached"):
            alice.new_key("nobody")
        with pytest.raises(ValueError, match="multiple of 8"):
            alice.enc_keys("bob", size_bits=12)


def test_unregistered_sae_gets_401(kme_pair: KMEPair, certs: Certs) -> None:
    before = snapshot(kme_pair)
    with httpx.Client(
        base_url=kme_pair.server_a.url, verify=client_ssl_context(certs.intruder)
    ) as c:
        response = c.get("/api/v1/keys/bob/enc_keys")
    assert response.status_code == 401
    assert (
        "'intruder'" in response.json()["message"]
        and "not registered" in response.json()["message"]
    )
    with (
        KMEClient(kme_pair.server_a.url, "intruder", certs.intruder) as intruder,
        pytest.raises(KeyUnavailableError, match="401"),
    ):
        intruder.new_key("bob")
    assert snapshot(kme_pair) == before


def _tls_refused(url: str, verify: ssl.SSLContext) -> None:
    with (
        httpx.Client(base_url=url, verify=verify, timeout=5) as client,
        pytest.raises(httpx.HTTPError),
    ):
        client.get("/api/v1/keys/bob/status")


def test_no_client_certificate_is_rejected_at_tls(kme_pair: KMEPair, certs: Certs) -> None:
    before = snapshot(kme_pair)
    ctx = ssl.create_default_context(cafile=certs.pair.kme_a.ca_file)
    _tls_refused(kme_pair.server_a.url, ctx)
    with (
        KMEClient(kme_pair.server_a.url, "alice", certs.foreign_alice) as c,
        pytest.raises(KeyUnavailableError, match="unreachable"),
    ):
        c.new_key("bob")
    assert snapshot(kme_pair) == before


def test_untrusted_client_certificate_is_rejected_at_tls(kme_pair: KMEPair, certs: Certs) -> None:
    """A certificate with CN "alice" from another CA gets no HTTP exchange at all."""
    before = snapshot(kme_pair)
    _tls_refused(kme_pair.server_a.url, client_ssl_context(certs.foreign_alice))
    assert snapshot(kme_pair) == before


def test_32_clients_race_for_one_key(kme_pair: KMEPair, certs: Certs) -> None:
    with kme_pair.client("alice") as alice:
        key = alice.new_key("bob")
    barrier = threading.Barrier(32)
    results: list[object] = []
    lock = threading.Lock()

    def grab() -> None:
        with KMEClient(kme_pair.server_b.url, "bob", certs.pair.saes["bob"]) as bob:
            bob.status("alice")  # connection and TLS handshake done before the race
            barrier.wait()
            try:
                outcome: object = bob.get_key("alice", key.key_id)
            except KeyAlreadyUsedError as exc:
                outcome = exc
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=grab) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(results) == 32
    assert winners == [key]
    assert kme_pair.store_b.key_states()[key.key_id] == "delivered"


def test_clients_keep_one_tls_connection_alive(
    kme_pair: KMEPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep-alive really holds: many requests, one TLS handshake per client and KME."""
    from qkd.kme import server as server_module

    handshakes: list[str] = []
    real = server_module._tls_extension

    def counting(ssl_object: object) -> object:
        handshakes.append(threading.current_thread().name)
        return real(ssl_object)  # type: ignore[arg-type]

    monkeypatch.setattr(server_module, "_tls_extension", counting)
    with kme_pair.client("alice") as alice, kme_pair.client("bob") as bob:
        for _ in range(10):
            key = alice.new_key("bob")
            assert bob.get_key("alice", key.key_id) == key
    assert sorted(handshakes) == ["kme-KME_A", "kme-KME_B"]
