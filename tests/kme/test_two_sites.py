"""Two KME sites in separate stores, joined by the HTTPS peer link (as ``hybridchan kme site``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from hybridchan.cli import main
from qkd.keystore import KeyStore
from qkd.kme import HTTPSPeerLink, KMEClient, KMEServer, KMEService, SeededKeyFeed, SiteConfig
from qkd.kme.server import client_ssl_context
from tests.kme.conftest import Certs


class _LatePeer:
    """Peer link whose URL is known only once the peer server has a port."""

    def __init__(self) -> None:
        self.link: HTTPSPeerLink | None = None

    async def follow(self, *args: object, **kwargs: object) -> None:
        assert self.link is not None
        await self.link.follow(*args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def sites(certs: Certs, tmp_path: Path) -> Iterator[tuple[KMEServer, KMEServer]]:
    store_a, store_b = KeyStore(tmp_path / "a.sqlite"), KeyStore(tmp_path / "b.sqlite")
    for block in SeededKeyFeed(b"sites", block_size=1024).next_blocks(8):
        pool = "KME_A" if block.block_id % 2 == 0 else "KME_B"
        store_a.deposit(pool, block.block_id, block.data)
        store_b.deposit(pool, block.block_id, block.data)
    a_saes, b_saes = frozenset({"alice"}), frozenset({"bob"})
    peer_of_a, peer_of_b = _LatePeer(), _LatePeer()
    service_a = KMEService(SiteConfig("KME_A", "KME_B", a_saes, b_saes), store_a, peer_of_a)
    service_b = KMEService(SiteConfig("KME_B", "KME_A", b_saes, a_saes), store_b, peer_of_b)
    server_a = KMEServer(service_a, certs.pair.kme_a).start()
    server_b = KMEServer(service_b, certs.pair.kme_b).start()
    peer_of_a.link = HTTPSPeerLink(server_b.url, certs.pair.kme_a)
    peer_of_b.link = HTTPSPeerLink(server_a.url, certs.pair.kme_b)
    yield server_a, server_b
    server_a.stop()
    server_b.stop()
    store_a.close()
    store_b.close()


def test_keys_cross_the_https_peer_link(sites: tuple[KMEServer, KMEServer], certs: Certs) -> None:
    server_a, server_b = sites
    with (
        KMEClient(server_a.url, "alice", certs.pair.saes["alice"]) as alice,
        KMEClient(server_b.url, "bob", certs.pair.saes["bob"]) as bob,
    ):
        keys = alice.enc_keys("bob", number=3, size_bits=512)
        assert bob.dec_keys("alice", [k.key_id for k in keys]) == keys
        back = bob.new_key("alice")
        assert alice.get_key("bob", back.key_id) == back


def test_only_the_peer_kme_may_send_cuts(sites: tuple[KMEServer, KMEServer], certs: Certs) -> None:
    _, server_b = sites
    cut = {
        "pool": "KME_A",
        "start": 0,
        "master": "alice",
        "slave": "bob",
        "void": False,
        "entries": [{"key_ID": "00000000-0000-4000-8000-000000000000", "size": 32}],
    }
    before = server_b.service.store.key_states()
    for sae in ("bob", "alice"):
        with httpx.Client(verify=client_ssl_context(certs.pair.saes[sae])) as http:
            response = http.post(f"{server_b.url}/kme/v1/follow", json=cut)
        assert response.status_code == 401 and "only peer KME" in response.json()["message"]
    assert server_b.service.store.key_states() == before


def test_site_command_closes_its_store(
    certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hybridchan kme site`` stopped by Ctrl-C still closes its store (final scrub, unlock)."""
    closed: list[str] = []
    real_close = KeyStore.close

    def close(self: KeyStore) -> None:
        closed.append(self.path)
        real_close(self)

    def interrupted(self: KMEServer) -> None:
        self.stop()
        raise KeyboardInterrupt

    monkeypatch.setattr(KeyStore, "close", close)
    monkeypatch.setattr(KMEServer, "run_forever", interrupted)
    kme_a, store = certs.pair.kme_a, tmp_path / "site.sqlite"
    args = ["kme", "site", "--kme-id", "KME_A", "--peer-kme-id", "KME_B"]
    args += ["--peer-url", "https://127.0.0.1:1", "--local-sae", "alice", "--remote-sae", "bob"]
    args += ["--ca", kme_a.ca_file, "--cert", kme_a.cert_file, "--key", kme_a.key_file]
    args += ["--store", str(store), "--port", "0", "--tls-backend", "python"]
    result = CliRunner().invoke(main, args)
    assert "serving on" in result.output and result.exit_code == 1  # click's Abort
    assert closed == [str(store)]
