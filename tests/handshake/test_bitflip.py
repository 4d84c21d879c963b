"""Flip each byte of a recorded handshake in turn: every single flip is detected.

The recorded handshake is the richest one that stays small: hybrid+QKD, mutual
authentication with Ed25519 certificate chains (so every message type, the QKD key
reference and both SAE IDs are on the wire). For each byte offset the same handshake is
run again with that byte XOR-ed; it must not complete.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from handshake import Epoch, HandshakeError
from handshake.pki import create_ca, issue_certificate
from qkd.keysource import InMemoryKeyPool
from tests.handshake.helpers import (
    NOW_DT,
    SERVER_NAME,
    DetRandom,
    assert_same_keys,
    configs,
    run_pair,
)

CHUNKS = 8


@functools.cache
def _material() -> dict[str, object]:
    ca = create_ca("Flip Root", algorithm="ed25519", now=NOW_DT)
    server = issue_certificate(
        ca, SERVER_NAME, algorithm="ed25519", dns_names=[SERVER_NAME], now=NOW_DT
    )
    client = issue_certificate(ca, "client-1", algorithm="ed25519", now=NOW_DT)
    return {"trust_store": (ca.certificate,), "server": server, "client": client}


def _run(policy: str, auth: str, flip_at: int | None) -> tuple[bool, int, HandshakeError | None]:
    m = _material()
    extra: dict[str, Any] = {}
    if auth == "certificate":
        extra = {
            "trust_store": m["trust_store"],
            "client": {"credential": m["client"]},
            "server": {"credential": m["server"]},
        }
    client_cfg, server_cfg = configs(
        policy, auth, pool=InMemoryKeyPool(DetRandom("flip-pool")), mutual=True, **extra
    )
    offset = 0

    def tamper(direction: str, epoch: Epoch, data: bytes) -> bytes:
        nonlocal offset
        start, offset = offset, offset + len(data)
        if flip_at is not None and start <= flip_at < offset:
            flipped = bytearray(data)
            flipped[flip_at - start] ^= 0x01
            return bytes(flipped)
        return data

    result = run_pair(client_cfg, server_cfg, tamper=tamper)
    if flip_at is None:
        assert_same_keys(result)
    return result.completed, offset, result.error[1] if result.error else None


CASES = [("hybrid+qkd", "certificate"), ("hybrid", "qkd-psk")]


@functools.cache
def _length(policy: str, auth: str) -> int:
    completed, total, _ = _run(policy, auth, None)
    assert completed
    return total


@pytest.mark.parametrize("chunk", range(CHUNKS))
@pytest.mark.parametrize(("policy", "auth"), CASES)
def test_every_byte_flip_is_detected(policy: str, auth: str, chunk: int) -> None:
    total = _length(policy, auth)
    assert total > 2000
    undetected = []
    errors = 0
    for i in range(chunk, total, CHUNKS):
        completed, _, error = _run(policy, auth, i)
        if completed:
            undetected.append(i)
        errors += error is not None
    assert not undetected, f"flips at offsets {undetected} went unnoticed"
    # A flip either raises a typed error or (in a length field) leaves the peer waiting.
    assert errors >= 0.95 * len(range(chunk, total, CHUNKS))
