"""Fixtures: one set of certificates per session, a KME pair on loopback per module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from handshake import pki
from hybridchan.cli.kme_cmd import write_pair_credentials
from qkd.kme import KMEPair, PairCredentials, SeededKeyFeed, TLSFiles

SAES_A = ("alice", "carol")
SAES_B = ("bob", "dave")


@dataclass(frozen=True)
class Certs:
    pair: PairCredentials
    intruder: TLSFiles  # valid CA, CN not registered at any KME
    foreign_alice: TLSFiles  # CN "alice" but issued by another CA
    directory: Path


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("kme-pki")
    # "intruder" gets a certificate from the right CA but is attached to no KME.
    pair = write_pair_credentials(directory, (*SAES_A, "intruder"), SAES_B)
    other_ca = pki.create_ca("some other CA")
    foreign = pki.issue_certificate(other_ca, "alice", server=False)
    foreign.write(directory / "foreign-alice.pem", directory / "foreign-alice.key")
    foreign_alice = TLSFiles(
        pair.kme_a.ca_file,
        str(directory / "foreign-alice.pem"),
        str(directory / "foreign-alice.key"),
    )
    return Certs(pair, pair.saes["intruder"], foreign_alice, directory)


def snapshot(pair: KMEPair) -> tuple[object, ...]:
    """Everything a bad request must leave unchanged."""
    return (
        pair.store_a.key_states(),
        pair.store_b.key_states(),
        pair.available(),
        pair.store_b.available("KME_A"),
        pair.store_b.available("KME_B"),
    )


@pytest.fixture(scope="module", params=["python", "openssl4"])
def kme_pair(
    certs: Certs, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[KMEPair]:
    """A running pair on each TLS backend: Python ssl (X25519) and OpenSSL 4 (X25519MLKEM768)."""
    directory = tmp_path_factory.mktemp("kme-pair")
    pair = KMEPair(
        directory, certs.pair, saes_a=SAES_A, saes_b=SAES_B, tls_backend=request.param
    ).start()
    pair.feed_from(SeededKeyFeed(b"test seed", block_size=4096), 64)
    try:
        yield pair
    finally:
        pair.stop()
