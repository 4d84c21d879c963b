"""Two KME sites (A and B) sharing one QKD link, served in-process on loopback.

    pair = KMEPair(workdir, credentials, saes_a=["alice"], saes_b=["bob"])
    with pair:                                  # starts both HTTPS servers
        pair.feed_from(SeededKeyFeed(), 64)     # or let the link push() blocks
        alice, bob = pair.client("alice"), pair.client("bob")
        key = alice.new_key("bob")              # enc_keys at KME A
        same = bob.get_key("alice", key.key_id) # dec_keys at KME B, once

Block ``i`` of the link goes to pool A (site A allocates from it) when ``i`` is
even and to pool B when odd, at both sites, so the two sites never cut the same
bits. A block is stored at the *following* site first and at the allocating site
second: after a crash in between, :meth:`KMEPair.start` copies it over, so the
allocator never cuts bits its peer lacks. The stores are SQLite files in ``directory`` (``kme_a.sqlite``,
``kme_b.sqlite``); restarting a pair on the same directory resumes where it
stopped. ``retain_delivered_a``/``_b`` (INSECURE, off by default, for adversary
experiments only) make a site keep delivered key bits instead of erasing them, see
:mod:`qkd.keystore`. ``credentials`` names PEM files; :mod:`hybridchan.cli.kme_cmd` and
:mod:`handshake.pki` create them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qkd.keystore import KeyStore
from qkd.kme._api import Limits
from qkd.kme._service import KMEService, LocalPeerLink, SiteConfig
from qkd.kme.client import AsyncKMEClient, KMEClient
from qkd.kme.feed import KeyBlock, KeyFeed, agreed_key
from qkd.kme.server import KMEServer, TLSFiles

__all__ = ["KMEPair", "PairCredentials"]


@dataclass(frozen=True, slots=True)
class PairCredentials:
    """PEM files for a pair: each KME's TLS files and each SAE's (keyed by SAE ID = cert CN)."""

    kme_a: TLSFiles
    kme_b: TLSFiles
    saes: Mapping[str, TLSFiles] = field(default_factory=dict)


class KMEPair:
    """KME A and KME B in this process, each an HTTPS server with mutual TLS."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        credentials: PairCredentials,
        *,
        saes_a: Iterable[str],
        saes_b: Iterable[str],
        kme_a_id: str = "KME_A",
        kme_b_id: str = "KME_B",
        limits: Limits | None = None,
        unix: bool = False,
        host: str = "127.0.0.1",
        tls_backend: str = "python",
        retain_delivered_a: bool = False,
        retain_delivered_b: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.credentials = credentials
        limits = limits or Limits()
        a, b = frozenset(saes_a), frozenset(saes_b)
        self.config_a = SiteConfig(kme_a_id, kme_b_id, a, b, limits)
        self.config_b = SiteConfig(kme_b_id, kme_a_id, b, a, limits)
        self.store_a = KeyStore(
            self.directory / "kme_a.sqlite", retain_delivered=retain_delivered_a
        )
        self.store_b = KeyStore(
            self.directory / "kme_b.sqlite", retain_delivered=retain_delivered_b
        )
        service_a = KMEService(self.config_a, self.store_a, LocalPeerLink(self.store_b))
        service_b = KMEService(self.config_b, self.store_b, LocalPeerLink(self.store_a))
        socket_a = self.directory / "kme_a.sock" if unix else None
        socket_b = self.directory / "kme_b.sock" if unix else None
        self.tls_backend = tls_backend
        self.server_a = KMEServer(
            service_a, credentials.kme_a, host=host, unix_path=socket_a, tls_backend=tls_backend
        )
        self.server_b = KMEServer(
            service_b, credentials.kme_b, host=host, unix_path=socket_b, tls_backend=tls_backend
        )
        self._feed_lock = threading.RLock()
        self._feeder: threading.Thread | None = None
        self._stop_feeding = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> KMEPair:
        self._reconcile()
        self.server_a.start()
        try:
            self.server_b.start()
        except BaseException:
            self.server_a.stop()
            raise
        return self

    def stop(self) -> None:
        self._stop_feeding.set()
        if self._feeder is not None:
            self._feeder.join(5)
        self.server_a.stop()
        self.server_b.stop()
        self.store_a.close()
        self.store_b.close()

    def __enter__(self) -> KMEPair:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- key material -------------------------------------------------------------------------

    def push(self, block: KeyBlock) -> None:
        """Deposit one link block at both sites (the key sink a link simulation calls)."""
        if block.block_id % 2 == 0:
            pool, allocator, follower = self.config_a.kme_id, self.store_a, self.store_b
        else:
            pool, allocator, follower = self.config_b.kme_id, self.store_b, self.store_a
        with self._feed_lock:  # re-entrant: put_block holds it already
            follower.deposit(pool, block.block_id, block.data)
            allocator.deposit(pool, block.block_id, block.data)

    def put_block(self, alice_key: bytes, bob_key: bytes, stats: object = None) -> None:
        """Key sink of :mod:`qkd.sim` (``link.run(n, pair)``): file the next link block.

        Site A keeps ``alice_key``, site B ``bob_key``; they must be equal (checked in
        constant time; a mismatch is refused and nothing is stored).
        """
        data = agreed_key(alice_key, bob_key)
        with self._feed_lock:
            self.push(KeyBlock(self.next_block_id(), data))

    def next_block_id(self) -> int:
        """The first block ID neither site holds yet (where a restarted feed resumes)."""
        pools = (self.config_a.kme_id, self.config_b.kme_id)
        stores = (self.store_a, self.store_b)
        return max(store.stats(pool).last_block for store in stores for pool in pools) + 1

    def _reconcile(self) -> None:
        for pool, allocator, follower in (
            (self.config_a.kme_id, self.store_a, self.store_b),
            (self.config_b.kme_id, self.store_b, self.store_a),
        ):
            for block_id, data in follower.blocks_after(pool, allocator.stats(pool).last_block):
                allocator.deposit(pool, block_id, data)

    def feed_from(self, feed: KeyFeed, count: int) -> int:
        """Pull up to ``count`` blocks from ``feed`` into both sites; returns how many."""
        blocks = feed.next_blocks(count)
        for block in blocks:
            self.push(block)
        return len(blocks)

    def feed_in_background(
        self, feed: KeyFeed, *, low_water_bytes: int = 1 << 20, interval: float = 0.02
    ) -> None:
        """Keep both pools above ``low_water_bytes`` from ``feed`` until :meth:`stop`."""

        def run() -> None:
            while not self._stop_feeding.wait(interval):
                while min(self.available().values()) < low_water_bytes:
                    if not self.feed_from(feed, 2):
                        break

        self._feeder = threading.Thread(target=run, name="kme-pair-feeder", daemon=True)
        self._feeder.start()

    def available(self) -> dict[str, int]:
        """Bytes of key material still unallocated per pool (as seen at site A)."""
        return {
            pool: self.store_a.available(pool)
            for pool in (self.config_a.kme_id, self.config_b.kme_id)
        }

    # -- clients ------------------------------------------------------------------------------

    def site_of(self, sae_id: str) -> KMEServer:
        if sae_id in self.config_a.local_saes:
            return self.server_a
        if sae_id in self.config_b.local_saes:
            return self.server_b
        raise KeyError(f"SAE {sae_id!r} is attached to neither KME of this pair")

    def client(self, sae_id: str, *, timeout: float = 10.0) -> KMEClient:
        """A blocking :class:`QKDKeySource` for ``sae_id`` at its own KME."""
        server = self.site_of(sae_id)
        return KMEClient(
            server.url,
            sae_id,
            self._sae_tls(sae_id),
            uds=server.unix_path,
            timeout=timeout,
            tls_backend=self.tls_backend,
        )

    def async_client(self, sae_id: str, *, timeout: float = 10.0) -> AsyncKMEClient:
        """An asyncio client for ``sae_id`` at its own KME."""
        server = self.site_of(sae_id)
        return AsyncKMEClient(
            server.url,
            sae_id,
            self._sae_tls(sae_id),
            uds=server.unix_path,
            timeout=timeout,
            tls_backend=self.tls_backend,
        )

    def _sae_tls(self, sae_id: str) -> TLSFiles:
        try:
            return self.credentials.saes[sae_id]
        except KeyError:
            raise KeyError(f"no certificate for SAE {sae_id!r} in the pair's credentials") from None
