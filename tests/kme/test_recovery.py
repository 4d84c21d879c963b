"""Settling unconfirmed keys: batched peer cuts, interrupted recovery, recovery without restart."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from qkd.keysource import KeyUnavailableError
from qkd.keystore import SYNC_BATCH_KEYS, KeyStore
from qkd.kme import (
    KMEClient,
    KMEServer,
    KMEService,
    LocalPeerLink,
    PeerLinkError,
    SeededKeyFeed,
    ServiceUnavailable,
    SiteConfig,
)
from qkd.kme._api import KeyRequest
from tests.kme.conftest import Certs

SITE_A = SiteConfig("KME_A", "KME_B", frozenset({"alice"}), frozenset({"bob", "dave"}))


class _Peer:
    """A :class:`LocalPeerLink` that records every cut and fails on demand.

    ``fail``: ``"refuse"`` (PeerLinkError before the peer sees the cut), ``"lose"`` (the
    peer applies the cut, the answer is lost), ``"crash"`` (an unexpected exception after
    the peer applied it), or ``None``.
    """

    def __init__(self, store: KeyStore) -> None:
        self.local = LocalPeerLink(store)
        self.cuts: list[tuple[str, str, int, bool]] = []  # (master, slave, keys, void)
        self.fail: str | None = None

    async def follow(self, *args: Any, **kwargs: Any) -> None:
        _pool, _start, master, slave, entries = args
        self.cuts.append((master, slave, len(entries), kwargs["void"]))
        if self.fail == "refuse":
            raise PeerLinkError("peer KME unreachable (test)")
        await self.local.follow(*args, **kwargs)
        if self.fail == "lose":
            raise PeerLinkError("answer lost (test)")
        if self.fail == "crash":
            raise RuntimeError("unexpected failure in the peer link (test)")


def _stores(tmp_path: Path, blocks: int = 16) -> tuple[KeyStore, KeyStore]:
    a, b = KeyStore(tmp_path / "a.sqlite"), KeyStore(tmp_path / "b.sqlite")
    for block in SeededKeyFeed(b"recovery", block_size=4096).next_blocks(blocks):
        b.deposit("KME_A", block.block_id, block.data)
        a.deposit("KME_A", block.block_id, block.data)
    return a, b


def _crashed_allocations(a: KeyStore, b: KeyStore, counts: Sequence[int]) -> list[str]:
    """What a killed allocator leaves: ``counts`` keys per allocation, all ``syncing``.

    The peer took the first allocation (the crash hit before ``confirm``), not the others.
    """
    ids: list[str] = []
    for n, count in enumerate(counts):
        new = [f"00000000-0000-4000-8000-{n:04d}{i:08d}" for i in range(count)]
        cut = a.allocate("KME_A", "alice", "bob", [32] * count, new)
        if n == 0:
            b.follow("KME_A", cut.start, "alice", "bob", cut.entries)
        ids += new
    return ids


def _issue_and_fetch(service: KMEService, b: KeyStore) -> None:
    """A fresh key after recovery: the two sites are still in step, bits equal."""
    container = asyncio.run(service.enc_keys("alice", "bob", KeyRequest(2, 256)))
    ids = [k["key_ID"] for k in container["keys"]]
    assert [k.key_id for k in b.deliver("alice", "bob", ids)] == ids
    assert service.store.stats("KME_A").consumed == b.stats("KME_A").consumed


def test_recovery_settles_many_keys_with_few_peer_requests(tmp_path: Path) -> None:
    a, b = _stores(tmp_path)
    ids = _crashed_allocations(a, b, [128, 128, 128, 128, 128])  # 640 keys
    peer = _Peer(b)
    service = KMEService(SITE_A, a, peer)
    asyncio.run(service.recover())
    # One void cut per SYNC_BATCH_KEYS keys (was one per key: 640 requests).
    rest = 640 - 2 * SYNC_BATCH_KEYS
    assert peer.cuts == [
        ("alice", "bob", n, True) for n in (SYNC_BATCH_KEYS, SYNC_BATCH_KEYS, rest)
    ]
    states_a, states_b = a.key_states(), b.key_states()
    assert all(states_a[k] == "void" and states_b[k] == "void" for k in ids)
    assert b.stored_bits(ids[0]) is None  # the peer erased the keys it had reserved
    _issue_and_fetch(service, b)
    a.close()
    b.close()


def test_recovery_cuts_are_addressed_to_each_keys_slave(tmp_path: Path) -> None:
    a, b = _stores(tmp_path)
    a.allocate("KME_A", "alice", "bob", [32] * 3, ["b1", "b2", "b3"])
    a.allocate("KME_A", "alice", "dave", [32] * 2, ["d1", "d2"])
    a.allocate("KME_A", "alice", "bob", [32], ["b4"])
    peer = _Peer(b)
    asyncio.run(KMEService(SITE_A, a, peer).recover())
    assert peer.cuts == [
        ("alice", "bob", 3, True),
        ("alice", "dave", 2, True),
        ("alice", "bob", 1, True),
    ]
    with b._lock:  # the voided rows at the peer carry the right SAE pair
        rows = dict(b._db.execute("SELECT key_id, slave FROM keys").fetchall())
    assert rows == {"b1": "bob", "b2": "bob", "b3": "bob", "d1": "dave", "d2": "dave", "b4": "bob"}
    a.close()
    b.close()


def test_interrupted_recovery_finishes_on_the_next_attempt(tmp_path: Path) -> None:
    a, b = _stores(tmp_path)
    ids = _crashed_allocations(a, b, [100, 128, 128, 128])  # 484 keys: two batches
    peer = _Peer(b)
    service = KMEService(SITE_A, a, peer)
    peer.fail = "lose"  # the peer voids the first batch, the allocator never hears back
    with pytest.raises(ServiceUnavailable, match="did not settle earlier unconfirmed keys"):
        asyncio.run(service.recover())
    assert set(a.key_states().values()) == {"syncing"}
    peer.fail = None
    _issue_and_fetch(service, b)  # enc_keys settles the rest first, then issues
    assert [c[2:] for c in peer.cuts] == [(256, True), (256, True), (228, True), (2, False)]
    states_a, states_b = a.key_states(), b.key_states()
    assert all(states_a[k] == "void" and states_b[k] == "void" for k in ids)
    a.close()
    b.close()


@pytest.mark.parametrize(
    ("failure", "error", "match"),
    [("crash", RuntimeError, "unexpected failure"), ("lose", ServiceUnavailable, "did not take")],
)
def test_a_failed_cut_is_settled_by_the_next_request_without_restart(
    tmp_path: Path, failure: str, error: type[Exception], match: str
) -> None:
    a, b = _stores(tmp_path)
    peer = _Peer(b)
    service = KMEService(SITE_A, a, peer)
    peer.fail = failure
    with pytest.raises(error, match=match):
        asyncio.run(service.enc_keys("alice", "bob", KeyRequest(3, 256)))
    (stuck,) = a.syncing("KME_A")
    assert {b.key_states()[k] for k, _ in stuck.entries} == {"reserved"}
    peer.fail = None
    _issue_and_fetch(service, b)
    ids = [k for k, _ in stuck.entries]
    assert {a.key_states()[k] for k in ids} == {b.key_states()[k] for k in ids} == {"void"}
    assert a.syncing("KME_A") == []
    a.close()
    b.close()


def test_site_serves_while_its_peer_cannot_settle_and_recovers_later(
    tmp_path: Path, certs: Certs
) -> None:
    """A restarted site whose peer is down still starts; enc_keys waits for the peer."""
    a, b = _stores(tmp_path)
    ids = _crashed_allocations(a, b, [4, 4])
    peer = _Peer(b)
    peer.fail = "refuse"
    server = KMEServer(KMEService(SITE_A, a, peer), certs.pair.kme_a).start()
    try:
        with KMEClient(server.url, "alice", certs.pair.saes["alice"], timeout=5) as alice:
            with pytest.raises(KeyUnavailableError, match="did not settle earlier"):
                alice.new_key("bob")
            assert set(a.key_states().values()) == {"syncing"}
            peer.fail = None
            key = alice.new_key("bob")
        assert b.deliver("alice", "bob", [key.key_id])[0].key == key.key
        assert {a.key_states()[k] for k in ids} == {b.key_states()[k] for k in ids} == {"void"}
    finally:
        server.stop()
        a.close()
        b.close()
