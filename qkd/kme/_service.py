"""The KME's logic, apart from HTTP: who may ask for what, and how the pair stays in step.

The calling SAE's identity is an argument (the HTTP layer takes it from the
verified client certificate), so this module can be tested without TLS.

``enc_keys`` at the allocating KME runs under one lock per site: cut the keys
from the local pool (state ``syncing``), have the peer KME repeat the cut
(:class:`PeerLink`), then mark them ``delivered`` and return them. If the peer
cannot be reached the keys stay ``syncing`` and are voided on both sides before
the next allocation (or at start-up after a crash), so the master never holds a
key the slave cannot fetch, and no bits are ever handed out twice. Whatever
interrupts an allocation before its keys are confirmed (a peer failure, an
unexpected error, a cancelled request) has the next ``enc_keys`` settle them
first; recovery sends the peer one void cut per batch of keys, not one per key.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from qkd import keystore
from qkd.keysource import uuid4_text
from qkd.kme._api import (
    MSG_KEYS_NOT_FOUND,
    BadRequest,
    KeyRequest,
    Limits,
    ServiceUnavailable,
    Unauthorized,
    encode_key_container,
)

__all__ = ["KMEService", "LocalPeerLink", "PeerLink", "PeerLinkError", "SiteConfig"]


class PeerLinkError(Exception):
    """The peer KME could not be reached or refused a cut; the message says which."""


class PeerLink(Protocol):
    """How the allocating KME has its peer repeat a cut (no key bits cross this link).

    A link holding connections may also define ``async def aclose()``: see
    :meth:`KMEService.aclose`.
    """

    async def follow(
        self,
        pool: str,
        start: int,
        master: str,
        slave: str,
        entries: Sequence[tuple[str, int]],
        *,
        void: bool,
    ) -> None: ...


class LocalPeerLink:
    """The peer's store is in this process (the in-process KME pair)."""

    def __init__(self, peer_store: keystore.KeyStore) -> None:
        self._store = peer_store

    async def follow(
        self,
        pool: str,
        start: int,
        master: str,
        slave: str,
        entries: Sequence[tuple[str, int]],
        *,
        void: bool,
    ) -> None:
        try:
            self._store.follow(pool, start, master, slave, entries, void=void)
        except keystore.KeyStoreError as exc:
            raise PeerLinkError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """One KME site.

    ``kme_id``/``peer_kme_id``: this and the other KME (also the subject CN of
    their certificates). ``local_saes``: SAEs attached here (they call this KME);
    ``remote_saes``: SAEs attached to the peer (valid slave/master IDs in paths).
    This site allocates from pool ``kme_id`` and follows pool ``peer_kme_id``.
    """

    kme_id: str
    peer_kme_id: str
    local_saes: frozenset[str]
    remote_saes: frozenset[str]
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.kme_id == self.peer_kme_id:
            raise ValueError("kme_id and peer_kme_id must differ")
        both = self.local_saes & self.remote_saes
        if both:
            raise ValueError(f"SAE(s) {sorted(both)} cannot be attached to both KMEs")
        # SAEs and KMEs are both named by certificate CN under one CA: an SAE called like a
        # KME could send key cuts as that KME, so the names must not collide.
        clash = {self.kme_id, self.peer_kme_id} & (self.local_saes | self.remote_saes)
        if clash:
            raise ValueError(f"SAE ID(s) {sorted(clash)} collide with a KME ID; rename the SAE")


class KMEService:
    """Status, enc_keys and dec_keys of one site, over a :class:`keystore.KeyStore`."""

    def __init__(
        self,
        config: SiteConfig,
        store: keystore.KeyStore,
        peer: PeerLink,
        *,
        new_key_id: Callable[[], str] = lambda: uuid4_text(os.urandom(16)),
    ) -> None:
        self.config = config
        self.store = store
        self._peer = peer
        self._new_key_id = new_key_id
        self._lock: asyncio.Lock | None = None
        self._needs_recovery = True

    # -- endpoints ----------------------------------------------------------------------------

    def status(self, caller: str, slave: str) -> dict[str, Any]:
        self._check_caller(caller)
        self._check_remote(slave, "slave")
        limits = self.config.limits
        available = self.store.available(self.config.kme_id)
        return {
            "source_KME_ID": self.config.kme_id,
            "target_KME_ID": self.config.peer_kme_id,
            "master_SAE_ID": caller,
            "slave_SAE_ID": slave,
            "key_size": limits.key_size,
            "stored_key_count": min(available // (limits.key_size // 8), limits.max_key_count),
            "max_key_count": limits.max_key_count,
            "max_key_per_request": limits.max_key_per_request,
            "max_key_size": limits.max_key_size,
            "min_key_size": limits.min_key_size,
            "max_SAE_ID_count": limits.max_SAE_ID_count,
        }

    async def enc_keys(self, caller: str, slave: str, request: KeyRequest) -> dict[str, Any]:
        self._check_caller(caller)
        self._check_remote(slave, "slave")
        async with self._site_lock():
            await self._recover()
            key_ids = [self._new_key_id() for _ in range(request.number)]
            sizes = [request.size_bytes] * request.number
            try:
                allocation = self.store.allocate(self.config.kme_id, caller, slave, sizes, key_ids)
            except keystore.InsufficientKeyMaterialError as exc:
                raise ServiceUnavailable(
                    "not enough key material stored for this request",
                    [
                        {
                            "reason": str(exc),
                            "stored_key_count": self.status(caller, slave)["stored_key_count"],
                        }
                    ],
                ) from None
            # Until confirmed, these keys are unsettled: if anything below fails (the peer, an
            # unexpected error, a cancelled request), the next request voids them on both
            # sides before it allocates, without waiting for a restart.
            self._needs_recovery = True
            try:
                await self._peer.follow(
                    allocation.pool, allocation.start, caller, slave, allocation.entries, void=False
                )
            except PeerLinkError as exc:
                raise ServiceUnavailable(
                    f"peer KME {self.config.peer_kme_id} did not take the keys; none were issued; "
                    "retry once the peer KME is reachable",
                    [{"reason": str(exc)}],
                ) from None
            self.store.confirm(key_ids)
            self._needs_recovery = False
        return encode_key_container([(k.key_id, k.key) for k in allocation.keys])

    def dec_keys(self, caller: str, master: str, key_ids: Sequence[str]) -> dict[str, Any]:
        self._check_caller(caller)
        self._check_remote(master, "master")
        try:
            keys = self.store.deliver(master, caller, key_ids)
        except keystore.KeyNotAddressedError as exc:
            raise Unauthorized(
                f"key(s) not addressed from SAE {master!r} to the calling SAE {caller!r}",
                [{"key_ID": k, "reason": "not addressed to this SAE"} for k in exc.key_ids],
            ) from None
        except keystore.KeyAlreadyDeliveredError as exc:
            raise BadRequest(
                MSG_KEYS_NOT_FOUND,
                [
                    {"key_ID": k, "reason": "already delivered (keys are single-use)"}
                    for k in exc.key_ids
                ],
            ) from None
        except keystore.KeyNotFoundError as exc:
            raise BadRequest(
                MSG_KEYS_NOT_FOUND, [{"key_ID": k, "reason": "unknown key_ID"} for k in exc.key_ids]
            ) from None
        return encode_key_container([(k.key_id, k.key) for k in keys])

    def follow(self, caller_kme: str, body: object) -> dict[str, Any]:
        """The peer KME's cut, received over HTTPS (see :class:`HTTPSPeerLink`)."""
        if caller_kme != self.config.peer_kme_id:
            raise Unauthorized(f"only peer KME {self.config.peer_kme_id!r} may send key cuts")
        try:
            pool, start, master, slave, entries, void = _parse_follow(body)
            if pool != self.config.peer_kme_id:
                raise BadRequest(f"pool {pool!r} is not the peer KME's pool")
            self.store.follow(pool, start, master, slave, entries, void=void)
        except keystore.KeyStoreError as exc:
            raise ServiceUnavailable(f"cannot follow the peer's cut: {exc}") from None
        return {"message": "ok"}

    async def aclose(self) -> None:
        """Close the peer link's connections if it holds any (``aclose()``, as
        :class:`HTTPSPeerLink` has); :class:`KMEServer` calls this when it stops."""
        close = getattr(self._peer, "aclose", None)
        if close is not None:
            await close()

    async def recover(self) -> None:
        """Void allocations left ``syncing`` by a crash or a failed peer cut.

        One peer request per :meth:`keystore.KeyStore.syncing` batch (a contiguous run
        of keys for one SAE pair), not per key. Safe to interrupt: the peer's void cut
        and the local void are both idempotent, so the next attempt settles the rest.
        """
        async with self._site_lock():
            await self._recover()

    # -- private ------------------------------------------------------------------------------

    async def _recover(self) -> None:
        if not self._needs_recovery:
            return
        for allocation in self.store.syncing(self.config.kme_id):
            try:
                await self._peer.follow(
                    allocation.pool,
                    allocation.start,
                    allocation.master,
                    allocation.slave,
                    allocation.entries,
                    void=True,
                )
            except PeerLinkError as exc:
                raise ServiceUnavailable(
                    f"peer KME {self.config.peer_kme_id} did not settle earlier unconfirmed keys, "
                    "so no new keys are issued yet; retry once the peer KME is reachable",
                    [{"reason": str(exc)}],
                ) from None
            self.store.void([key_id for key_id, _ in allocation.entries])
        self._needs_recovery = False

    def _site_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def _check_caller(self, caller: str) -> None:
        if caller not in self.config.local_saes:
            raise Unauthorized(
                f"SAE {caller!r} (client certificate subject CN) is not registered at KME "
                f"{self.config.kme_id}; ask the operator to attach it"
            )

    def _check_remote(self, sae: str, role: str) -> None:
        if sae not in self.config.remote_saes:
            raise BadRequest(
                f"{role} SAE {sae!r} is not attached to the peer KME {self.config.peer_kme_id}; "
                f"known: {', '.join(sorted(self.config.remote_saes)) or 'none'}",
            )


def _parse_follow(body: object) -> tuple[str, int, str, str, list[tuple[str, int]], bool]:
    if not isinstance(body, dict):
        raise BadRequest("cut must be a JSON object")
    try:
        pool, start, master, slave = body["pool"], body["start"], body["master"], body["slave"]
        void = body["void"]
        entries = [(str(e["key_ID"]), int(e["size"])) for e in body["entries"]]
    except (KeyError, TypeError, ValueError):
        raise BadRequest("cut needs pool, start, master, slave, void and entries") from None
    if not all(isinstance(v, str) for v in (pool, master, slave)) or not isinstance(start, int):
        raise BadRequest("cut fields have the wrong types")
    if not isinstance(void, bool):
        raise BadRequest("cut field void must be a boolean")
    return pool, start, master, slave, entries, void
