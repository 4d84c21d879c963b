"""The SQLite key store: cutting, following, consume-once delivery, persistence."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import pytest

from qkd.keystore import (
    InsufficientKeyMaterialError,
    KeyAlreadyDeliveredError,
    KeyNotAddressedError,
    KeyNotFoundError,
    KeyStore,
    KeyStoreError,
    StoreSyncError,
)


def _block(i: int, size: int = 100) -> bytes:
    return hashlib.shake_256(i.to_bytes(4, "big")).digest(size)


def _pair(tmp_path: Path, blocks: int = 5) -> tuple[KeyStore, KeyStore]:
    a, b = KeyStore(tmp_path / "a.sqlite"), KeyStore(tmp_path / "b.sqlite")
    for i in range(blocks):
        a.deposit("A", i, _block(i))
        b.deposit("A", i, _block(i))
    return a, b


def test_cut_joins_and_splits_blocks(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    stream = b"".join(_block(i) for i in range(5))
    first = a.allocate("A", "x", "y", [30, 150], ["k1", "k2"])  # k2 joins blocks 0, 1 and 2
    assert [k.key for k in first.keys] == [stream[:30], stream[30:180]]
    b.follow("A", first.start, "x", "y", first.entries)
    second = a.allocate("A", "x", "y", [20], ["k3"])
    assert second.start == 180 and second.keys[0].key == stream[180:200]
    b.follow("A", second.start, "x", "y", second.entries)
    assert b.deliver("x", "y", ["k2", "k1", "k3"]) == [first.keys[1], first.keys[0], second.keys[0]]
    assert a.stats("A").available == b.stats("A").available == 300


def test_deposit_is_idempotent_and_ordered(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "s.sqlite")
    assert store.deposit("A", 4, b"x" * 10)
    assert not store.deposit("A", 4, b"x" * 10)
    assert not store.deposit("A", 2, b"y" * 10)
    assert store.stats("A").fed == 10 and store.stats("A").last_block == 4
    with pytest.raises(KeyStoreError, match="block size"):
        store.deposit("A", 9, b"")


def test_short_pool_takes_nothing(tmp_path: Path) -> None:
    a, _ = _pair(tmp_path, blocks=1)
    with pytest.raises(InsufficientKeyMaterialError, match="holds 100 bytes"):
        a.allocate("A", "x", "y", [64, 64], ["k1", "k2"])
    assert a.available("A") == 100 and a.key_states() == {}


def test_follow_must_start_at_head(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    a.allocate("A", "x", "y", [10], ["k1"])
    second = a.allocate("A", "x", "y", [10], ["k2"])
    with pytest.raises(StoreSyncError, match="out of step"):
        b.follow("A", second.start, "x", "y", second.entries)
    assert b.available("A") == 500


def test_follow_is_idempotent_and_void_erases(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    cut = a.allocate("A", "x", "y", [16, 16], ["k1", "k2"])
    b.follow("A", cut.start, "x", "y", cut.entries)
    b.follow("A", cut.start, "x", "y", cut.entries)  # repeated after a crash: harmless
    with pytest.raises(StoreSyncError, match="recorded differently"):
        b.follow("A", cut.start, "x", "y", [("other", 16)])
    b.follow("A", cut.start, "x", "y", cut.entries, void=True)
    a.void(["k1", "k2"])
    assert b.key_states() == {"k1": "void", "k2": "void"}
    with pytest.raises(KeyAlreadyDeliveredError):
        b.deliver("x", "y", ["k1"])


def test_void_cut_still_advances_the_follower(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    cut = a.allocate("A", "x", "y", [16], ["k1"])
    b.follow("A", cut.start, "x", "y", cut.entries, void=True)  # peer never saw it before
    nxt = a.allocate("A", "x", "y", [16], ["k2"])
    b.follow("A", nxt.start, "x", "y", nxt.entries)
    assert b.deliver("x", "y", ["k2"]) == list(nxt.keys)


def test_deliver_errors_leave_store_unchanged(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    cut = a.allocate("A", "x", "y", [16], ["k1"])
    b.follow("A", cut.start, "x", "y", cut.entries)
    with pytest.raises(KeyNotAddressedError):
        b.deliver("x", "z", ["k1"])
    with pytest.raises(KeyNotAddressedError):
        b.deliver("w", "y", ["k1"])
    with pytest.raises(KeyNotFoundError) as info:
        b.deliver("x", "y", ["k1", "nope"])
    assert info.value.key_ids == ("nope",)
    with pytest.raises(KeyStoreError, match="twice"):
        b.deliver("x", "y", ["k1", "k1"])
    assert b.key_states() == {"k1": "reserved"}
    assert b.deliver("x", "y", ["k1"]) == list(cut.keys)


def test_state_survives_reopen_and_bits_are_erased(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    cut = a.allocate("A", "x", "y", [32, 32], ["k1", "k2"])
    b.follow("A", cut.start, "x", "y", cut.entries)
    a.confirm(["k1", "k2"])
    b.deliver("x", "y", ["k1"])
    a.close()
    b.close()
    a, b = KeyStore(tmp_path / "a.sqlite"), KeyStore(tmp_path / "b.sqlite")
    assert a.key_states() == {"k1": "delivered", "k2": "delivered"}
    assert b.key_states() == {"k1": "delivered", "k2": "reserved"}
    assert b.deliver("x", "y", ["k2"]) == [cut.keys[1]]
    b.close()
    with sqlite3.connect(tmp_path / "b.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM keys WHERE bits IS NOT NULL").fetchone() == (0,)
        # the delivered bytes are no longer in the material table either
        material = b"".join(row[0] for row in db.execute("SELECT data FROM material"))
    assert cut.keys[0].key not in material and cut.keys[1].key not in material


def test_syncing_lists_unconfirmed_allocations(tmp_path: Path) -> None:
    a, _ = _pair(tmp_path)
    a.allocate("A", "x", "y", [8], ["k1"])
    a.allocate("A", "x", "y", [8, 8], ["k2", "k3"])
    a.confirm(["k1"])
    a.allocate("A", "x", "z", [8], ["k4"])  # another slave: its own run
    pending = a.syncing("A")
    assert [p.entries for p in pending] == [(("k2", 8), ("k3", 8)), (("k4", 8),)]
    assert [(p.start, p.slave) for p in pending] == [(8, "y"), (24, "z")]
    assert [len(p.keys) for p in a.syncing("A", batch=1)] == [1, 1, 1]


def test_syncing_runs_break_at_gaps_and_batch_size(tmp_path: Path) -> None:
    a, _ = _pair(tmp_path)
    a.allocate("A", "x", "y", [8] * 5, [f"s{i}" for i in range(5)])
    a.allocate("A", "x", "y", [8], ["done"])
    a.confirm(["done"])  # settled: splits the unconfirmed keys into two runs
    a.allocate("A", "x", "y", [8] * 2, ["t0", "t1"])
    runs = a.syncing("A", batch=3)
    assert [[k for k, _ in r.entries] for r in runs] == [
        ["s0", "s1", "s2"],
        ["s3", "s4"],
        ["t0", "t1"],
    ]
    assert [r.start for r in runs] == [0, 24, 48]
    with pytest.raises(ValueError, match="batch"):
        a.syncing("A", batch=0)


def test_follow_accepts_a_cut_that_straddles_its_head(tmp_path: Path) -> None:
    """Recovery joins a cut the peer applied with one it never saw: both parts are settled."""
    a, b = _pair(tmp_path)
    first = a.allocate("A", "x", "y", [16, 16], ["k1", "k2"])
    b.follow("A", first.start, "x", "y", first.entries)  # then the allocator crashed
    a.allocate("A", "x", "y", [16], ["k3"])  # never reached the peer
    (run,) = a.syncing("A")
    b.follow("A", run.start, "x", "y", run.entries, void=True)
    b.follow("A", run.start, "x", "y", run.entries, void=True)  # repeated: harmless
    assert b.key_states() == {"k1": "void", "k2": "void", "k3": "void"}
    assert b.stats("A").consumed == a.stats("A").consumed == 48
    with pytest.raises(StoreSyncError, match="recorded differently"):
        b.follow("A", run.start, "x", "z", run.entries, void=True)  # same cut, other slave


def test_site_config_rejects_name_collisions() -> None:
    from qkd.kme import SiteConfig

    with pytest.raises(ValueError, match="collide with a KME ID"):
        SiteConfig("KME_A", "KME_B", frozenset({"KME_B"}), frozenset({"bob"}))
    with pytest.raises(ValueError, match="both KMEs"):
        SiteConfig("KME_A", "KME_B", frozenset({"x"}), frozenset({"x"}))


def _files(tmp_path: Path, name: str) -> bytes:
    """Raw bytes of a store's database file and WAL (what a disk thief would read)."""
    return b"".join(p.read_bytes() for p in tmp_path.glob(f"{name}*") if p.is_file())


def test_delivered_key_bits_leave_the_db_and_wal_files(tmp_path: Path) -> None:
    material = [_block(i, 4096) for i in range(3)]
    a = KeyStore(tmp_path / "a.sqlite", erase_delay=60)  # scrubbed by hand below
    b = KeyStore(tmp_path / "b.sqlite", erase_delay=60)
    for i, block in enumerate(material):
        a.deposit("A", i, block)
        b.deposit("A", i, block)
    cut = a.allocate("A", "x", "y", [32, 48, 32], ["k1", "k2", "k3"])
    b.follow("A", cut.start, "x", "y", cut.entries)
    a.confirm(["k1", "k2", "k3"])
    delivered = b.deliver("x", "y", ["k1", "k2"])
    keys = [k.key for k in delivered]
    # Before the scrub the erased bits are still on disk (page images in the WAL):
    # the test below is not vacuous.
    assert any(key in _files(tmp_path, "b.sqlite") for key in keys)
    assert any(key in _files(tmp_path, "a.sqlite") for key in keys)
    assert a.scrub() and b.scrub()
    for name in ("a.sqlite", "b.sqlite"):
        raw = _files(tmp_path, name)
        for key in keys:
            assert key not in raw, f"delivered key bits still in {name} or its WAL"
    assert (tmp_path / "b.sqlite-wal").stat().st_size == 0
    # The undelivered key is still stored at the follower, and the rest of the stream too.
    assert cut.keys[2].key in _files(tmp_path, "b.sqlite")
    assert material[2][-32:] in _files(tmp_path, "a.sqlite")  # stored in CHUNK_BYTES rows
    assert b.deliver("x", "y", ["k3"]) == [cut.keys[2]]
    a.close()
    b.close()


def test_erased_bits_are_scrubbed_on_a_timer(tmp_path: Path) -> None:
    a = KeyStore(tmp_path / "a.sqlite", erase_delay=0.05)
    b = KeyStore(tmp_path / "b.sqlite", erase_delay=0.05)
    for store in (a, b):
        store.deposit("A", 0, _block(0, 1024))
    cut = a.allocate("A", "x", "y", [32], ["k1"])
    b.follow("A", cut.start, "x", "y", cut.entries)
    a.confirm(["k1"])
    (key,) = b.deliver("x", "y", ["k1"])
    deadline = time.monotonic() + 5
    while key.key in _files(tmp_path, "b.sqlite") + _files(tmp_path, "a.sqlite"):
        assert time.monotonic() < deadline, "erased key bits were not scrubbed within 5 s"
        time.sleep(0.02)
    a.close()
    b.close()


def test_a_store_is_owned_by_one_connection(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "s.sqlite")
    store.deposit("A", 0, b"x" * 64)
    with pytest.raises(KeyStoreError, match="another KME process"):
        KeyStore(tmp_path / "s.sqlite")
    store.close()
    KeyStore(tmp_path / "s.sqlite").close()  # free again once closed


def test_opening_a_crashed_store_scrubs_its_wal(tmp_path: Path) -> None:
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    live.mkdir()
    crashed.mkdir()
    store = KeyStore(live / "b.sqlite", erase_delay=60)
    store.deposit("A", 0, _block(0, 1024))
    store.follow("A", 0, "x", "y", [("k1", 32)])
    (key,) = store.deliver("x", "y", ["k1"])
    # Copy the files while the store is open: what a SIGKILL at this instant leaves behind.
    for path in live.iterdir():
        (crashed / path.name).write_bytes(path.read_bytes())
    assert key.key in _files(crashed, "b.sqlite")
    store.close()
    reopened = KeyStore(crashed / "b.sqlite")
    assert key.key not in _files(crashed, "b.sqlite")
    assert reopened.key_states() == {"k1": "delivered"}
    reopened.close()


def test_retain_delivered_keeps_the_bits_that_a_normal_store_erases(tmp_path: Path) -> None:
    """The insecure experiment mode: delivered bits stay readable by key ID (and in the file)."""
    a = KeyStore(tmp_path / "a.sqlite", retain_delivered=True)  # allocating site keeps
    b = KeyStore(tmp_path / "b.sqlite")  # following site erases, as it must
    assert a.retains_delivered and not b.retains_delivered
    for i in range(2):
        a.deposit("A", i, _block(i))
        b.deposit("A", i, _block(i))
    cut = a.allocate("A", "x", "y", [32, 32], ["k1", "k2"])
    b.follow("A", cut.start, "x", "y", cut.entries)
    a.confirm(["k1", "k2"])
    assert b.stored_bits("k1") == cut.keys[0].key  # reserved: not fetched yet
    assert b.deliver("x", "y", ["k1", "k2"]) == list(cut.keys)
    assert b.stored_bits("k1") is None and b.stored_bits("nope") is None
    assert a.stored_bits("k1") == cut.keys[0].key and a.stored_bits("k2") == cut.keys[1].key
    voided = a.allocate("A", "x", "y", [16], ["k3"])
    a.void(["k3"])  # bits that never left are erased even here
    assert a.stored_bits("k3") is None and voided.keys[0].key
    a.close()
    b.close()
    assert cut.keys[0].key in (tmp_path / "a.sqlite").read_bytes()
    assert cut.keys[0].key not in (tmp_path / "b.sqlite").read_bytes()
