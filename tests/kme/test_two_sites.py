"""Two KME sites in separate stores, joined by the HTTPS peer link (as ``hybridchan kme site``)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from hybridchan.cli import main
from qkd.keysource import QKDKey
from qkd.keystore import KeyStore
from qkd.kme import (
    HTTPSPeerLink,
    KMEClient,
    KMEServer,
    KMEService,
    SeededKeyFeed,
    SiteConfig,
    TLSFiles,
)
from qkd.kme.server import client_ssl_context
from tests.kme.conftest import Certs

ROOT = Path(__file__).resolve().parents[2]


class _LatePeer:
    """Peer link whose URL is known only once the peer server has a port."""

    def __init__(self) -> None:
        self.link: HTTPSPeerLink | None = None

    async def follow(self, *args: object, **kwargs: object) -> None:
        assert self.link is not None
        await self.link.follow(*args, **kwargs)  # type: ignore[arg-type]

    async def aclose(self) -> None:  # KMEServer.stop closes its service's peer link
        if self.link is not None:
            await self.link.aclose()


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


def _site_args(kme: TLSFiles, store: Path, peer_url: str, backend: str) -> list[str]:
    args = ["kme", "site", "--kme-id", "KME_A", "--peer-kme-id", "KME_B"]
    args += ["--peer-url", peer_url, "--local-sae", "alice", "--remote-sae", "bob"]
    args += ["--ca", kme.ca_file, "--cert", kme.cert_file, "--key", kme.key_file]
    return [*args, "--store", str(store), "--port", "0", "--tls-backend", backend]


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
    store = tmp_path / "site.sqlite"
    args = _site_args(certs.pair.kme_a, store, "https://127.0.0.1:1", "python")
    result = CliRunner().invoke(main, args)
    assert "serving on" in result.output and result.exit_code == 1  # click's Abort
    assert closed == [str(store)]


@pytest.mark.parametrize("backend", ["python", "openssl4"])
def test_site_command_closes_its_peer_link(
    certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """A key issued at ``kme site`` crosses its HTTPS peer link; stopping the site closes
    that link (in the server's event loop, where its connections live)."""
    for name in ("a.sqlite", "b.sqlite"):
        with KeyStore(tmp_path / name) as store:
            for block in SeededKeyFeed(b"site", block_size=1024).next_blocks(2):
                pool = "KME_A" if block.block_id % 2 == 0 else "KME_B"
                store.deposit(pool, block.block_id, block.data)
    closed: list[HTTPSPeerLink] = []
    real_aclose = HTTPSPeerLink.aclose

    async def aclose(self: HTTPSPeerLink) -> None:
        await real_aclose(self)
        closed.append(self)

    issued: list[QKDKey] = []

    def serve_one_key(self: KMEServer) -> None:
        self.start()
        try:
            with KMEClient(self.url, "alice", certs.pair.saes["alice"]) as alice:
                issued.append(alice.new_key("bob"))
        finally:
            self.stop()
        raise KeyboardInterrupt

    monkeypatch.setattr(HTTPSPeerLink, "aclose", aclose)
    store_b = KeyStore(tmp_path / "b.sqlite")
    config_b = SiteConfig("KME_B", "KME_A", frozenset({"bob"}), frozenset({"alice"}))
    try:
        with KMEServer(KMEService(config_b, store_b, _LatePeer()), certs.pair.kme_b) as site_b:
            monkeypatch.setattr(KMEServer, "run_forever", serve_one_key)
            args = _site_args(certs.pair.kme_a, tmp_path / "a.sqlite", site_b.url, backend)
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 1 and len(issued) == 1, result.output  # click's Abort
            with KMEClient(site_b.url, "bob", certs.pair.saes["bob"]) as bob:
                assert bob.get_key("alice", issued[0].key_id) == issued[0]
    finally:
        store_b.close()
    assert len(closed) == 1


def test_site_command_stops_cleanly_on_sigterm(certs: Certs, tmp_path: Path) -> None:
    """`kill PID` ends ``kme site`` as Ctrl-C does: the store is closed (its WAL file is
    checkpointed away) and the exit is click's Abort, not death by signal."""
    store = tmp_path / "site.sqlite"
    args = _site_args(certs.pair.kme_a, store, "https://127.0.0.1:1", "python")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hybridchan", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving on" in line, line
        url = line.split("serving on ")[1].split()[0]
        with KMEClient(url, "alice", certs.pair.saes["alice"], timeout=30) as alice:
            assert alice.status("bob")["source_KME_ID"] == "KME_A"  # serving, not starting
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1 and "Aborted" in err, (proc.returncode, err)
    assert store.exists() and not Path(f"{store}-wal").exists()
