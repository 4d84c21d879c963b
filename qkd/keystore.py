"""SQLite key store of one KME site: QKD key material in, consume-once keys out.

Theory of operation
-------------------
A QKD link leaves the same bits at both sites, in numbered *blocks*. Each block
goes to one *pool*, named after the KME that allocates from it (the KME pair
sends even blocks to site A's pool and odd blocks to site B's, so the two sites
never allocate the same bits). A pool is a byte stream: ``fed`` bytes have
arrived, the first ``consumed`` bytes have been cut into keys and erased.

The allocating KME (the master SAE's) cuts ``size`` bytes from the head of its
pool (:meth:`KeyStore.allocate`), so a key may join the end of one block to the
start of the next, or take part of a block; the rest stays for later keys. The
peer KME repeats exactly the same cut at the same stream position
(:meth:`KeyStore.follow`) and keeps the key for the slave SAE, which gets it once
(:meth:`KeyStore.deliver`); then its bits are erased. A cut at position ``p``
must arrive when the peer's head is at ``p``, so the two streams never drift.

Key states (one row per key, never deleted, bits erased once delivered)::

    allocating site:   syncing --peer confirmed--> delivered (to the master SAE)
                       syncing --peer failed/crash--> void (bits never left)
    following site:    reserved --slave fetched--> delivered
                       reserved --allocator voided--> void

Every state change is one ``BEGIN IMMEDIATE`` transaction, so a killed process
leaves either the old or the new state, never a half: no key is lost from the
store or handed out twice. The database runs in WAL mode with
``synchronous=NORMAL`` (durable across a process crash; an OS crash may lose the
last commits but never tears one). The file is locked by the process that opened
it (``locking_mode=EXCLUSIVE``): a second KME cannot open the same store.

Erasure
-------
Erased bits must leave the *files*, not just the rows. ``secure_delete`` makes
SQLite zero freed cells and pages, but in WAL mode the page images written
*before* an erasure stay in the ``-wal`` file (and the stale page in the main
file) until a checkpoint copies the erased pages back. So every transaction that
erases key bits (a cut, a delivery, a void) schedules a ``TRUNCATE`` checkpoint
at most ``erase_delay`` seconds later (:meth:`KeyStore.scrub`): after it the bits
are in neither file. ``close`` scrubs too, and so does opening a store (a killed
process leaves its WAL behind).

Retaining delivered keys (deliberately insecure)
------------------------------------------------
``KeyStore(..., retain_delivered=True)`` mirrors a KME that *fails* to erase: the
bits of every key it hands out (to the master at the allocating site, to the slave
at the following site) stay in the ``keys`` row, readable by key ID
(:meth:`KeyStore.stored_bits`), instead of being erased. It exists only so that
:mod:`hybridchan.rndl` can show what a later compromise of such a KME yields; no
command line enables it. Off by default, and the default path is unchanged.

Material is stored in small chunks (``CHUNK_BYTES`` per row) so that cutting a
key deletes a few small rows instead of rewriting the rest of a link block:
that keeps the pages written per key (and so the WAL traffic) small.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "Allocation",
    "InsufficientKeyMaterialError",
    "KeyAlreadyDeliveredError",
    "KeyNotAddressedError",
    "KeyNotFoundError",
    "KeyStore",
    "KeyStoreError",
    "PoolStats",
    "StoreSyncError",
    "StoredKey",
]

MAX_BLOCK_BYTES: Final = 1 << 20
MAX_KEY_BYTES: Final = 1 << 16
#: Keys per recovery cut (:meth:`KeyStore.syncing`): one peer request settles this many
#: unconfirmed keys; bounded so that one cut stays a small request and a short transaction.
SYNC_BATCH_KEYS: Final = 256
#: Material row size: small enough that cutting one key rewrites one small row, not the
#: rest of a link block; large enough that a batch of keys deletes few rows.
CHUNK_BYTES: Final = 256

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS pools (
    pool       TEXT PRIMARY KEY,
    fed        INTEGER NOT NULL,
    consumed   INTEGER NOT NULL,
    last_block INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS material (
    pool     TEXT NOT NULL,
    start    INTEGER NOT NULL,
    block_id INTEGER NOT NULL,
    data     BLOB NOT NULL,
    PRIMARY KEY (pool, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS keys (
    key_id   TEXT PRIMARY KEY,
    pool     TEXT NOT NULL,
    master   TEXT NOT NULL,
    slave    TEXT NOT NULL,
    start    INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    state    TEXT NOT NULL CHECK (state IN ('syncing', 'reserved', 'delivered', 'void')),
    bits     BLOB,
    updated  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_syncing ON keys (pool) WHERE state = 'syncing';
"""


class KeyStoreError(Exception):
    """Root of key-store errors. Messages carry key IDs, never key material."""


class InsufficientKeyMaterialError(KeyStoreError):
    """The pool holds fewer bytes than the request needs; nothing was taken."""


class KeyNotFoundError(KeyStoreError):
    """One or more key IDs are not in this store."""

    def __init__(self, message: str, key_ids: Sequence[str]) -> None:
        super().__init__(message)
        self.key_ids = tuple(key_ids)


class KeyAlreadyDeliveredError(KeyNotFoundError):
    """One or more keys were already delivered (or voided); keys are single-use."""


class KeyNotAddressedError(KeyNotFoundError):
    """One or more keys belong to a different master/slave SAE pair than the caller's."""


class StoreSyncError(KeyStoreError):
    """The peer's cut does not start at this store's head: the two sites have drifted."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key leaving the store. ``repr`` never shows the bits."""

    key_id: str
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Allocation:
    """Keys cut from ``pool`` at stream position ``start``, in order, for master -> slave."""

    pool: str
    start: int
    master: str
    slave: str
    keys: tuple[StoredKey, ...]

    @property
    def entries(self) -> tuple[tuple[str, int], ...]:
        """``(key_id, size)`` pairs: what the peer needs to repeat the cut (no bits)."""
        return tuple((k.key_id, len(k.key)) for k in self.keys)


@dataclass(frozen=True, slots=True)
class PoolStats:
    """Byte counters of one pool: ``available == fed - consumed``."""

    pool: str
    fed: int
    consumed: int
    last_block: int

    @property
    def available(self) -> int:
        return self.fed - self.consumed


class KeyStore:
    """One site's key store in a SQLite file (``":memory:"`` for throwaway use).

    Thread-safe: one connection guarded by a lock; every public method is one
    transaction. ``clock`` (seconds) only stamps rows. ``erase_delay``: at most this
    many seconds pass between erasing key bits and scrubbing them from the files.
    ``retain_delivered`` (INSECURE, for adversary experiments only; see the module
    docstring) keeps delivered key bits instead of erasing them.
    The file is locked for this process until :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        erase_delay: float = 0.5,
        retain_delivered: bool = False,
    ):
        if erase_delay < 0:
            raise ValueError(f"erase_delay must be >= 0 seconds, got {erase_delay}")
        self._path = str(path)
        self._clock = clock
        self._erase_delay = erase_delay
        self._retain = retain_delivered
        self._lock = threading.Lock()
        self._scrub_timer: threading.Timer | None = None
        self._closed = False
        self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            # One process owns a store: EXCLUSIVE locking keeps a second KME off this file and
            # spares SQLite the shared-memory index and file locks on every transaction.
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._db.execute("PRAGMA busy_timeout=2000")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA temp_store=MEMORY")
            self._db.executescript(_SCHEMA)
            # A killed process leaves its WAL, possibly holding erased bits: scrub it now.
            self._checkpoint()
        except sqlite3.OperationalError as exc:
            self._db.close()
            raise KeyStoreError(
                f"cannot open key store {self._path}: {exc}; is another KME process using it?"
            ) from None

    @property
    def path(self) -> str:
        return self._path

    @property
    def retains_delivered(self) -> bool:
        """``True``: this store keeps delivered key bits (the insecure experiment mode)."""
        return self._retain

    def close(self) -> None:
        """Scrub erased bits from the files (a final checkpoint), then close."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._scrub_timer is not None:
                self._scrub_timer.cancel()
                self._scrub_timer = None
            self._checkpoint()
            self._db.close()

    def scrub(self) -> bool:
        """Checkpoint and truncate the WAL now: erased key bits leave the files.

        ``False`` if SQLite could not finish (another connection is reading);
        a later scrub is then scheduled. Runs on its own after every erasure.
        """
        with self._lock:
            self._scrub_timer = None
            if self._closed:
                return True
            done = self._checkpoint()
            if not done:
                self._schedule_scrub()
            return done

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- feeding ------------------------------------------------------------------------------

    def deposit(self, pool: str, block_id: int, data: bytes) -> bool:
        """Append link block ``block_id`` to ``pool``; ``False`` if it was already here.

        Blocks must arrive in increasing ``block_id`` order per pool (gaps are fine);
        a repeated or older block is ignored, so a feeder may safely re-send after a crash.
        """
        if not data or len(data) > MAX_BLOCK_BYTES:
            raise KeyStoreError(f"block size must be 1..{MAX_BLOCK_BYTES} bytes, got {len(data)}")
        if block_id < 0:
            raise KeyStoreError(f"block_id must be non-negative, got {block_id}")
        with self._transaction() as cur:
            fed, _, last = self._pool_row(cur, pool)
            if block_id <= last:
                return False
            data = bytes(data)
            cur.executemany(
                "INSERT INTO material (pool, start, block_id, data) VALUES (?, ?, ?, ?)",
                [
                    (pool, fed + i, block_id, data[i : i + CHUNK_BYTES])
                    for i in range(0, len(data), CHUNK_BYTES)
                ],
            )
            cur.execute(
                "UPDATE pools SET fed = ?, last_block = ? WHERE pool = ?",
                (fed + len(data), block_id, pool),
            )
            return True

    def blocks_after(self, pool: str, block_id: int) -> list[tuple[int, bytes]]:
        """Unconsumed blocks of ``pool`` newer than ``block_id``, oldest first.

        Used to hand the allocating site blocks that reached only the follower
        before a crash (the follower never consumes beyond the allocator's cuts,
        so these blocks are still whole).
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT block_id, data FROM material WHERE pool = ? AND block_id > ? ORDER BY start",
                (pool, block_id),
            ).fetchall()
        blocks: list[tuple[int, list[bytes]]] = []
        for b, d in rows:
            if not blocks or blocks[-1][0] != b:
                blocks.append((int(b), []))
            blocks[-1][1].append(bytes(d))
        return [(b, b"".join(parts)) for b, parts in blocks]

    # -- allocating site ----------------------------------------------------------------------

    def allocate(
        self, pool: str, master: str, slave: str, sizes: Sequence[int], key_ids: Sequence[str]
    ) -> Allocation:
        """Cut one key per size (bytes) from the head of ``pool``; rows start as ``syncing``.

        All or nothing: raises :class:`InsufficientKeyMaterialError` and takes nothing
        when the pool is short.
        """
        _check_sizes(sizes, key_ids)
        total = sum(sizes)
        with self._transaction(erases=True) as cur:
            fed, consumed, _ = self._pool_row(cur, pool)
            if fed - consumed < total:
                raise InsufficientKeyMaterialError(
                    f"pool {pool!r} holds {fed - consumed} bytes of key material, "
                    f"the request needs {total}; wait for the QKD link to produce more"
                )
            stream = self._carve(cur, pool, consumed, total)
            now = self._clock()
            keys, rows, offset = [], [], 0
            for key_id, size in zip(key_ids, sizes, strict=True):
                bits = stream[offset : offset + size]
                kept = bits if self._retain else None  # insecure mode only: keep the bits
                rows.append((key_id, pool, master, slave, consumed + offset, size, kept, now))
                keys.append(StoredKey(key_id, bits))
                offset += size
            cur.executemany("INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, 'syncing', ?, ?)", rows)
            return Allocation(pool, consumed, master, slave, tuple(keys))

    def confirm(self, key_ids: Sequence[str]) -> None:
        """``syncing`` -> ``delivered``: the peer holds the keys; the master may have them."""
        self._move(key_ids, "syncing", "delivered")

    def void(self, key_ids: Sequence[str]) -> None:
        """``syncing`` -> ``void``: the peer refused or was unreachable; the bits never left."""
        # Only a retaining store holds bits in a syncing row; the bits never left, so erase.
        self._move(key_ids, "syncing", "void", erase=self._retain)

    def syncing(self, pool: str, *, batch: int = SYNC_BATCH_KEYS) -> list[Allocation]:
        """Keys not yet confirmed by the peer (after a crash), oldest first, no bits.

        Grouped for recovery: each :class:`Allocation` is one contiguous run of the
        stream for one master/slave pair, at most ``batch`` keys, so the peer can
        settle it with one cut instead of one request per key.
        """
        if batch < 1:
            raise ValueError(f"batch must be at least 1 key, got {batch}")
        with self._lock:
            rows = self._db.execute(
                "SELECT key_id, master, slave, start, size FROM keys "
                "WHERE pool = ? AND state = 'syncing' ORDER BY start",
                (pool,),
            ).fetchall()
        runs: list[tuple[str, str, int, list[StoredKey]]] = []
        end = -1
        for key_id, master, slave, start, size in rows:
            run = runs[-1] if runs else None
            if run is None or (master, slave) != run[:2] or start != end or len(run[3]) >= batch:
                run = (master, slave, start, [])
                runs.append(run)
            run[3].append(StoredKey(key_id, b"\0" * size))
            end = start + size
        return [Allocation(pool, start, m, s, tuple(keys)) for m, s, start, keys in runs]

    # -- following site -----------------------------------------------------------------------

    def follow(
        self,
        pool: str,
        start: int,
        master: str,
        slave: str,
        entries: Sequence[tuple[str, int]],
        *,
        void: bool = False,
    ) -> None:
        """Repeat the peer's cut of ``entries`` at stream position ``start``.

        Idempotent: a cut already applied is accepted again (and, with ``void``,
        its still-reserved keys are voided and erased), provided every key is
        recorded at the same position, size and SAE pair. A cut whose first keys
        were applied and the rest not (recovery joins the allocations left by a
        crash into one cut) is checked for the first part and cut at the head for
        the rest. A cut past this store's head raises :class:`StoreSyncError`; so
        does one that is short of material.
        """
        key_ids = [key_id for key_id, _ in entries]
        sizes = [size for _, size in entries]
        _check_sizes(sizes, key_ids)
        total = sum(sizes)
        with self._transaction(erases=True) as cur:
            fed, consumed, _ = self._pool_row(cur, pool)
            if start < consumed:
                done = self._refollow(cur, pool, start, master, slave, entries, consumed, void=void)
                if done == len(entries):
                    return
                start += sum(sizes[:done])
                entries, total = entries[done:], sum(sizes[done:])
            if start > consumed:
                raise StoreSyncError(
                    f"pool {pool!r}: peer cut starts at byte {start}, this store's head is at "
                    f"{consumed}; the sites are out of step (was a block lost?)"
                )
            if fed - consumed < total:
                raise StoreSyncError(
                    f"pool {pool!r}: peer cut needs {total} bytes at {start}, this store has "
                    f"{fed - consumed}; the link has not delivered the same blocks here yet"
                )
            stream = self._carve(cur, pool, consumed, total)
            now, offset, rows = self._clock(), 0, []
            state = "void" if void else "reserved"
            for key_id, size in entries:
                bits = None if void else stream[offset : offset + size]
                rows.append((key_id, pool, master, slave, start + offset, size, state, bits, now))
                offset += size
            cur.executemany("INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def deliver(self, master: str, slave: str, key_ids: Sequence[str]) -> list[StoredKey]:
        """Hand the reserved keys to ``slave`` once and erase their bits; all or nothing.

        Raises :class:`KeyNotFoundError` (unknown IDs), :class:`KeyNotAddressedError`
        (another SAE pair's keys) or :class:`KeyAlreadyDeliveredError`; the store
        is then unchanged.
        """
        if len(set(key_ids)) != len(key_ids):
            raise KeyStoreError("the same key ID is requested twice; ask for each key once")
        with self._transaction(erases=True) as cur:
            found: dict[str, tuple[str, str, str, bytes | None]] = {}
            for key_id in key_ids:
                row = cur.execute(
                    "SELECT master, slave, state, bits FROM keys WHERE key_id = ?", (key_id,)
                ).fetchone()
                if row is not None:
                    found[key_id] = row
            _check_deliverable(master, slave, key_ids, found)
            now = self._clock()
            erase = "" if self._retain else ", bits = NULL"  # insecure mode keeps the bits
            cur.executemany(
                f"UPDATE keys SET state = 'delivered'{erase}, updated = ? WHERE key_id = ?",
                [(now, key_id) for key_id in key_ids],
            )
            return [StoredKey(key_id, found[key_id][3] or b"") for key_id in key_ids]

    # -- inspection ---------------------------------------------------------------------------

    def stats(self, pool: str) -> PoolStats:
        with self._lock:
            row = self._db.execute(
                "SELECT fed, consumed, last_block FROM pools WHERE pool = ?", (pool,)
            ).fetchone()
        fed, consumed, last = row if row is not None else (0, 0, -1)
        return PoolStats(pool, fed, consumed, last)

    def available(self, pool: str) -> int:
        return self.stats(pool).available

    def key_states(self) -> dict[str, str]:
        """``key_id -> state`` of every key row (tests and audits; no bits)."""
        with self._lock:
            return dict(self._db.execute("SELECT key_id, state FROM keys").fetchall())

    def stored_bits(self, key_id: str) -> bytes | None:
        """The bits this file still holds for ``key_id``; ``None`` if erased or unknown.

        A reserved key (not yet fetched) still has its bits; a delivered or voided
        one has none -- unless the store runs with ``retain_delivered``. This is
        what someone who copies the store file can read.
        """
        with self._lock:
            row = self._db.execute("SELECT bits FROM keys WHERE key_id = ?", (key_id,)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    # -- private ------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, *, erases: bool = False) -> Iterator[sqlite3.Cursor]:
        """One ``BEGIN IMMEDIATE`` transaction; ``erases``: it may erase key bits."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
            if erases:
                self._schedule_scrub()

    def _schedule_scrub(self) -> None:
        """Have :meth:`scrub` run ``erase_delay`` seconds from now (caller holds the lock)."""
        if self._scrub_timer is not None or self._closed:
            return
        if self._erase_delay == 0:
            self._checkpoint()
            return
        timer = threading.Timer(self._erase_delay, self.scrub)
        timer.daemon = True
        timer.name = f"keystore-scrub-{os.path.basename(self._path)}"
        self._scrub_timer = timer
        timer.start()

    def _checkpoint(self) -> bool:
        """``wal_checkpoint(TRUNCATE)``: copy every page back and empty the WAL file."""
        busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not busy

    @staticmethod
    def _pool_row(cur: sqlite3.Cursor, pool: str) -> tuple[int, int, int]:
        row = cur.execute(
            "SELECT fed, consumed, last_block FROM pools WHERE pool = ?", (pool,)
        ).fetchone()
        if row is None:
            cur.execute("INSERT INTO pools VALUES (?, 0, 0, -1)", (pool,))
            return 0, 0, -1
        return int(row[0]), int(row[1]), int(row[2])

    @staticmethod
    def _carve(cur: sqlite3.Cursor, pool: str, consumed: int, total: int) -> bytes:
        """Take ``total`` bytes from the head of ``pool`` and erase them from the blocks."""
        parts: list[bytes] = []
        need = total
        rows = cur.execute(
            "SELECT start, block_id, data FROM material WHERE pool = ? ORDER BY start", (pool,)
        )
        taken: list[tuple[int, int, bytes]] = []
        for start, block_id, data in rows:
            if need == 0:
                break
            taken.append((start, block_id, data))
            parts.append(data[:need])
            need -= len(parts[-1])
        if need:
            raise StoreSyncError(f"pool {pool!r}: material table is short of its counters")
        if taken[0][0] != consumed:
            raise StoreSyncError(f"pool {pool!r}: material does not start at the head")
        # One range delete for the rows taken; only a partly used last row is rewritten.
        cur.execute(
            "DELETE FROM material WHERE pool = ? AND start >= ? AND start <= ?",
            (pool, consumed, taken[-1][0]),
        )
        start, block_id, data = taken[-1]
        used = total - (start - consumed)
        if used < len(data):
            cur.execute(
                "INSERT INTO material (pool, start, block_id, data) VALUES (?, ?, ?, ?)",
                (pool, start + used, block_id, data[used:]),
            )
        cur.execute("UPDATE pools SET consumed = ? WHERE pool = ?", (consumed + total, pool))
        return b"".join(parts)

    @staticmethod
    def _refollow(
        cur: sqlite3.Cursor,
        pool: str,
        start: int,
        master: str,
        slave: str,
        entries: Sequence[tuple[str, int]],
        head: int,
        *,
        void: bool,
    ) -> int:
        """Check the entries of a repeated cut that lie before ``head``; how many there are."""
        offset, done = 0, 0
        for key_id, size in entries:
            if start + offset >= head:
                break
            row = cur.execute(
                "SELECT pool, start, size, master, slave, state FROM keys WHERE key_id = ?",
                (key_id,),
            ).fetchone()
            if row is None or tuple(row[:5]) != (pool, start + offset, size, master, slave):
                raise StoreSyncError(
                    f"pool {pool!r}: peer repeats a cut at byte {start + offset} that this store "
                    f"recorded differently (key {key_id}); the sites disagree"
                )
            if void and row[5] == "reserved":
                cur.execute(
                    "UPDATE keys SET state = 'void', bits = NULL WHERE key_id = ?", (key_id,)
                )
            offset += size
            done += 1
        return done

    def _move(self, key_ids: Sequence[str], old: str, new: str, *, erase: bool = False) -> None:
        with self._transaction(erases=erase) as cur:
            now = self._clock()
            bits = ", bits = NULL" if erase else ""
            cur.executemany(
                f"UPDATE keys SET state = ?{bits}, updated = ? WHERE key_id = ? AND state = ?",
                [(new, now, key_id, old) for key_id in key_ids],
            )


def _check_sizes(sizes: Sequence[int], key_ids: Sequence[str]) -> None:
    if not sizes or len(sizes) != len(key_ids):
        raise KeyStoreError("give one key ID per key size, at least one key")
    for size in sizes:
        if not 1 <= size <= MAX_KEY_BYTES:
            raise KeyStoreError(f"key size must be 1..{MAX_KEY_BYTES} bytes, got {size}")


def _check_deliverable(
    master: str,
    slave: str,
    key_ids: Sequence[str],
    found: dict[str, tuple[str, str, str, bytes | None]],
) -> None:
    missing = [k for k in key_ids if k not in found]
    if missing:
        raise KeyNotFoundError(f"no key with ID {', '.join(missing)} in this KME", missing)
    foreign = [k for k in key_ids if found[k][:2] != (master, slave)]
    if foreign:
        raise KeyNotAddressedError(
            f"key {', '.join(foreign)} is not addressed from SAE {master!r} to SAE {slave!r}",
            foreign,
        )
    used = [k for k in key_ids if found[k][2] != "reserved"]
    if used:
        raise KeyAlreadyDeliveredError(
            f"key {', '.join(used)} was already delivered; QKD keys are single-use", used
        )
